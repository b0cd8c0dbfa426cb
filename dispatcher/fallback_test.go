package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// getOK sends one request to the main port and returns its status and
// Location.
func (s *served) getOK(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := s.noFollower.Get(s.main + path)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Location")
}

func (s *served) readyz(t *testing.T) (int, string) {
	t.Helper()
	resp, err := s.noFollower.Get(s.adm + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// waitFor polls cond every 20ms until it holds, failing the test after a
// minute: it waits for something to happen, it measures nothing.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting until %s", what)
		}
	}
}

// While Redis hangs (its process stopped, as `docker pause` does), the
// dispatcher answers every request from its snapshot of the list: only
// the first request waits on Redis, the others never ask it. When Redis
// answers again, the shared rotation resumes by itself.
func TestHungRedisDegradesToTheSnapshot(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := startServe(t, ctx, map[string]string{"REDIS_TIMEOUT": "200ms"}, three...)
	waitFor(t, "the snapshot is read", func() bool { code, _ := s.readyz(t); return code == 200 })
	for range 3 {
		if code, _ := s.getOK(t, "/"); code != http.StatusFound {
			t.Fatalf("before the pause: got %d, want 302", code)
		}
	}

	s.redis.Pause()
	stepsBefore := s.steps(t)
	counts := map[string]int{}
	for i := range 30 {
		code, loc := s.getOK(t, "/")
		if code != http.StatusFound {
			t.Fatalf("request %d while Redis hangs: got %d, want 302", i, code)
		}
		counts[strings.TrimSuffix(loc, "/")]++
	}
	for _, b := range three {
		if counts[b] != 10 {
			t.Errorf("while Redis hangs, %s: got %d of 30 redirects, want 10 (all: %v)", b, counts[b], counts)
		}
	}
	if steps := s.steps(t) - stepsBefore; steps != 1 {
		t.Errorf("while Redis hangs: got %v requests that asked Redis, want 1 (the first; the rest never wait on it)", steps)
	}
	if code, body := s.readyz(t); code != 200 || !strings.HasPrefix(body, "degraded: ") {
		t.Errorf("/readyz while Redis hangs: got %d %q, want 200 degraded: ...", code, body)
	}
	if n := strings.Count(s.logs.String(), "msg=\"degraded: redis unavailable"); n != 1 {
		t.Errorf("the log says degraded %d times, want once:\n%s", n, s.logs)
	}
	// The request that waited REDIS_TIMEOUT was answered from the
	// snapshot, and its failed Redis call still counts.
	if got, _ := sample(scrape(t, s.adm+"/metrics"), "spread_redis_errors_total", nil); got != 1 {
		t.Errorf("while Redis hangs: got spread_redis_errors_total %v, want 1 (the request that waited)", got)
	}

	s.redis.Resume()
	waitFor(t, "/readyz no longer says degraded", func() bool {
		_, body := s.readyz(t)
		return strings.HasPrefix(body, "ready: ")
	})
	if !strings.Contains(s.logs.String(), "msg=\"redis answers again: degraded mode over") {
		t.Errorf("the log does not say degraded mode is over:\n%s", s.logs)
	}
	stepsBefore = s.steps(t)
	for range 3 {
		if code, _ := s.getOK(t, "/"); code != http.StatusFound {
			t.Fatalf("after Redis is back: got %d, want 302", code)
		}
	}
	if steps := s.steps(t) - stepsBefore; steps != 3 {
		t.Errorf("after Redis is back: got %v steps in Redis for 3 requests, want 3 (the shared rotation)", steps)
	}
}

// A Redis that is gone (refused connections) degrades the same way, and a
// dispatcher whose snapshot is empty answers 503: there is nothing to fall
// back on.
func TestRedisGoneDegradesToTheSnapshot(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := startServe(t, ctx, nil, three...)
	waitFor(t, "the snapshot is read", func() bool { code, _ := s.readyz(t); return code == 200 })
	s.redis.Stop()
	counts := map[string]int{}
	for i := range 9 {
		code, loc := s.getOK(t, "/")
		if code != http.StatusFound {
			t.Fatalf("request %d with Redis gone: got %d, want 302", i, code)
		}
		counts[strings.TrimSuffix(loc, "/")]++
	}
	for _, b := range three {
		if counts[b] != 3 {
			t.Errorf("with Redis gone, %s: got %d of 9 redirects, want 3 (all: %v)", b, counts[b], counts)
		}
	}
	if code, body := s.readyz(t); code != 200 || !strings.Contains(body, "degraded") || !strings.Contains(body, "3 entries") {
		t.Errorf("/readyz with Redis gone: got %d %q, want 200, degraded, 3 entries", code, body)
	}

	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	fresh := startServe(t, ctx2, nil)
	fresh.redis.Stop()
	if code, _ := fresh.getOK(t, "/"); code != http.StatusServiceUnavailable {
		t.Errorf("no snapshot and no Redis: got %d, want 503", code)
	}
	if code, body := fresh.readyz(t); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz with no snapshot and no Redis: got %d %q, want 503", code, body)
	}
}

// The dispatcher's health checks take a failing backend out of the
// rotation and bring it back when it passes again; the list is untouched.
func TestServeSkipsABackendThatFailsItsHealthChecks(t *testing.T) {
	var sick atomic.Bool // b's /healthz answers 500 while set
	mk := func(sick *atomic.Bool) *httptest.Server {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if sick.Load() {
				w.WriteHeader(http.StatusInternalServerError)
			}
		}))
		t.Cleanup(srv.Close)
		return srv
	}
	a, b := mk(new(atomic.Bool)), mk(&sick)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := startServe(t, ctx, map[string]string{"HEALTH_INTERVAL": "50ms", "HEALTH_FALLS": "1", "HEALTH_RISES": "1"}, a.URL, b.URL)

	sick.Store(true)
	waitFor(t, "b is marked down", func() bool {
		d, _ := s.store.Down(ctx)
		return slices.Equal(d, []string{b.URL})
	})
	for i := range 4 {
		if code, loc := s.getOK(t, "/"); code != http.StatusFound || loc != a.URL+"/" {
			t.Errorf("request %d with b down: got %d %q, want 302 to %s/", i, code, loc, a.URL)
		}
	}
	if got, _ := s.store.Entries(ctx); len(got) != 2 {
		t.Errorf("the list with b down: got %q, want both entries still there", got)
	}

	sick.Store(false)
	waitFor(t, "b is back", func() bool {
		d, _ := s.store.Down(ctx)
		return len(d) == 0
	})
	counts := map[string]int{}
	for range 4 {
		_, loc := s.getOK(t, "/")
		counts[loc]++
	}
	if counts[a.URL+"/"] != 2 || counts[b.URL+"/"] != 2 {
		t.Errorf("4 requests with both up: got %v, want 2 each", counts)
	}
}

// steps is spread_rotation_steps_total: the rotation steps the dispatcher
// has asked Redis for.
func (s *served) steps(t *testing.T) float64 {
	t.Helper()
	n, _ := sample(scrape(t, s.adm+"/metrics"), "spread_rotation_steps_total", nil)
	return n
}
