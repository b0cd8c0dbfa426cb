package e2e

import (
	"context"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// readmeScreenshot is the dashboard as the README shows it. TestDashboard
// refreshes it only when UPDATE_SCREENSHOTS=1, so that a test run leaves the
// work tree as it was.
const readmeScreenshot = "../docs/dashboard.png"

// newBrowser starts a headless Chromium for the test. The flags let it run
// as root in a container-like sandbox: no Chrome sandbox, no GPU, and no
// /dev/shm, which is small there.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true))
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc, chromedp.WithErrorf(t.Logf))
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start Chromium (Debian: apt-get install chromium): %v", err)
	}
	return ctx
}

// Scripts that read the dashboard's DOM: the data-* attributes the page
// keeps on its bars and rotation list.
const (
	barsJS     = `Object.fromEntries([...document.querySelectorAll("#bars [data-backend]")].map((r) => [r.dataset.backend, Number(r.dataset.requests)]))`
	rotationJS = `[...document.querySelectorAll("#rotation [data-entry]")].map((li) => li.dataset.entry + ("next" in li.dataset ? " (next)" : ""))`
	sumJS      = `[...document.querySelectorAll("#bars [data-backend]")].reduce((n, r) => n + Number(r.dataset.requests), 0)`
)

// TestDashboard opens the dispatcher's dashboard in a real browser, sends 30
// requests, and reads from the page that each backend's bar grew by exactly
// 10, that the rotation is listed as Redis holds it with the next pick
// marked, that every backend is marked up, and that /metrics says the same.
// It saves a screenshot in its artifact directory (go test -artifacts keeps
// it; make e2e puts it under out/e2e), and checks that the page fits a
// phone's width.
func TestDashboard(t *testing.T) {
	s := startStack(t)
	// Seed the list as compose.yaml does, so that the screenshot shows what
	// `docker compose up` shows. The test never follows a redirect, so these
	// addresses need not answer; the health checks probe each backend by
	// its name on the network, as in compose.
	backends := []string{"http://localhost:5000", "http://localhost:5001", "http://localhost:5002"}
	probes := []string{
		"-probe=http://localhost:5000=http://backend1:5000",
		"-probe=http://localhost:5001=http://backend2:5001",
		"-probe=http://localhost:5002=http://backend3:5002",
	}
	if code, logs := s.seeder(t, slices.Concat([]string{"seed"}, probes, backends)...); code != 0 {
		t.Fatalf("seeder seed: exit %d\n%s", code, logs)
	}

	browser := newBrowser(t)
	wait := chromedp.WithPollingTimeout(time.Minute) // a deadline for failure, not a measure
	if err := chromedp.Do(browser,
		chromedp.EmulateViewport(900, 560),
		chromedp.Navigate(s.admin+"/"),
	); err != nil {
		t.Fatal(err)
	}
	// The first snapshot has arrived once the three seeded backends have bars.
	if _, err := chromedp.Run(browser, chromedp.Poll[bool](
		`document.querySelectorAll("#bars [data-backend]").length === 3 && document.getElementById("conn").textContent === "live"`, wait)); err != nil {
		t.Fatalf("the dashboard did not show three bars: %v", err)
	}
	before, err := chromedp.Run(browser, chromedp.Evaluate[map[string]int](barsJS))
	if err != nil {
		t.Fatal(err)
	}
	if got := slices.Sorted(maps.Keys(before)); !slices.Equal(got, backends) {
		t.Fatalf("bars: got %q, want one per seeded backend %q", got, backends)
	}

	total := 0
	for _, n := range before {
		total += n
	}
	for i := range 30 {
		status, loc, body := get(t, s.dispatcher+"/")
		if status != http.StatusFound || !slices.Contains(backends, strings.TrimSuffix(loc, "/")) {
			t.Fatalf("request %d: got %d %q %q, want 302 to a seeded backend", i, status, loc, body)
		}
	}
	// Wait until the page has all 30, then read each bar.
	if _, err := chromedp.Run(browser, chromedp.Poll[bool](sumJS+" === "+strconv.Itoa(total+30), wait)); err != nil {
		sum, _ := chromedp.Run(browser, chromedp.Evaluate[int](sumJS))
		t.Fatalf("the bars add up to %d, want %d: %v", sum, total+30, err)
	}
	after, err := chromedp.Run(browser, chromedp.Evaluate[map[string]int](barsJS))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range backends {
		if got := after[b] - before[b]; got != 10 {
			t.Errorf("bar of %s: grew by %d (from %d to %d), want 10", b, got, before[b], after[b])
		}
	}

	// The rotation as LRANGE shows it, the last entry marked as the next pick.
	list := s.list(t)
	want := slices.Clone(list)
	want[len(want)-1] += " (next)"
	rotation, err := chromedp.Run(browser, chromedp.Evaluate[[]string](rotationJS))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rotation, want) {
		t.Errorf("rotation on the page: got %q, want %q", rotation, want)
	}
	state, err := chromedp.Run(browser, chromedp.Evaluate[[]string](
		`[document.body.dataset.mode, document.body.dataset.degraded]`))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(state, []string{"redirect", "false"}) {
		t.Errorf("mode and degraded on the page: got %q, want [redirect false]", state)
	}

	// /metrics counts the same requests.
	_, _, metrics := get(t, s.admin+"/metrics")
	for _, b := range backends {
		line := `spread_requests_total{backend="` + b + `",mode="redirect",status="302"} ` + strconv.Itoa(after[b])
		if !strings.Contains(metrics, line+"\n") {
			t.Errorf("/metrics lacks the line %q", line)
		}
	}

	// The health checks pass, and the page marks each backend up.
	if _, err := chromedp.Run(browser, chromedp.Poll[bool](
		`document.querySelectorAll('#bars [data-backend] [data-up="true"]').length === 3`, wait)); err != nil {
		t.Errorf("the dashboard did not mark the three backends up: %v", err)
	}

	png, err := chromedp.Run(browser, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	saveScreenshot(t, png, "dashboard.png", readmeScreenshot)

	// On a phone's width nothing sticks out sideways: no horizontal scrolling.
	if err := chromedp.Do(browser, chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(3))); err != nil {
		t.Fatal(err)
	}
	widths, err := chromedp.Run(browser, chromedp.Evaluate[[]int](
		`[document.documentElement.scrollWidth, document.documentElement.clientWidth]`))
	if err != nil {
		t.Fatal(err)
	}
	if widths[0] > widths[1] {
		t.Errorf("at 390 px wide the page is %d px wide, want at most %d (no sideways scrolling)", widths[0], widths[1])
	}
}
