package health_test

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spreadlb/spread/internal/pick"

	"github.com/spreadlb/spread/internal/backend"
	"github.com/spreadlb/spread/internal/health"
	"github.com/spreadlb/spread/internal/redistest"
	"github.com/spreadlb/spread/internal/store"
)

// probed is an httptest server whose /healthz answers 200 while healthy
// is set, and 500 otherwise, counting the probes.
type probed struct {
	*httptest.Server
	healthy atomic.Bool
	probes  atomic.Int64
}

func newBackend(t *testing.T) *probed {
	t.Helper()
	b := &probed{}
	b.healthy.Store(true)
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		b.probes.Add(1)
		if !b.healthy.Load() {
			http.Error(w, "sick", http.StatusInternalServerError)
			return
		}
		w.Write([]byte("ok"))
	}))
	t.Cleanup(b.Close)
	return b
}

func down(t *testing.T, s *store.Store) []string {
	t.Helper()
	d, err := s.Down(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// rounds runs n rounds of h, failing on an error.
func rounds(t *testing.T, h *health.Checker, n int) {
	t.Helper()
	for range n {
		if err := h.Round(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

// HEALTH_FALLS failures in a row mark a backend down, HEALTH_RISES
// successes bring it back; one origin is probed once a round however many
// entries it has.
func TestHealthFallsAndRises(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	a, b := newBackend(t), newBackend(t)
	list := []string{a.URL, b.URL, b.URL + "/app", a.URL}
	if err := s.Replace(ctx, list); err != nil {
		t.Fatal(err)
	}
	h := health.New(s, health.Config{Falls: 2, Rises: 3})

	rounds(t, h, 1)
	if got := down(t, s); len(got) != 0 {
		t.Errorf("all healthy: got down %q, want none", got)
	}
	if a.probes.Load() != 1 || b.probes.Load() != 1 {
		t.Errorf("one round: got %d and %d probes, want 1 per origin", a.probes.Load(), b.probes.Load())
	}

	b.healthy.Store(false)
	steps := []struct {
		healthy  bool
		wantDown []string
	}{
		{false, nil},                             // 1st failure
		{false, []string{b.URL, b.URL + "/app"}}, // 2nd: down, both of its entries
		{true, []string{b.URL, b.URL + "/app"}},  // 1st success
		{false, []string{b.URL, b.URL + "/app"}}, // the count starts again
		{true, []string{b.URL, b.URL + "/app"}},
		{true, []string{b.URL, b.URL + "/app"}},
		{true, nil}, // 3rd success in a row: up
	}
	for i, st := range steps {
		b.healthy.Store(st.healthy)
		rounds(t, h, 1)
		want := slices.Sorted(slices.Values(st.wantDown))
		if got := down(t, s); !slices.Equal(got, want) {
			t.Errorf("round %d (healthy=%v): got down %q, want %q", i+1, st.healthy, got, want)
		}
	}
	// And the rotation follows.
	b.healthy.Store(false)
	rounds(t, h, 2)
	rot := store.NewRotation(s)
	for i := range 4 {
		u, err := rot.Next(ctx)
		if err != nil || u.String() != a.URL {
			t.Errorf("pick %d with b down: got (%v, %v), want %s", i, u, err, a.URL)
		}
	}
	// A stopped backend fails too (connection refused).
	a.Close()
	rounds(t, h, 2)
	if _, err := rot.Next(ctx); !errors.Is(err, pick.ErrAllDown) {
		t.Errorf("both down: got %v, want ErrAllDown", err)
	}
}

// The probe hash sends an origin's probes elsewhere; an invalid mapping is
// ignored.
func TestHealthProbesTheMappedAddress(t *testing.T) {
	ctx := context.Background()
	s, srv := newStore(t)
	real := newBackend(t)
	// Clients use the unreachable 127.0.0.1:1; the dispatcher reaches it at real.
	list := []string{"http://127.0.0.1:1", "http://127.0.0.1:2"}
	if err := s.ReplaceWithProbes(ctx, list, map[string]string{"http://127.0.0.1:1/": real.URL}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Probes(ctx); !maps.Equal(got, map[string]string{"http://127.0.0.1:1": real.URL}) {
		t.Errorf("probe hash: got %v, want the origin mapped to %s", got, real.URL)
	}
	h := health.New(s, health.Config{Falls: 1, Rises: 1})
	rounds(t, h, 1)
	if got, want := down(t, s), []string{"http://127.0.0.1:2"}; !slices.Equal(got, want) {
		t.Errorf("got down %q, want %q", got, want)
	}
	if real.probes.Load() != 1 {
		t.Errorf("the mapped address got %d probes, want 1", real.probes.Load())
	}
	srv.Client.HSet(ctx, s.ProbeKey(), "http://127.0.0.1:1", "javascript:alert(1)")
	rounds(t, h, 1)
	if got, want := down(t, s), list; !slices.Equal(got, want) {
		t.Errorf("with an invalid mapping: got down %q, want %q", got, want)
	}
	if err := s.RemoveProbe(ctx, "http://127.0.0.1:1"); err != nil {
		t.Error(err)
	}
	if err := s.RemoveProbe(ctx, "http://127.0.0.1:1"); !errors.Is(err, store.ErrNotInList) {
		t.Errorf("removing it twice: got %v, want ErrNotInList", err)
	}
	for _, bad := range [][2]string{{"http://a:1/path", "http://b:1"}, {"http://a:1", "ftp://b"}} {
		if err := s.SetProbe(ctx, bad[0], bad[1]); !errors.Is(err, backend.ErrInvalidURL) {
			t.Errorf("SetProbe(%q, %q): got %v, want ErrInvalidURL", bad[0], bad[1], err)
		}
	}
	if err := s.SetProbe(ctx, "HTTP://LocalHost:5000", "http://backend1:5000/"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Probes(ctx); got["http://localhost:5000"] != "http://backend1:5000" {
		t.Errorf("probe hash: got %v, want http://localhost:5000 -> http://backend1:5000", got)
	}
}

// One checker probes at a time: the others wait for the lease, and take
// over when it is released.
func TestHealthLeaseOneProberAtATime(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	s1 := store.NewStore(srv.Client, "servers", nil)
	s2 := store.NewStore(srv.Client, "servers", nil)
	b := newBackend(t)
	if err := s1.Replace(ctx, []string{b.URL}); err != nil {
		t.Fatal(err)
	}
	h1 := health.New(s1, health.Config{Falls: 1, Rises: 1})
	h2 := health.New(s2, health.Config{Falls: 1, Rises: 1})
	rounds(t, h1, 1)
	rounds(t, h2, 1)
	rounds(t, h1, 1)
	rounds(t, h2, 1)
	if !h1.Holder() || h2.Holder() {
		t.Errorf("holders: got %v and %v, want the first only", h1.Holder(), h2.Holder())
	}
	if n := b.probes.Load(); n != 2 {
		t.Errorf("4 rounds of 2 checkers: got %d probes, want 2 (the holder's)", n)
	}
	if ttl := srv.Client.PTTL(ctx, h1.LeaseKey()).Val(); ttl <= 0 || ttl > 5*time.Second {
		t.Errorf("lease TTL: got %v, want 2×2s+1s at most", ttl)
	}

	// The holder stops: Run releases the lease, and the other takes over.
	b.healthy.Store(false)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { h1.Run(rctx); close(done) }()
	cancel()
	<-done
	if n := srv.Client.Exists(ctx, h1.LeaseKey()).Val(); n != 0 {
		t.Errorf("after Run returned the lease still exists")
	}
	rounds(t, h2, 1)
	if !h2.Holder() {
		t.Error("the second checker did not take the lease over")
	}
	if got := down(t, s2); !slices.Equal(got, []string{b.URL}) {
		t.Errorf("after the takeover: got down %q, want %q", got, b.URL)
	}
	// The new holder starts from the down set it found: one success brings
	// it back (Rises: 1), it was not forgotten as up.
	b.healthy.Store(true)
	rounds(t, h2, 1)
	if got := down(t, s2); len(got) != 0 {
		t.Errorf("after a success: got down %q, want none", got)
	}
}

// An entry whose origin leaves the list leaves the down set; invalid
// entries are never probed nor marked.
func TestHealthFollowsTheList(t *testing.T) {
	ctx := context.Background()
	s, srv := newStore(t)
	b := newBackend(t)
	b.healthy.Store(false)
	if err := s.Replace(ctx, []string{b.URL}); err != nil {
		t.Fatal(err)
	}
	srv.Client.RPush(ctx, "servers", "javascript:alert(1)")
	h := health.New(s, health.Config{Falls: 1})
	rounds(t, h, 1)
	if got := down(t, s); !slices.Equal(got, []string{b.URL}) {
		t.Errorf("got down %q, want %q", got, b.URL)
	}
	c := newBackend(t)
	if err := s.Replace(ctx, []string{c.URL}); err != nil {
		t.Fatal(err)
	}
	rounds(t, h, 1)
	if got := down(t, s); len(got) != 0 {
		t.Errorf("after reseeding without it: got down %q, want none", got)
	}
	// A list of the wrong type: no probes, nothing down, no error.
	srv.Client.Del(ctx, "servers")
	srv.Client.Set(ctx, "servers", "x", 0)
	rounds(t, h, 1)
	// Nor with a lease, down set and probe hash of the wrong type.
	srv.Client.Del(ctx, "servers", h.LeaseKey(), s.DownKey(), s.ProbeKey())
	srv.Client.RPush(ctx, "servers", c.URL)
	srv.Client.RPush(ctx, h.LeaseKey(), "x")
	srv.Client.RPush(ctx, s.DownKey(), "x")
	srv.Client.RPush(ctx, s.ProbeKey(), "x")
	c.healthy.Store(false)
	rounds(t, health.New(s, health.Config{Falls: 1}), 1)
	if got := down(t, s); !slices.Equal(got, []string{c.URL}) {
		t.Errorf("hostile keys: got down %q, want %q", got, c.URL)
	}
}

// A failure that a proxying dispatcher reports counts as one failed check
// in the holder's next round: with HEALTH_FALLS=2, a report and a failing
// probe mark the backend down in one round instead of two. A passing probe
// after a report keeps it up. Reports are used once.
func TestHealthCountsReportedFailures(t *testing.T) {
	ctx := context.Background()
	s, srv := newStore(t)
	a, b := newBackend(t), newBackend(t)
	if err := s.Replace(ctx, []string{a.URL, b.URL + "/app"}); err != nil {
		t.Fatal(err)
	}
	h := health.New(s, health.Config{Falls: 2, Rises: 2})
	rounds(t, h, 1)

	// a is fine, though a dispatcher reported it: the probe wins.
	if err := s.ReportFailure(ctx, a.URL); err != nil {
		t.Fatal(err)
	}
	rounds(t, h, 1)
	if got := down(t, s); len(got) != 0 {
		t.Errorf("a reported but healthy backend: got down %q, want none", got)
	}
	// b fails its probe and was reported (twice: it counts once a round).
	b.healthy.Store(false)
	for range 2 {
		if err := s.ReportFailure(ctx, b.URL+"/app"); err != nil {
			t.Fatal(err)
		}
	}
	rounds(t, h, 1)
	if got, want := down(t, s), []string{b.URL + "/app"}; !slices.Equal(got, want) {
		t.Errorf("reported and failing its probe: got down %q after one round, want %q", got, want)
	}
	if n, err := srv.Client.Exists(ctx, "{servers}:reports").Result(); err != nil || n != 0 {
		t.Errorf("reports after the round: got %d keys (%v), want them cleared", n, err)
	}
	// Without a report, a failing probe alone takes HEALTH_FALLS rounds.
	a.healthy.Store(false)
	rounds(t, h, 1)
	if got := down(t, s); slices.Contains(got, a.URL) {
		t.Errorf("one failing probe, no report: got down %q, want a still up", got)
	}
	// An entry that does not parse is not reported.
	if err := s.ReportFailure(ctx, "javascript:alert(1)"); err != nil {
		t.Errorf("report of an invalid entry: got %v, want it ignored", err)
	}
	if n, _ := srv.Client.HLen(ctx, "{servers}:reports").Result(); n != 0 {
		t.Errorf("an invalid entry was reported: %d fields", n)
	}
}

func newStore(t *testing.T) (*store.Store, *redistest.Server) {
	t.Helper()
	srv := redistest.Start(t)
	return store.NewStore(srv.Client, "servers", nil), srv
}
