package pool_test

import (
	"context"
	"errors"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/spreadlb/spread/internal/pick"

	"github.com/spreadlb/spread/internal/pool"
	"github.com/spreadlb/spread/internal/redisconn"
	"github.com/spreadlb/spread/internal/redistest"
	"github.com/spreadlb/spread/internal/store"
)

// The pool decides what is eligible: valid entries not marked down, in
// the shared rotation's pick order, repeats kept; and why nothing is.
func TestEligible(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	s := store.NewStore(srv.Client, "servers", nil)
	p := pool.New(s, 0, nil)
	if _, err := p.Eligible(); !errors.Is(err, pool.ErrNoSnapshot) || !errors.Is(err, pick.ErrUnavailable) {
		t.Errorf("before the first read: got %v, want ErrNoSnapshot", err)
	}
	a, b, c := "http://127.0.0.1:5000", "http://127.0.0.1:5001", "http://127.0.0.1:5002"
	srv.Client.RPush(ctx, "servers", a, "ftp://x", b, a, c)
	srv.Client.SAdd(ctx, s.DownKey(), b)
	if err := p.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := p.Eligible()
	if err != nil {
		t.Fatal(err)
	}
	var raw []string
	for _, e := range got {
		raw = append(raw, e.Raw)
		if e.URL.String() != e.Raw {
			t.Errorf("entry %q parsed as %q", e.Raw, e.URL)
		}
	}
	if want := []string{c, a, a}; !slices.Equal(raw, want) {
		t.Errorf("eligible: got %q, want %q (last entry first, the invalid and the down one left out)", raw, want)
	}
	if up, ok := p.Health(); !ok || !maps.Equal(up, map[string]bool{a: true, b: false, c: true}) {
		t.Errorf("Health: got (%v, %v)", up, ok)
	}
	if n, ok := p.Len(); n != 5 || !ok {
		t.Errorf("Len: got (%d, %v), want (5, true)", n, ok)
	}

	for _, tc := range []struct {
		name  string
		setup func()
		want  error
	}{
		{"every valid entry down", func() { srv.Client.SAdd(ctx, s.DownKey(), a, c) }, pick.ErrAllDown},
		{"only invalid entries", func() { srv.Client.Del(ctx, "servers"); srv.Client.RPush(ctx, "servers", "ftp://x") }, pick.ErrNoValidBackend},
		{"empty", func() { srv.Client.Del(ctx, "servers") }, pick.ErrNoBackends},
		{"not a list", func() { srv.Client.Set(ctx, "servers", "x", 0) }, pick.ErrWrongType},
	} {
		tc.setup()
		if err := p.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Eligible(); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
}

// eligibleRaw is the pool's eligible entries, as the list holds them.
func eligibleRaw(t *testing.T, p *pool.Pool) []string {
	t.Helper()
	got, err := p.Eligible()
	if err != nil {
		t.Fatal(err)
	}
	var raw []string
	for _, e := range got {
		raw = append(raw, e.Raw)
	}
	return raw
}

// Ejected entries are not eligible, whoever ejected them: another
// dispatcher (in Redis, seen at the next read) or this one (at once). If
// every entry left is ejected, they all are eligible again.
func TestEjectedEntriesAreSkipped(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	s := store.NewStore(srv.Client, "servers", nil)
	a, b, c := "http://127.0.0.1:5000", "http://127.0.0.1:5001", "http://127.0.0.1:5002"
	s.Replace(ctx, []string{a, b, c})
	p := pool.New(s, 0, nil)
	p.Refresh(ctx)
	if _, err := s.Eject(ctx, b, store.EjectPolicy{Base: time.Minute, MaxPercent: 100}); err != nil {
		t.Fatal(err)
	}
	if got := eligibleRaw(t, p); len(got) != 3 {
		t.Errorf("before the next read: got %q, want all three", got)
	}
	p.Refresh(ctx)
	if got, want := eligibleRaw(t, p), []string{c, a}; !slices.Equal(got, want) {
		t.Errorf("after another dispatcher ejected %s: got %q, want %q", b, got, want)
	}
	if ej := p.Ejected(); len(ej) != 1 || ej[b].IsZero() {
		t.Errorf("Ejected: got %v, want %s with its end", ej, b)
	}
	// This dispatcher ejects c: out at once, before any read.
	p.Eject(c, time.Now().Add(time.Minute))
	if got, want := eligibleRaw(t, p), []string{a}; !slices.Equal(got, want) {
		t.Errorf("after ejecting %s here: got %q, want %q", c, got, want)
	}
	// and it stays out after a read, though Redis does not know of it.
	p.Refresh(ctx)
	if got, want := eligibleRaw(t, p), []string{a}; !slices.Equal(got, want) {
		t.Errorf("after a read: got %q, want %q", got, want)
	}
	// a down too: the ejected ones serve rather than none.
	srv.Client.SAdd(ctx, s.DownKey(), a)
	p.Refresh(ctx)
	if got, want := eligibleRaw(t, p), []string{c, b}; !slices.Equal(got, want) {
		t.Errorf("with the only other entry down: got %q, want the ejected %q", got, want)
	}
}

// Slow start: an entry's Factor ramps to 1 over the window from its time in
// the since table, in Redis's clock, never below the minimum; an entry
// without a time (just joined) is at the minimum; without a table, or with
// slow start off, every Factor is 1.
func TestSlowStartFactor(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	s := store.NewStore(srv.Client, "servers", nil)
	a, b, c := "http://127.0.0.1:5000", "http://127.0.0.1:5001", "http://127.0.0.1:5002"
	s.Replace(ctx, []string{a, b, c})
	p := pool.New(s, 0, nil)
	factors := func() map[string]float64 {
		p.Refresh(ctx)
		got, _ := p.Eligible()
		out := map[string]float64{}
		for _, e := range got {
			out[e.Raw] = e.Factor
		}
		return out
	}
	if f := factors(); f[a] != 1 || f[b] != 1 || f[c] != 1 {
		t.Errorf("slow start off: got %v, want 1 each", f)
	}
	p.SetSlowStart(10*time.Second, 0.1)
	if f := factors(); f[a] != 1 || f[b] != 1 || f[c] != 1 {
		t.Errorf("no table kept: got %v, want 1 each", f)
	}
	now := srv.Client.Time(ctx).Val()
	srv.Client.HSet(ctx, "{servers}:since", a, "0", b, now.Add(-5*time.Second).UnixMilli())
	f := factors()
	if f[a] != 1 || f[b] < 0.48 || f[b] > 0.52 || f[c] != 0.1 {
		t.Errorf("factors: got %v, want %s 1 (long ago), %s 0.5 (half way), %s 0.1 (no time yet: the floor)", f, a, b, c)
	}
	if snap, _ := p.Current(); !snap.Ramping {
		t.Error("Ramping: got false with entries ramping")
	}
}

// A pool reads the whole list only when it changed: checks of an
// unchanged list cost Redis no LRANGE, a seed, an added entry and a
// backend marked down each reach the snapshot at the next check, and so
// does a hand-made RPUSH, which does not bump the version (the length
// changed).
func TestCheckReadsTheListOnlyWhenItChanged(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	s := store.NewStore(srv.Client, "servers", nil)
	a, b, c := "http://127.0.0.1:5000", "http://127.0.0.1:5001", "http://127.0.0.1:5002"
	if err := s.Replace(ctx, []string{a, b}); err != nil {
		t.Fatal(err)
	}
	p := pool.New(s, 0, nil)
	if err := p.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	lranges := func() int64 {
		n, err := redistest.Calls(ctx, srv.Client, "lrange")
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := lranges()
	for range 50 {
		if err := p.Check(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := lranges() - before; n != 0 {
		t.Errorf("50 checks of an unchanged list: got %d LRANGE, want 0", n)
	}
	eligible := func() []string {
		t.Helper()
		if err := p.Check(ctx); err != nil {
			t.Fatal(err)
		}
		var raw []string
		es, _ := p.Eligible()
		for _, e := range es {
			raw = append(raw, e.Raw)
		}
		return raw
	}
	for _, tc := range []struct {
		what   string
		change func() error
		want   []string
	}{
		{"seed", func() error { return s.Replace(ctx, []string{a, b, c}) }, []string{c, b, a}},
		{"remove", func() error { _, err := s.Remove(ctx, b); return err }, []string{c, a}},
		{"hand-made RPUSH", func() error { return srv.Client.RPush(ctx, "servers", b).Err() }, []string{b, c, a}},
		{"FLUSHALL and a seed of the same length", func() error {
			if err := srv.Client.FlushAll(ctx).Err(); err != nil {
				return err
			}
			return s.Replace(ctx, []string{c, b, a})
		}, []string{a, b, c}},
	} {
		if err := tc.change(); err != nil {
			t.Fatal(err)
		}
		if got := eligible(); !slices.Equal(got, tc.want) {
			t.Errorf("after %s, one check: got %q, want %q", tc.what, got, tc.want)
		}
	}
}

// The pool's reads say whether Redis answers: a hung Redis makes them
// fail within the store's step timeout, Unavailable says so (and the
// snapshot stays), and the first check that succeeds clears it.
func TestUnavailableFollowsRedis(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	rdb, err := redisconn.Connect(srv.URL, "test") // as the programs connect: deadlines are kept
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	s := store.NewStore(rdb, "servers", nil)
	s.SetStepTimeout(100 * time.Millisecond)
	if err := s.Replace(ctx, []string{"http://127.0.0.1:5000"}); err != nil {
		t.Fatal(err)
	}
	p := pool.New(s, 0, nil)
	var changes []bool
	p.OnUnavailable(func(u bool) { changes = append(changes, u) })
	if err := p.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if err, _ := p.Unavailable(); err != nil {
		t.Errorf("Unavailable while Redis answers: got %v, want nil", err)
	}
	srv.Pause()
	if err := p.Check(ctx); !errors.Is(err, pick.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a check while Redis hangs: got %v, want it unavailable", err)
	}
	if err, since := p.Unavailable(); err == nil || since.IsZero() {
		t.Errorf("Unavailable while Redis hangs: got (%v, %v), want the error and when it began", err, since)
	}
	if _, err := p.Eligible(); err != nil {
		t.Errorf("the snapshot while Redis hangs: %v, want it kept", err)
	}
	srv.Resume()
	if err := p.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if err, _ := p.Unavailable(); err != nil {
		t.Errorf("Unavailable after Redis is back: got %v, want nil", err)
	}
	if !slices.Equal(changes, []bool{true, false}) {
		t.Errorf("OnUnavailable heard %v, want [true false]", changes)
	}
}
