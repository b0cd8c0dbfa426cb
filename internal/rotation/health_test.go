package rotation_test

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spreadlb/spread/internal/redistest"
	"github.com/spreadlb/spread/internal/rotation"
)

// Down entries are stepped over inside the rotation step: the healthy
// entries keep an exact round robin, and the list keeps its members and
// order.
func TestNextStepsOverDownEntries(t *testing.T) {
	ctx := context.Background()
	s, srv := newStore(t)
	four := append(slices.Clone(three), "http://127.0.0.1:5003")
	if err := s.Replace(ctx, four); err != nil {
		t.Fatal(err)
	}
	srv.Client.SAdd(ctx, s.DownKey(), four[1], four[3])

	counts := concurrentPicks(t, s, 20, 10)
	want := map[string]int{four[0]: 100, four[2]: 100}
	if !maps.Equal(counts, want) {
		t.Errorf("picks with two of four entries down: got %v, want %v", counts, want)
	}
	got, _ := s.Entries(ctx)
	if !slices.Equal(got, four) {
		t.Errorf("list after 200 picks (two full turns of four each): got %q, want %q", got, four)
	}
	tally, _ := s.Tally(ctx)
	if want := map[string]int64{four[0]: 100, four[2]: 100}; !maps.Equal(tally, want) {
		t.Errorf("tally: got %v, want only the picks %v", tally, want)
	}

	// Every entry down: 503's error, and the list is as it was.
	srv.Client.SAdd(ctx, s.DownKey(), four[0], four[2])
	if _, err := s.Next(ctx); !errors.Is(err, rotation.ErrAllDown) {
		t.Errorf("all down: got %v, want ErrAllDown", err)
	}
	if got, _ := s.Entries(ctx); !slices.Equal(got, four) {
		t.Errorf("list after an all-down pick: got %q, want %q", got, four)
	}
	// A down set of the wrong type is ignored.
	srv.Client.Del(ctx, s.DownKey())
	srv.Client.Set(ctx, s.DownKey(), "x", 0)
	expectPicks(t, s, []string{four[3], four[2], four[1], four[0]})
}

// A pick with nothing down is one LMOVE, as before health checks.
func TestNextWithNothingDownIsOneLMOVE(t *testing.T) {
	ctx := context.Background()
	s, srv := seededStore(t)
	expectPicks(t, s, []string{three[2], three[1], three[0]})
	if n := lmoveCalls(t, srv); n != 3 {
		t.Errorf("got %d LMOVE calls for 3 picks, want 3", n)
	}
	srv.Client.SAdd(ctx, s.DownKey(), three[1])
	expectPicks(t, s, []string{three[2], three[0]})
	if n := lmoveCalls(t, srv); n != 6 {
		t.Errorf("got %d LMOVE calls after 2 more picks, one over a down entry, want 6", n)
	}
}

// Local leaves down entries out of its snapshot too.
func TestLocalSkipsDownEntries(t *testing.T) {
	ctx := context.Background()
	s, srv := seededStore(t)
	srv.Client.SAdd(ctx, s.DownKey(), three[2])
	l := rotation.NewLocal(s, 0)
	if err := l.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := localPicks(t, l, 4), []string{three[1], three[0], three[1], three[0]}; !slices.Equal(got, want) {
		t.Errorf("picks: got %q, want %q", got, want)
	}
	srv.Client.SAdd(ctx, s.DownKey(), three[0], three[1])
	if err := l.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Next(ctx); !errors.Is(err, rotation.ErrAllDown) {
		t.Errorf("all down: got %v, want ErrAllDown", err)
	}
	srv.Client.Del(ctx, s.DownKey())
	if err := l.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := localPicks(t, l, 3), []string{three[2], three[1], three[0]}; !slices.Equal(got, want) {
		t.Errorf("picks once back up: got %q, want %q", got, want)
	}
	if n, ok := l.Len(); n != 3 || !ok {
		t.Errorf("Len: got (%d, %v), want (3, true)", n, ok)
	}
	// A down set of the wrong type reads as empty.
	srv.Client.Set(ctx, s.DownKey(), "x", 0)
	srv.Client.LPush(ctx, "servers", "http://127.0.0.1:5003")
	if err := l.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got := localPicks(t, l, 4); len(slices.Compact(slices.Sorted(slices.Values(got)))) != 4 {
		t.Errorf("picks with a down set of the wrong type: got %q, want all four entries", got)
	}
}

// backend is an httptest server whose /healthz answers 200 while healthy
// is set, and 500 otherwise, counting the probes.
type backend struct {
	*httptest.Server
	healthy atomic.Bool
	probes  atomic.Int64
}

func newBackend(t *testing.T) *backend {
	t.Helper()
	b := &backend{}
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

func down(t *testing.T, s *rotation.Store) []string {
	t.Helper()
	d, err := s.Down(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// rounds runs n rounds of h, failing on an error.
func rounds(t *testing.T, h *rotation.Health, n int) {
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
	h := rotation.NewHealth(s, rotation.HealthConfig{Falls: 2, Rises: 3})

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
	for i := range 4 {
		u, err := s.Next(ctx)
		if err != nil || u.String() != a.URL {
			t.Errorf("pick %d with b down: got (%v, %v), want %s", i, u, err, a.URL)
		}
	}
	// A stopped backend fails too (connection refused).
	a.Close()
	rounds(t, h, 2)
	if _, err := s.Next(ctx); !errors.Is(err, rotation.ErrAllDown) {
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
	h := rotation.NewHealth(s, rotation.HealthConfig{Falls: 1, Rises: 1})
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
	if err := s.RemoveProbe(ctx, "http://127.0.0.1:1"); !errors.Is(err, rotation.ErrNotInList) {
		t.Errorf("removing it twice: got %v, want ErrNotInList", err)
	}
	for _, bad := range [][2]string{{"http://a:1/path", "http://b:1"}, {"http://a:1", "ftp://b"}} {
		if err := s.SetProbe(ctx, bad[0], bad[1]); !errors.Is(err, rotation.ErrInvalidURL) {
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
	s1 := rotation.NewStore(srv.Client, "servers", nil)
	s2 := rotation.NewStore(srv.Client, "servers", nil)
	b := newBackend(t)
	if err := s1.Replace(ctx, []string{b.URL}); err != nil {
		t.Fatal(err)
	}
	h1 := rotation.NewHealth(s1, rotation.HealthConfig{Falls: 1, Rises: 1})
	h2 := rotation.NewHealth(s2, rotation.HealthConfig{Falls: 1, Rises: 1})
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
	h := rotation.NewHealth(s, rotation.HealthConfig{Falls: 1})
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
	rounds(t, rotation.NewHealth(s, rotation.HealthConfig{Falls: 1}), 1)
	if got := down(t, s); !slices.Equal(got, []string{c.URL}) {
		t.Errorf("hostile keys: got down %q, want %q", got, c.URL)
	}
}

func TestParseOrigin(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{"http://localhost:5000", "http://localhost:5000", ""},
		{"http://LOCALHOST:5000/", "http://localhost:5000", ""},
		{"https://b.example", "https://b.example", ""},
		{"http://b.example/app", "", "no path"},
		{"javascript:alert(1)", "", "scheme"},
		{"", "", "empty"},
	}
	for _, tc := range tests {
		got, err := rotation.ParseOrigin(tc.in)
		if got != tc.want || (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("ParseOrigin(%q): got (%q, %v), want (%q, error with %q)", tc.in, got, err, tc.want, tc.err)
		}
	}
}

// Invalid entries met once are stepped over inside the rotation step after
// that: under concurrency a pick does not meet them again and again while
// the others move the list, so no pick gives up on a list that has valid
// entries, and the valid ones share the turns exactly.
func TestInvalidEntriesAreSkippedInTheStep(t *testing.T) {
	ctx := context.Background()
	s, srv := newStore(t)
	list := []string{three[0]}
	for i := range 5 {
		list = append(list, "javascript:alert("+strconv.Itoa(i)+")")
	}
	list = append(list, three[1])
	for i := range 5 {
		list = append(list, "//evil"+strconv.Itoa(i)+".example")
	}
	list = append(list, three[2])
	if err := srv.Client.RPush(ctx, "servers", list).Err(); err != nil {
		t.Fatal(err)
	}
	counts := concurrentPicks(t, s, 30, 10)
	if want := map[string]int{three[0]: 100, three[1]: 100, three[2]: 100}; !maps.Equal(counts, want) {
		t.Errorf("300 picks: got %v, want %v", counts, want)
	}
	// 100 turns of the 13 entries: each LMOVE is a pick or a skip.
	if n := lmoveCalls(t, srv); n != 1300 {
		t.Errorf("got %d LMOVE calls, want 1300 (100 turns of 13 entries)", n)
	}
	if n := s.Skipped(); n != 1000 {
		t.Errorf("Skipped: got %d, want 1000 (10 invalid entries, 100 turns)", n)
	}
	if got, _ := s.Entries(ctx); !slices.Equal(got, list) {
		t.Errorf("the list after 100 turns: got %q, want it as it was", got)
	}

	// Only invalid entries: ErrNoValidBackend, not a loop.
	srv.Client.Del(ctx, "servers")
	srv.Client.RPush(ctx, "servers", list[1], list[7])
	if _, err := s.Next(ctx); !errors.Is(err, rotation.ErrNoValidBackend) {
		t.Errorf("only known-invalid entries: got %v, want ErrNoValidBackend", err)
	}
	// Invalid and down entries only: all down.
	srv.Client.RPush(ctx, "servers", three[0])
	srv.Client.SAdd(ctx, s.DownKey(), three[0])
	if _, err := s.Next(ctx); !errors.Is(err, rotation.ErrAllDown) {
		t.Errorf("invalid and down entries only: got %v, want ErrAllDown", err)
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
	h := rotation.NewHealth(s, rotation.HealthConfig{Falls: 2, Rises: 2})
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
