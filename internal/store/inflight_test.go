package store_test

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/spreadlb/spread/internal/backend"
	"github.com/spreadlb/spread/internal/store"
)

var cands = []backend.Weighted{{URL: three[2], Weight: 1}, {URL: three[1], Weight: 1}, {URL: three[0], Weight: 1}}

func pickIn(t *testing.T, f *store.Inflight, cs []backend.Weighted) string {
	t.Helper()
	e, err := f.Pick(context.Background(), cs)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// waitShared waits until f, syncing, sees want as every dispatcher's counts.
func waitShared(t *testing.T, f *store.Inflight, want map[string]int64) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := f.Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
		got := f.Shared()
		if maps.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("shared counts: got %v, want %v", got, want)
		}
	}
}

// With nothing in flight, least-connections' ties go in rotation order, so
// an idle pool still rotates; a request in flight steers the next pick
// elsewhere, and its release brings the backend back.
func TestInflightTiesRotate(t *testing.T) {
	s, _ := newStore(t)
	f := s.NewInflight("d1", true)
	var got []string
	for range 6 {
		e := pickIn(t, f, cands)
		got = append(got, e)
		f.Release(e)
	}
	want := []string{three[2], three[1], three[0], three[2], three[1], three[0]}
	if !slices.Equal(got, want) {
		t.Errorf("idle picks: got %q, want the rotation order %q", got, want)
	}

	// Two held: the third goes to the one left.
	a, b := pickIn(t, f, cands), pickIn(t, f, cands)
	if c := pickIn(t, f, cands); c == a || c == b {
		t.Errorf("with %q and %q busy, the pick went to %q, want the idle one", a, b, c)
	} else {
		f.Release(c)
	}
	if own := f.Own(); own[a] != 1 || own[b] != 1 || len(own) != 2 {
		t.Errorf("own counts: got %v, want %q and %q at 1", own, a, b)
	}
	f.Release(a)
	f.Release(b)
	waitShared(t, f, map[string]int64{})
}

// Counts are shared: what one dispatcher holds steers another's picks, and
// a weight divides the load.
func TestInflightCountsAreShared(t *testing.T) {
	s, _ := newStore(t)
	d1, d2 := s.NewInflight("d1", true), s.NewInflight("d2", true)
	held := []string{pickIn(t, d1, cands), pickIn(t, d1, cands)}
	for range 5 {
		e := pickIn(t, d2, cands)
		if slices.Contains(held, e) {
			t.Fatalf("d2 picked %q, which d1 has a request in flight to (d1 holds %q)", e, held)
		}
		d2.Release(e)
	}
	got, err := s.InFlight(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]int64{held[0]: 1, held[1]: 1}; !maps.Equal(got, want) {
		t.Errorf("Store.InFlight: got %v, want %v", got, want)
	}

	// A backend of weight 3 takes three requests before the others' one.
	weighted := []backend.Weighted{{URL: three[0], Weight: 3}, {URL: three[1], Weight: 1}}
	d3 := s.NewInflight("d3", true)
	n := map[string]int{}
	for range 8 {
		n[pickIn(t, d3, weighted)]++ // none released
	}
	if n[three[0]] != 6 || n[three[1]] != 2 {
		t.Errorf("8 held picks over weights 3:1: got %v, want 6 and 2", n)
	}
}

// A dispatcher that dies without releasing stops steering the others once
// its counts expire; one that shuts down withdraws them at once.
func TestInflightOfADeadDispatcherExpires(t *testing.T) {
	s, _ := newStore(t)
	dead := s.NewInflight("dead", true)
	dead.SetTTL(500 * time.Millisecond)
	held := pickIn(t, dead, cands)
	alive := s.NewInflight("alive", true)
	waitShared(t, alive, map[string]int64{held: 1})
	// dead makes no more calls: after its TTL its count is gone.
	waitShared(t, alive, map[string]int64{})
	got, err := s.InFlight(context.Background())
	if err != nil || len(got) != 0 {
		t.Errorf("Store.InFlight after the expiry: got (%v, %v), want none", got, err)
	}

	leaving := s.NewInflight("leaving", true)
	held = pickIn(t, leaving, cands)
	waitShared(t, alive, map[string]int64{held: 1})
	leaving.Withdraw()
	waitShared(t, alive, map[string]int64{})
}

// Concurrent picks share round trips, and every pick is counted once.
func TestInflightPicksShareRoundTrips(t *testing.T) {
	s, _ := newStore(t)
	f := s.NewInflight("d1", true)
	const n = 300
	done := make(chan string, n)
	for range n {
		go func() {
			e, err := f.Pick(context.Background(), cands)
			if err != nil {
				t.Error(err)
			}
			done <- e
		}()
	}
	count := map[string]int64{}
	for range n {
		count[<-done]++
	}
	if !maps.Equal(f.Own(), count) {
		t.Errorf("own counts: got %v, want the picks %v", f.Own(), count)
	}
	for _, c := range cands {
		if count[c.URL] != n/3 {
			t.Errorf("%s: got %d of %d held picks, want %d: least-connections keeps them level", c.URL, count[c.URL], n, n/3)
		}
	}
	t.Logf("%d picks took %d script calls", n, f.Calls())
	if f.Calls() >= n {
		t.Errorf("%d concurrent picks took %d calls, want fewer: they share round trips", n, f.Calls())
	}
}

// Picks that share a call may come from different snapshots of the list
// (one read before the list changed, one after): each gets one of its own
// candidates, never one that only the other's snapshot held.
func TestInflightBatchKeepsEachPicksCandidates(t *testing.T) {
	s, srv := newStore(t)
	f := s.NewInflight("d1", true)
	f.SetTimeoutForTest(time.Minute) // the pause, not a timeout, ends the call
	unpause := pauseWrites(t, srv)

	first := make(chan string, 1)
	go func() { first <- pickIn(t, f, cands) }()
	waitFor(t, "a call in flight", f.InflightBusy)

	onlyA := []backend.Weighted{{URL: three[0], Weight: 1}}
	onlyB := []backend.Weighted{{URL: three[1], Weight: 1}}
	type result struct {
		entry string
		err   error
	}
	gotA, gotB := make(chan result, 1), make(chan result, 1)
	go func() { e, err := f.Pick(context.Background(), onlyA); gotA <- result{e, err} }()
	waitFor(t, "one pick queued", func() bool { return f.InflightQueued() == 1 })
	go func() { e, err := f.Pick(context.Background(), onlyB); gotB <- result{e, err} }()
	waitFor(t, "two picks queued", func() bool { return f.InflightQueued() == 2 })
	unpause()

	<-first
	for _, c := range []struct {
		got  chan result
		want string
	}{{gotA, three[0]}, {gotB, three[1]}} {
		r := <-c.got
		if r.err != nil || r.entry != c.want {
			t.Errorf("a pick among only %q: got %q (err %v), want %q", c.want, r.entry, r.err, c.want)
		}
	}
}

// waitFor waits until cond holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10 s for %s", what)
		}
	}
}
