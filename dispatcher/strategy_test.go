package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// holder is an upstream handler for /hold that keeps each request until
// release is closed, counting the requests it holds.
type holder struct {
	mu      sync.Mutex
	held    int
	release chan struct{}
}

func newHolder() *holder { return &holder{release: make(chan struct{})} }

func (h *holder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.held++
	h.mu.Unlock()
	select {
	case <-h.release:
	case <-r.Context().Done():
	}
	io.WriteString(w, "released")
}

func (h *holder) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.held
}

// STRATEGY=least-conn in MODE=proxy: with two requests held on two
// backends, the next request goes to the third; the dispatcher's metrics
// and dashboard show the requests in flight; released, they are gone.
func TestLeastConnThroughTheDispatcher(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hs := []*holder{newHolder(), newHolder(), newHolder()}
	bs := []*upstream{newBackend(t, "b1", hs[0]), newBackend(t, "b2", hs[1]), newBackend(t, "b3", hs[2])}
	s := startServe(t, ctx, proxyEnv("STRATEGY", "least-conn"), bs[0].srv.URL, bs[1].srv.URL, bs[2].srv.URL)
	waitFor(t, "the snapshot is read", func() bool { code, _ := s.readyz(t); return code == 200 })

	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			resp, err := http.Get(s.main + "/hold")
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		})
	}
	waitFor(t, "two requests are held", func() bool { return hs[0].count()+hs[1].count()+hs[2].count() == 2 })
	expectTheIdleOne(t, s, hs, bs, "with two backends busy")

	fams := scrape(t, s.adm+"/metrics")
	for i, b := range bs {
		want := float64(hs[i].count())
		if got, _ := sample(fams, "spread_inflight", map[string]string{"backend": b.srv.URL}); got != want {
			t.Errorf("spread_inflight{backend=%q}: got %v, want %v", b.srv.URL, got, want)
		}
	}
	if got, ok := sample(fams, "spread_strategy_info", map[string]string{"strategy": "least-conn", "mode": "proxy"}); !ok || got != 1 {
		t.Errorf("spread_strategy_info{strategy=least-conn,mode=proxy}: got %v %v, want 1", got, ok)
	}
	ev := openEvents(t, s.adm+"/events")
	snap, _ := ev.next(t)
	if snap.Strategy != "least-conn" || !snap.InFlight || snap.NextPick {
		t.Errorf("dashboard: got strategy %q, inflight %v, nextPick %v; want least-conn, true, false", snap.Strategy, snap.InFlight, snap.NextPick)
	}
	for _, bar := range snap.Backends {
		for i, b := range bs {
			if bar.URL == b.srv.URL && bar.InFlight != int64(hs[i].count()) {
				t.Errorf("dashboard bar %s: got %d in flight, want %d", bar.URL, bar.InFlight, hs[i].count())
			}
		}
	}

	for _, h := range hs {
		close(h.release)
	}
	wg.Wait()
	waitFor(t, "the counts are released in Redis", func() bool {
		n, err := s.store.InFlight(ctx)
		return err == nil && len(n) == 0
	})
	fams = scrape(t, s.adm+"/metrics")
	for _, b := range bs {
		if got, _ := sample(fams, "spread_inflight", map[string]string{"backend": b.srv.URL}); got != 0 {
			t.Errorf("after release, spread_inflight{backend=%q}: got %v, want 0", b.srv.URL, got)
		}
	}
}

// Every strategy serves through the real dispatcher in each mode it
// supports, and only to the list's backends.
func TestEveryStrategyServes(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bs := []*upstream{newBackend(t, "b1", nil), newBackend(t, "b2", nil), newBackend(t, "b3", nil)}
	urls := []string{bs[0].srv.URL, bs[1].srv.URL, bs[2].srv.URL}
	for _, tc := range []struct{ strategy, mode string }{
		{"round-robin", "proxy"}, {"random", "proxy"}, {"hash", "proxy"}, {"least-conn", "proxy"}, {"p2c", "proxy"},
		{"random", "redirect"}, {"hash", "redirect"},
	} {
		s := startServe(t, ctx, map[string]string{"MODE": tc.mode, "STRATEGY": tc.strategy}, urls...)
		waitFor(t, "the snapshot is read", func() bool { code, _ := s.readyz(t); return code == 200 })
		seen := map[string]int{}
		for range 30 {
			resp, err := s.noFollower.Get(s.main + "/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			got := resp.Header.Get("X-Backend")
			if tc.mode == "redirect" {
				got = strings.TrimSuffix(resp.Header.Get("Location"), "/")
			}
			seen[got]++
		}
		for got, n := range seen {
			ok := false
			for i, b := range bs {
				ok = ok || got == b.name || got == urls[i]
			}
			if !ok {
				t.Errorf("%s/%s: %d answers from %q, not one of the list's backends", tc.strategy, tc.mode, n, got)
			}
		}
		if tc.strategy == "hash" {
			if len(seen) != 1 {
				t.Errorf("hash/%s: one client went to %d backends (%v), want one", tc.mode, len(seen), seen)
			}
			// HASH_KEY=ip: every request had the key, none fell back.
			if got, ok := sample(scrape(t, s.adm+"/metrics"), "spread_hash_fallbacks_total", nil); !ok || got != 0 {
				t.Errorf("hash/%s: spread_hash_fallbacks_total got %v (present %v), want 0", tc.mode, got, ok)
			}
		}
	}
}

// expectTheIdleOne sends three requests while two of the three backends
// hold one each, and checks that each goes to the idle one.
func expectTheIdleOne(t *testing.T, s *served, hs []*holder, bs []*upstream, when string) {
	t.Helper()
	free := -1
	for i, h := range hs {
		if h.count() == 0 {
			free = i
		}
	}
	for range 3 {
		resp, err := http.Get(s.main + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("X-Backend"); got != bs[free].name {
			t.Errorf("%s: got %q, want the idle %q", when, got, bs[free].name)
		}
	}
}
