package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// failing is a backend that answers every request 500, as one started
// with FAIL_RATE=1.0 does (its /healthz aside: the health checks keep it).
func failing(t *testing.T) (url string, hits *atomic.Int64) {
	t.Helper()
	hits = &atomic.Int64{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			io.WriteString(w, "ok")
			return
		}
		hits.Add(1)
		w.Header().Set("X-Backend", "failing")
		http.Error(w, "failed on purpose (FAIL_RATE)", http.StatusInternalServerError)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, hits
}

// getStatus sends GET url/ and returns the status.
func getStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url + "/")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// A backend that fails every request is ejected by the dispatcher that
// sees EJECT_AFTER failures in a row, for every dispatcher on the list;
// it comes back when EJECT_TIME is over, and a second ejection lasts
// twice as long. Every step is in the log and the metrics.
func TestEjection(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	good := newBackend(t, "good", nil)
	bad, hits := failing(t)
	env := proxyEnv("EJECT_AFTER", "3", "EJECT_TIME", "3s")
	s1 := startServe(t, ctx, env, good.srv.URL, bad)
	s2 := startServeOn(t, ctx, s1.redis, s1.redis.URL, proxyEnv("EJECT_AFTER", "3", "EJECT_TIME", "3s", "STRATEGY", "random"))

	// Round robin alternates: the 3rd failure ejects it, and no request
	// after it goes there.
	start := time.Now()
	statuses := map[int]int{}
	for range 12 {
		statuses[getStatus(t, s1.main)]++
	}
	if hits.Load() != 3 || statuses[500] != 3 || statuses[200] != 9 {
		t.Errorf("12 requests with EJECT_AFTER=3: the failing backend got %d, answers %v; want 3 there (3×500) and 9×200", hits.Load(), statuses)
	}
	waitFor(t, "the ejection in the log", func() bool { return strings.Contains(s1.logs.String(), "backend ejected for every dispatcher") })
	ejectedAt := time.Now()
	if line := logLine(s1.logs.String(), "backend ejected for every dispatcher"); !strings.Contains(line, "failures=3") ||
		!strings.Contains(line, "times=1") || !strings.Contains(line, "for=3s") || !strings.Contains(line, "backend="+bad) {
		t.Errorf("log line: got %q, want the backend, failures=3, times=1, for=3s", line)
	}
	if v, _ := sample(scrape(t, s1.adm+"/metrics"), "spread_ejections_total", map[string]string{"backend": bad}); v != 1 {
		t.Errorf("spread_ejections_total on the dispatcher that ejected: got %v, want 1", v)
	}

	// The other dispatcher (random, which picks from its snapshot) skips
	// it from its next read of the list on, and shows it ejected.
	waitFor(t, "the other dispatcher to show it ejected", func() bool {
		v, _ := sample(scrape(t, s2.adm+"/metrics"), "spread_backend_ejected", map[string]string{"backend": bad})
		return v == 1
	})
	before := hits.Load()
	for range 20 {
		if got := getStatus(t, s2.main); got != 200 {
			t.Errorf("the other dispatcher: got %d, want 200 while the failing backend is ejected", got)
		}
	}
	if n := hits.Load() - before; n != 0 {
		t.Errorf("the other dispatcher sent %d requests to the ejected backend, want 0", n)
	}
	if v, ok := sample(scrape(t, s2.adm+"/metrics"), "spread_ejections_total", map[string]string{"backend": bad}); ok && v != 0 {
		t.Errorf("spread_ejections_total on the dispatcher that did not eject: got %v, want none", v)
	}

	// EJECT_TIME later it is back: it gets requests again, fails 3 more,
	// and is ejected for 2×EJECT_TIME.
	for hits.Load() == before {
		if time.Since(ejectedAt) > 10*time.Second {
			t.Fatal("the ejected backend got no request 10 s after its 3 s ejection")
		}
		getStatus(t, s1.main)
		time.Sleep(20 * time.Millisecond)
	}
	back := time.Since(start)
	if back < 3*time.Second {
		t.Errorf("back %v after the first request, before EJECT_TIME (3s) was over", back)
	}
	waitFor(t, "the second ejection", func() bool {
		getStatus(t, s1.main)
		return strings.Count(s1.logs.String(), "backend ejected for every dispatcher") == 2
	})
	if line := logLine(s1.logs.String()[strings.Index(s1.logs.String(), "times=1"):], "backend ejected for every dispatcher"); !strings.Contains(line, "times=2") || !strings.Contains(line, "for=6s") {
		t.Errorf("second ejection: got %q, want times=2 for=6s", line)
	}
	t.Logf("timeline: ejected after 3 failures, %v after the first request; back after %v", ejectedAt.Sub(start).Round(time.Millisecond), back.Round(time.Millisecond))
}

// Under 20 concurrent clients, the backend gets its EJECT_AFTER failures
// and the requests already on their way when the last of them came back
// (the log's in_flight), and not one more: for every strategy, a pick that
// lands on it after the ejection, from a round trip already under way, is
// taken again.
func TestEjectionUnderLoadSendsNothingAfter(t *testing.T) {
	for _, strategy := range []string{"round-robin", "least-conn", "random"} {
		t.Run(strategy, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			good := newBackend(t, "good", nil)
			var hits atomic.Int64
			slowFail := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				hits.Add(1)
				time.Sleep(5 * time.Millisecond)
				http.Error(w, "failed", http.StatusInternalServerError)
			}))
			defer slowFail.Close()
			s := startServe(t, ctx, proxyEnv("EJECT_AFTER", "3", "EJECT_TIME", "1m", "STRATEGY", strategy), good.srv.URL, slowFail.URL)
			var wg sync.WaitGroup
			for range 20 {
				wg.Go(func() {
					for range 20 {
						getStatus(t, s.main)
					}
				})
			}
			wg.Wait()
			waitFor(t, "the ejection in the log", func() bool { return strings.Contains(s.logs.String(), "backend ejected for every dispatcher") })
			line := logLine(s.logs.String(), "backend ejected for every dispatcher")
			_, v, _ := strings.Cut(line, " in_flight=")
			v, _, _ = strings.Cut(v, " ")
			inFlight, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("no in_flight in %q", line)
			}
			if got := hits.Load(); got != int64(3+inFlight) {
				t.Errorf("400 requests from 20 clients: the failing backend got %d, want EJECT_AFTER (3) and the %d on their way: %s", got, inFlight, line)
			}
			t.Logf("%s: %d requests reached the failing backend (3 failures, %d on their way)", strategy, hits.Load(), inFlight)
		})
	}
}

// EJECT_MAX_PERCENT: with two backends failing and 50%, only one of three
// is ejected; the other goes on getting its turns, and the log says why.
func TestEjectionCappedByMaxPercent(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	good := newBackend(t, "good", nil)
	bad1, hits1 := failing(t)
	bad2, hits2 := failing(t)
	s := startServe(t, ctx, proxyEnv("EJECT_AFTER", "2", "EJECT_TIME", "1m"), good.srv.URL, bad1, bad2)
	for range 30 {
		getStatus(t, s.main)
	}
	waitFor(t, "the refusal in the log", func() bool { return strings.Contains(s.logs.String(), "EJECT_MAX_PERCENT") })
	h1, h2 := hits1.Load(), hits2.Load()
	if min(h1, h2) != 2 || max(h1, h2) < 5 {
		t.Errorf("two failing backends of three, 50%%: got %d and %d requests, want one ejected after 2 and the other still served", h1, h2)
	}
	if line := logLine(s.logs.String(), "EJECT_MAX_PERCENT"); !strings.Contains(line, "ejected=1") || !strings.Contains(line, "of=3") {
		t.Errorf("log: got %q, want ejected=1 of=3", line)
	}
}

// logLine is the first line of log that holds s.
func logLine(log, s string) string {
	for line := range strings.Lines(log) {
		if strings.Contains(line, s) {
			return line
		}
	}
	return ""
}
