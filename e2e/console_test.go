package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"
)

// consoleScreenshot is the console mid-lesson, as docs/lab.md shows it;
// refreshed only with UPDATE_SCREENSHOTS=1, as the dashboard's is.
const consoleScreenshot = "../docs/console.png"

// The token the console runs with. The test's browser and client are not
// on the console's loopback (they reach it through a published port), so
// they change anything only with it, as a browser on the host does with
// compose's profile "lab".
const consoleToken = "e2e-lesson-token"

// startConsoleStack starts what compose's profile "lab" runs, from the real
// images: Redis, the lab's three backends with CONTROL=1 (their control
// ports unpublished), two proxying dispatchers on the list "lab", and the
// console against them. It returns the console's URL on this host.
func startConsoleStack(t *testing.T) string {
	t.Helper()
	labImg, err := labImage()
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	nw, err := network.New(ctx)
	testcontainers.CleanupNetwork(t, nw)
	if err != nil {
		t.Fatal(err)
	}
	on := func(alias string) ([]string, map[string][]string) {
		return []string{nw.Name}, map[string][]string{nw.Name: {alias}}
	}
	nets, aliases := on("redis")
	start(t, testcontainers.ContainerRequest{Image: redisImage(), Networks: nets, NetworkAliases: aliases,
		WaitingFor: wait.ForLog("Ready to accept connections").WithStartupTimeout(time.Minute)})

	var entries, pairs []string
	for _, b := range []struct{ name, port, latency, capacity string }{
		{"fast1", "5010", "40ms", "8"}, {"fast2", "5011", "40ms", "8"}, {"slow", "5012", "200ms", "4"},
	} {
		nets, aliases := on(b.name)
		start(t, testcontainers.ContainerRequest{
			Image: images["backend"], Networks: nets, NetworkAliases: aliases,
			Env: map[string]string{"PORT": b.port, "BACKEND_NAME": b.name, "LATENCY": b.latency, "CAPACITY": b.capacity,
				"CONTROL": "1", "CONTROL_BIND_HOST": "0.0.0.0"},
			WaitingFor: wait.ForLog("backend listening").WithStartupTimeout(time.Minute),
		})
		entry := "http://" + b.name + ":" + b.port
		entries = append(entries, entry)
		pairs = append(pairs, entry+"=http://"+b.name+":9000")
	}
	s := &stack{network: nw.Name}
	env := map[string]string{"REDIS_KEY": "lab"}
	if code, out := s.seederEnv(t, env, append([]string{"seed"}, entries...)...); code != 0 {
		t.Fatalf("seeder seed: exit %d\n%s", code, out)
	}
	var dispatchers []string
	for _, name := range []string{"lab-dispatcher1", "lab-dispatcher2"} {
		nets, aliases := on(name)
		start(t, testcontainers.ContainerRequest{
			Image: images["dispatcher"], Networks: nets, NetworkAliases: aliases, ExposedPorts: []string{"8080/tcp"},
			Env: map[string]string{"REDIS_URL": redisURL, "REDIS_KEY": "lab", "MODE": "proxy", "STRATEGY": "round-robin",
				"HASH_KEY": "header:X-User", "HEALTH_INTERVAL": "1s", "EJECT_AFTER": "0"},
			WaitingFor: wait.ForHTTP("/readyz").WithPort("8080/tcp").WithStartupTimeout(time.Minute),
		})
		dispatchers = append(dispatchers, "http://"+name+":80=http://"+name+":8080")
	}
	console := start(t, testcontainers.ContainerRequest{
		Image: labImg, Networks: []string{nw.Name}, ExposedPorts: []string{"8099/tcp"},
		Env: map[string]string{"LAB_TOKEN": consoleToken, "REDIS_URL": redisURL, "REDIS_KEY": "lab",
			"LAB_BACKENDS": strings.Join(pairs, ","), "LAB_DISPATCHERS": strings.Join(dispatchers, ",")},
		WaitingFor: wait.ForHTTP("/healthz").WithPort("8099/tcp").WithStartupTimeout(time.Minute),
	})
	return endpoint(t, console, "8099/tcp")
}

// pageState is what the page shows, read from its DOM.
type pageState struct {
	Strategy string         `json:"strategy"`
	Rate     string         `json:"rate"`
	Backends []pageBackend  `json:"backends"`
	Drawn    map[string]int `json:"drawn"` // chart -> data points drawn, over its datasets
	Marks    []string       `json:"marks"` // the strategy marks of the time axis
	Queue    map[string]int `json:"queue"` // the queue chart's highest point, by backend
}

type pageBackend struct {
	URL       string  `json:"url"`
	Name      string  `json:"name"`
	LatencyMS float64 `json:"latency_ms"`
	Capacity  int     `json:"capacity"`
	Down      bool    `json:"down"`
}

// pageJS reads pageState.
const pageJS = `(() => {
  const drawn = {};
  for (const c of document.querySelectorAll("canvas")) {
    const ch = Chart.getChart(c);
    drawn[c.id] = ch ? ch.data.datasets.reduce((n, d) => n + d.data.filter((p) => p != null && (typeof p === "number" || p.y != null)).length, 0) : -1;
  }
  const q = Chart.getChart("chart-queue");
  const queue = {};
  for (const d of q.data.datasets) queue[d.label] = Math.max(-1, ...d.data.filter((p) => p.y != null).map((p) => p.y));
  return {
    strategy: document.getElementById("strategy").textContent,
    rate: document.getElementById("rate-asked").textContent,
    backends: [...document.querySelectorAll("[data-backend]")].map((c) => ({
      url: c.dataset.backend, name: c.querySelector('[data-field="name"]').textContent,
      latency_ms: Number(c.dataset.latencyMs), capacity: Number(c.dataset.capacity), down: c.dataset.down === "true" })),
    drawn, queue,
    marks: window.lab.history.marks.filter((m) => m.kind === "strategy").map((m) => m.label),
  };
})()`

// apiState is the part of GET /api/state the test compares with the page.
type apiState struct {
	Strategy  string        `json:"strategy"`
	Rate      float64       `json:"rate"`
	Backends  []pageBackend `json:"backends"`
	LatencyMS struct {
		P99 *float64 `json:"p99"`
	} `json:"latency_ms"`
}

func getState(t *testing.T, base string) apiState {
	t.Helper()
	resp, err := http.Get(base + "/api/state")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s apiState
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestConsole opens the lab's console (the real image, against the real
// images, as compose's profile "lab" runs them) in Chromium, presses "one
// slow backend" and then least-conn, and checks that the charts draw, that
// the page shows what GET /api/state says, that the console accepts a
// write from this host only with its token, and that the browser's console
// has no errors. It saves a screenshot mid-lesson, and looks at the page in
// the dark colour scheme too.
func TestConsole(t *testing.T) {
	base := startConsoleStack(t)

	// This host is not the console's loopback: a write needs the token.
	post := func(path, body, token string) int {
		req, _ := http.NewRequest(http.MethodPost, base+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("X-Lab-Token", token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := post("/api/load", `{"rate":1}`, ""); got != http.StatusForbidden {
		t.Errorf("POST /api/load from this host without the token: got %d, want 403", got)
	}
	if got := post("/api/load", `{"rate":1}`, "wrong"); got != http.StatusForbidden {
		t.Errorf("POST /api/load from this host with a wrong token: got %d, want 403", got)
	}
	if s := getState(t, base); s.Rate != 315 {
		t.Errorf("after refused writes the rate is %v, want the lab's 315", s.Rate)
	}

	browser := newBrowser(t)
	var mu sync.Mutex
	var problems []string
	messages := chromedp.Console(browser)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				mu.Lock()
				problems = append(problems, m.String())
				mu.Unlock()
			}
		}
	}()
	wait := chromedp.WithPollingTimeout(time.Minute)
	if err := chromedp.Do(browser, chromedp.EmulateViewport(1280, 900), chromedp.Navigate(base+"/?token="+consoleToken)); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(browser, chromedp.Poll[bool](
		`window.lab && window.lab.draws > 0 && document.querySelectorAll("#strategies button").length > 0 && document.querySelectorAll("[data-backend]").length === 3`, wait)); err != nil {
		t.Fatalf("the page did not draw the state: %v", err)
	}

	// The lesson, as docs/lab.md tells it: everything fast (the console
	// starts on the lab's scenario, already overloading the slow backend),
	// then one slow backend under round robin until requests time out, then
	// least-conn until the queue has drained; a few seconds of each, so
	// that the screenshot shows all three.
	press := func(sel, until, what string) {
		t.Helper()
		start := time.Now()
		if err := chromedp.Do(browser, chromedp.Click(sel)); err != nil {
			t.Fatal(err)
		}
		if _, err := chromedp.Run(browser, chromedp.Poll[bool](until, chromedp.WithPollingTimeout(90*time.Second))); err != nil {
			t.Fatalf("after pressing %s the page did not show %s: %v", sel, what, err)
		}
		t.Logf("pressed %s: the page showed %s after %s", sel, what, time.Since(start).Round(100*time.Millisecond))
	}
	slowJS := `window.lab.state.backends.find((b) => b.name === "slow")`
	press(`[data-scenario="all-fast"]`, slowJS+`.latency_ms === 40 && `+slowJS+`.queue === 0 && window.lab.state.latency_ms.p99 < 500`,
		"the slow backend fast, its queue empty, p99 under 0.5 s")
	time.Sleep(8 * time.Second)
	press(`[data-scenario="one-slow"]`, slowJS+`.queue > 12 && window.lab.state.timeouts_per_s > 0 && window.lab.state.latency_ms.p99 > 1000`,
		"the slow backend's queue past 12, timeouts and p99 over 1 s")
	press(`#strategies [data-strategy="least-conn"]`,
		`document.getElementById("strategy").textContent === "least-conn" && `+slowJS+`.queue <= 4 && window.lab.state.latency_ms.p99 < 1000`,
		"least-conn, the slow backend's queue at most 4 and p99 under 1 s")
	time.Sleep(5 * time.Second)

	// What the page shows against what the API says, read at once.
	var page pageState
	var api apiState
	for try := 0; ; try++ {
		p, err := chromedp.Run(browser, chromedp.Evaluate[pageState](pageJS))
		if err != nil {
			t.Fatal(err)
		}
		page, api = p, getState(t, base)
		if page.Strategy == api.Strategy && page.Rate == fmt.Sprint(api.Rate) || try == 10 {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if page.Strategy != "least-conn" || api.Strategy != "least-conn" {
		t.Errorf("strategy: the page shows %q, the API says %q; want least-conn", page.Strategy, api.Strategy)
	}
	if page.Rate != fmt.Sprint(api.Rate) {
		t.Errorf("rate: the page shows %q, the API says %v", page.Rate, api.Rate)
	}
	if !slices.Equal(page.Backends, api.Backends) {
		t.Errorf("backends: the page shows %+v, the API says %+v", page.Backends, api.Backends)
	}
	for chart, min := range map[string]int{"chart-rate": 20, "chart-latency": 20, "chart-queue": 20, "chart-service": 20, "chart-inflight": 20, "chart-share": 3} {
		if page.Drawn[chart] < min {
			t.Errorf("%s drew %d data points, want %d or more (all: %v)", chart, page.Drawn[chart], min, page.Drawn)
		}
	}
	if !slices.Contains(page.Marks, "least-conn") {
		t.Errorf("the time axis marks strategy changes %q, want one to least-conn", page.Marks)
	}
	if page.Queue["slow"] <= 12 || page.Queue["fast1"] < 0 || page.Queue["fast2"] < 0 {
		t.Errorf("the queue chart's highest points are %v; want slow's above 12, from round robin, and a line for each backend", page.Queue)
	}

	png, err := chromedp.Run(browser, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	saveScreenshot(t, png, "console.png", consoleScreenshot)

	// The dark colour scheme: the page and the charts follow it.
	if _, err := chromedp.Call(browser, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}}); err != nil {
		t.Fatal(err)
	}
	colours, err := chromedp.Run(browser, chromedp.Poll[[]string](
		`(() => { const bg = getComputedStyle(document.body).backgroundColor; const fg = Chart.getChart("chart-rate").options.plugins.legend.labels.color;
		  return bg === "rgb(13, 17, 23)" && fg === getComputedStyle(document.documentElement).getPropertyValue("--fg").trim() ? [bg, fg] : null; })()`,
		chromedp.WithPollingTimeout(10*time.Second)))
	if err != nil {
		t.Errorf("in the dark colour scheme the page or its charts did not follow: %v (%q)", err, colours)
	}
	dark, err := chromedp.Run(browser, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	saveScreenshot(t, dark, "console-dark.png", "")

	time.Sleep(time.Second) // a last poll of the page, for its console
	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		t.Errorf("the browser's console has errors:\n%s", strings.Join(problems, "\n"))
	}
}

// saveScreenshot writes png to the test's artifact directory as name, and,
// with UPDATE_SCREENSHOTS=1, to docs as well (docsPath, if not empty).
func saveScreenshot(t *testing.T, png []byte, name, docsPath string) {
	t.Helper()
	shot := filepath.Join(t.ArtifactDir(), name)
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("saved %s (%d bytes)", shot, len(png))
	if docsPath != "" && os.Getenv("UPDATE_SCREENSHOTS") == "1" {
		if err := os.WriteFile(docsPath, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("UPDATE_SCREENSHOTS=1: saved %s", docsPath)
	}
}
