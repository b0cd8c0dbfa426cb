package store_test

import (
	"context"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spreadlb/spread/internal/backend"
	"github.com/spreadlb/spread/internal/redistest"
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

// With nothing in flight, ties go in a weighted rotation: each candidate
// as often as its weight says, in turn, and so do the windows of a list
// longer than 64.
func TestInflightTiesRotateByWeight(t *testing.T) {
	s, _ := newStore(t)
	f := s.NewInflight("d1", true)
	weighted := []backend.Weighted{{URL: three[0], Weight: 2}, {URL: three[1], Weight: 1}}
	var got []string
	for range 6 {
		e := pickIn(t, f, weighted)
		got = append(got, e)
		f.Release(e)
	}
	if want := []string{three[0], three[0], three[1], three[0], three[0], three[1]}; !slices.Equal(got, want) {
		t.Errorf("idle picks over weights 2:1: got %q, want %q", got, want)
	}

	// 100 candidates, every other one of weight 3: a window of 64 at a
	// time, they still take three picks to the others' one.
	cs := manyCands(100)
	for i := range cs {
		if i%2 == 0 {
			cs[i].Weight = 3
		}
	}
	n := map[int]int{}
	for range 800 {
		e := pickIn(t, f, cs)
		n[cs[indexOf(cs, e)].Weight]++
		f.Release(e)
	}
	if n[3] != 600 || n[1] != 200 {
		t.Errorf("800 idle picks over 50 candidates of weight 3 and 50 of weight 1: got %d and %d, want 600 and 200", n[3], n[1])
	}
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
	if _, err := d2.Sync(context.Background()); err != nil { // d2's last release has reached Redis
		t.Fatal(err)
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

// manyCands is n distinct candidates of weight 1, over three backends.
func manyCands(n int) []backend.Weighted {
	cs := make([]backend.Weighted, n)
	for i := range cs {
		cs[i] = backend.Weighted{URL: three[i%3] + "/e/" + strconv.Itoa(i), Weight: 1}
	}
	return cs
}

// netInput is how many bytes the Redis server has received so far (INFO
// stats total_net_input_bytes).
func netInput(t *testing.T, srv *redistest.Server) int64 {
	t.Helper()
	return infoStat(t, srv.Client, "total_net_input_bytes")
}

// A pick costs what changed, not the list: with 10,000 distinct
// candidates, the list travels to Redis once, and each pick and release
// after it sends Redis under 1 KiB. Picks still rotate through every
// candidate when nothing is in flight, and a window of 64 at and after the
// turn is weighed exactly.
func TestInflightCostDoesNotGrowWithTheList(t *testing.T) {
	ctx := context.Background()
	s, srv := newStore(t)
	f := s.NewInflight("d1", true)
	cs := manyCands(10000)
	first := pickIn(t, f, cs) // stores the candidate list
	f.Release(first)
	if _, err := f.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if n := f.UploadedForTest(); n != 1 {
		t.Errorf("candidate lists stored: got %d, want 1", n)
	}

	const picks = 200
	before := netInput(t, srv)
	var got []string
	for range picks {
		e := pickIn(t, f, cs)
		got = append(got, e)
		f.Release(e)
	}
	if _, err := f.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	perPick := float64(netInput(t, srv)-before) / picks
	t.Logf("Redis received %.0f bytes per pick and release over 10,000 candidates", perPick)
	if perPick > 1024 {
		t.Errorf("Redis received %.0f bytes per pick and release, want at most 1 KiB", perPick)
	}
	if n := f.UploadedForTest(); n != 1 {
		t.Errorf("candidate lists stored after %d picks: got %d, want still 1", picks, n)
	}
	// Idle: each pick is the next candidate after the last.
	for i := 1; i < len(got); i++ {
		if want := cs[(indexOf(cs, got[i-1])+1)%len(cs)].URL; got[i] != want {
			t.Fatalf("idle pick %d: got %q after %q, want %q, the next in turn", i, got[i], got[i-1], want)
		}
	}

	// Held picks in the window: the next pick skips them for an idle one.
	held := []string{pickIn(t, f, cs), pickIn(t, f, cs), pickIn(t, f, cs)}
	if e := pickIn(t, f, cs); slices.Contains(held, e) {
		t.Errorf("with %q held, the pick went to one of them, %q", held, e)
	}
}

func indexOf(cs []backend.Weighted, e string) int {
	return slices.IndexFunc(cs, func(c backend.Weighted) bool { return c.URL == e })
}

// Up to 64 distinct candidates, least-connections is exact: with every
// candidate but one busy, every pick finds the idle one, wherever it is.
func TestInflightIsExactUpTo64Candidates(t *testing.T) {
	s, _ := newStore(t)
	f := s.NewInflight("d1", true)
	other := s.NewInflight("d2", true)
	cs := manyCands(64)
	for i, c := range cs {
		if i != 41 {
			pickIn(t, other, []backend.Weighted{c}) // held by another dispatcher
		}
	}
	for i := range 5 {
		e := pickIn(t, f, cs)
		if e != cs[41].URL {
			t.Errorf("pick %d: got %q, want the one idle candidate %q", i, e, cs[41].URL)
		}
		f.Release(e)
	}
}

// Redis losing its data (FLUSHALL) loses every dispatcher's counts: the
// next call notices and sends them all again, as does the candidate list.
func TestInflightCountsComeBackAfterFLUSHALL(t *testing.T) {
	ctx := context.Background()
	s, srv := newStore(t)
	f := s.NewInflight("d1", true)
	pickIn(t, f, cands)
	pickIn(t, f, cands)
	if err := srv.Client.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	pickIn(t, f, cands) // finds its list and its counts gone
	want := f.Own()
	waitFor(t, "the counts are back", func() bool {
		got, err := s.InFlight(ctx)
		return err == nil && maps.Equal(got, want)
	})
}

// A call whose answer is lost (Redis ran the script, the reply never
// arrived) may have counted a pick that no request holds. The next call
// sends every count, and Redis forgets it.
func TestInflightForgetsAPickWhoseAnswerWasLost(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	addr, drop := lossyProxy(t, strings.TrimPrefix(srv.URL, "unix://"))
	rdb := redis.NewClient(&redis.Options{Network: "unix", Addr: addr, MaxRetries: -1, ContextTimeoutEnabled: true})
	t.Cleanup(func() { rdb.Close() })
	s := store.NewStore(rdb, "servers", nil)
	f := s.NewInflight("d1", true)
	f.SetTimeoutForTest(300 * time.Millisecond)
	held := pickIn(t, f, cands)

	drop.Store(true)
	if _, err := f.Pick(ctx, cands); err == nil {
		t.Fatal("a pick whose reply is lost: got no error, want a timeout")
	}
	drop.Store(false)
	direct := store.NewStore(srv.Client, "servers", nil)
	if got, _ := direct.InFlight(ctx); len(got) != 2 {
		t.Fatalf("Redis counts %v, want the held pick and the one whose reply was lost", got)
	}
	if _, err := f.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := direct.InFlight(ctx); !maps.Equal(got, map[string]int64{held: 1}) {
		t.Errorf("after the next call: got %v, want only the pick held, %v", got, map[string]int64{held: 1})
	}
}

// lossyProxy relays connections to the unix socket target; while drop is
// set, it passes what clients send and throws away what the server
// answers, as a network that loses replies would.
func lossyProxy(t *testing.T, target string) (addr string, drop *atomic.Bool) {
	t.Helper()
	dir, err := os.MkdirTemp("", "lossy")
	if err != nil {
		t.Fatal(err)
	}
	addr = filepath.Join(dir, "p.sock")
	ln, err := net.Listen("unix", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close(); os.RemoveAll(dir) })
	drop = &atomic.Bool{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("unix", target)
			if err != nil {
				c.Close()
				continue
			}
			go func() { io.Copy(s, c); s.Close() }()
			go func() {
				buf := make([]byte, 32<<10)
				for {
					n, err := s.Read(buf)
					if n > 0 && !drop.Load() {
						c.Write(buf[:n])
					}
					if err != nil {
						c.Close()
						return
					}
				}
			}()
		}
	}()
	return addr, drop
}
