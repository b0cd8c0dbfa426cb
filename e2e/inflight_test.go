package e2e

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The dashboard of a least-conn dispatcher, in a real browser, names the
// strategy and shows the requests in flight per backend: a request held by
// a slow backend shows as 1 in flight on that backend's bar, and as 0 once
// it is answered.
func TestDashboardShowsInFlight(t *testing.T) {
	s := startStack(t)
	s.startBackend(t, "slow", "5003", map[string]string{"LATENCY": "5s"})
	env := map[string]string{"REDIS_KEY": "dash", "MODE": "proxy", "STRATEGY": "least-conn"}
	// Least-conn's first pick on an idle pool is the rotation's first: the
	// last entry, the slow backend.
	if code, out := s.seederEnv(t, env, "seed", "http://backend1:5000", "http://backend2:5001", "http://slow:5003"); code != 0 {
		t.Fatalf("seeder seed: exit %d\n%s", code, out)
	}
	dc := s.startDispatcher(t, env)
	front, admin := endpoint(t, dc, "80/tcp"), endpoint(t, dc, "8080/tcp")

	browser := newBrowser(t)
	wait := chromedp.WithPollingTimeout(time.Minute) // a deadline for failure, not a measure
	if err := chromedp.Do(browser, chromedp.EmulateViewport(900, 560), chromedp.Navigate(admin+"/")); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(browser, chromedp.Poll[bool](
		`document.querySelectorAll("#bars [data-backend]").length === 3 && document.getElementById("conn").textContent === "live"`, wait)); err != nil {
		t.Fatalf("the dashboard did not show three bars: %v", err)
	}
	strategy, err := chromedp.Run(browser, chromedp.Evaluate[string](`document.getElementById("strategy").textContent`))
	if err != nil || strategy != "least-conn" {
		t.Errorf("strategy on the page: got %q (%v), want least-conn", strategy, err)
	}

	answered := make(chan string, 1)
	go func() {
		resp, err := http.Get(front + "/")
		if err != nil {
			answered <- err.Error()
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		answered <- resp.Header.Get("X-Backend")
	}()
	const slowInFlight = `(() => { const r = document.querySelector('#bars [data-backend="http://slow:5003"]'); return r ? Number(r.dataset.inflight) : -1 })()`
	if _, err := chromedp.Run(browser, chromedp.Poll[bool](slowInFlight+` === 1`, wait)); err != nil {
		t.Fatalf("the slow backend's bar never showed 1 request in flight: %v", err)
	}
	text, err := chromedp.Run(browser, chromedp.Evaluate[string](
		`document.querySelector('#bars [data-backend="http://slow:5003"] .inflight').textContent`))
	if err != nil || text != "1 in flight" {
		t.Errorf("the slow backend's in-flight cell: got %q (%v), want \"1 in flight\"", text, err)
	}
	if got := <-answered; got != "slow" {
		t.Errorf("the held request was answered by %q, want slow", got)
	}
	if _, err := chromedp.Run(browser, chromedp.Poll[bool](slowInFlight+` === 0`, wait)); err != nil {
		t.Errorf("after the answer, the slow backend's bar did not go back to 0 in flight: %v", err)
	}
}
