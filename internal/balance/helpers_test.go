package balance_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/spreadlb/spread/internal/balance"
	"github.com/spreadlb/spread/internal/pool"
	"github.com/spreadlb/spread/internal/redistest"
	"github.com/spreadlb/spread/internal/store"
)

var three = []string{"http://127.0.0.1:5000", "http://127.0.0.1:5001", "http://127.0.0.1:5002"}

func newStore(t testing.TB) (*store.Store, *redistest.Server) {
	t.Helper()
	srv := redistest.Start(t)
	return store.NewStore(srv.Client, "servers", nil), srv
}

// seededStore is newStore with the list seeded with three.
func seededStore(t testing.TB) (*store.Store, *redistest.Server) {
	t.Helper()
	s, srv := newStore(t)
	if err := s.Replace(context.Background(), three); err != nil {
		t.Fatal(err)
	}
	return s, srv
}

// readPool returns a pool over s's list, read once.
func readPool(t testing.TB, s *store.Store) *pool.Pool {
	t.Helper()
	p := pool.New(s, 0, nil)
	if err := p.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	return p
}

// get is a request for / from 192.0.2.1, as a server would see it.
func get() *http.Request { return httptest.NewRequest(http.MethodGet, "/", nil) }

// picks takes n picks from p and returns them in order.
func picks(t *testing.T, p balance.Picker, n int) []string {
	t.Helper()
	var got []string
	for range n {
		b, err := p.Pick(context.Background(), get())
		if err != nil {
			t.Fatalf("pick %d: %v", len(got), err)
		}
		got = append(got, b.URL.String())
	}
	return got
}

// concurrentPicks takes each picks from p in each of clients goroutines at
// once and counts them per backend.
func concurrentPicks(t *testing.T, p balance.Picker, clients, each int) map[string]int {
	t.Helper()
	var mu sync.Mutex
	counts := map[string]int{}
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for range each {
				b, err := p.Pick(context.Background(), get())
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				counts[b.URL.String()]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return counts
}

// lmoveCalls is how many LMOVE commands the server has run.
func lmoveCalls(t *testing.T, srv *redistest.Server) int {
	t.Helper()
	n, err := redistest.Calls(context.Background(), srv.Client, "lmove")
	if err != nil {
		t.Fatal(err)
	}
	return int(n)
}

// env is the balance.Env a dispatcher with id builds over s and pl: the
// shared rotation, and in-flight counts made on first use.
func env(s *store.Store, pl *pool.Pool, id string) balance.Env {
	var once sync.Once
	var in *store.Inflight
	return balance.Env{Pool: pl, Rotation: store.NewRotation(s), Redis: s, Inflight: func() balance.Counts {
		once.Do(func() { in = s.NewInflight(id, false) })
		return in
	}}
}

// settings is a getenv over m.
func settings(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// newStrategy configures the strategy name in proxy mode with set, and
// builds its Picker in e.
func newStrategy(t testing.TB, name string, set map[string]string, e balance.Env) balance.Picker {
	t.Helper()
	_, plan, err := balance.Configure(name, settings(set), balance.Proxy)
	if err != nil {
		t.Fatal(err)
	}
	p, err := plan.New(e)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
