package batch_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spreadlb/spread/internal/batch"
)

// gated is a Trip that doubles each request, and holds each round trip
// until the test releases it.
type gated struct {
	mu      sync.Mutex
	batches [][]int
	ctxs    []context.Context
	gates   []chan struct{}
}

func (g *gated) trip(ctx context.Context, qs []int) ([]int, error) {
	gate := make(chan struct{})
	g.mu.Lock()
	g.batches = append(g.batches, slices.Clone(qs))
	g.ctxs = append(g.ctxs, ctx)
	g.gates = append(g.gates, gate)
	g.mu.Unlock()
	select {
	case <-gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	out := make([]int, len(qs))
	for i, q := range qs {
		out[i] = 2 * q
	}
	return out, nil
}

// trips is how many round trips have started.
func (g *gated) trips() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.batches)
}

// release lets round trip i (from 0) end, once it has started.
func (g *gated) release(t *testing.T, i int) {
	t.Helper()
	waitFor(t, "the round trip to start", func() bool { return g.trips() > i })
	g.mu.Lock()
	close(g.gates[i])
	g.mu.Unlock()
}

func (g *gated) sent() [][]int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.batches)
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

type answer struct {
	r   int
	err error
}

func do(ctx context.Context, b *batch.Batcher[int, int], q int) <-chan answer {
	c := make(chan answer, 1)
	go func() { r, err := b.Do(ctx, q); c <- answer{r, err} }()
	return c
}

func expect(t *testing.T, what string, c <-chan answer, r int) {
	t.Helper()
	if a := <-c; a.r != r || a.err != nil {
		t.Errorf("%s: got (%d, %v), want (%d, nil)", what, a.r, a.err, r)
	}
}

func expectGaveUp(t *testing.T, what string, c <-chan answer) {
	t.Helper()
	if a := <-c; !errors.Is(a.err, context.Canceled) {
		t.Errorf("%s: got (%d, %v), want context.Canceled", what, a.r, a.err)
	}
}

// recorder collects what Abandoned hears.
type recorder struct {
	mu    sync.Mutex
	heard map[int]int
}

func (r *recorder) abandoned(q, a int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.heard == nil {
		r.heard = map[int]int{}
	}
	r.heard[q] = a
}

func (r *recorder) got() map[int]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps(r.heard)
}

func maps(m map[int]int) map[int]int {
	out := map[int]int{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

// One caller alone goes at once; callers that come while its round trip is
// in flight share the next one, in arrival order, and each gets its own
// answer.
func TestQueuedRequestsShareOneRoundTrip(t *testing.T) {
	g := &gated{}
	b := &batch.Batcher[int, int]{Trip: g.trip, Timeout: time.Minute}
	first := do(context.Background(), b, 1)
	waitFor(t, "the first round trip", func() bool { return g.trips() == 1 })
	var rest []<-chan answer
	for q := 2; q <= 10; q++ {
		rest = append(rest, do(context.Background(), b, q))
		waitFor(t, "the request to queue", func() bool { return b.Queued() == q-1 })
	}
	g.release(t, 0)
	g.release(t, 1)
	expect(t, "request 1", first, 2)
	for i, c := range rest {
		expect(t, "a queued request", c, 2*(i+2))
	}
	want := [][]int{{1}, {2, 3, 4, 5, 6, 7, 8, 9, 10}}
	if got := g.sent(); !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("round trips: got %v, want %v", got, want)
	}
	if s := b.Stats(); s.RoundTrips != 2 || s.Requests != 10 || s.MaxBatch != 9 {
		t.Errorf("stats: got %+v, want 2 round trips, 10 requests, largest batch 9", s)
	}
	if b.Busy() {
		t.Error("busy after every answer, want idle")
	}
}

// A caller that gives up while queued leaves the queue, and nothing is
// sent for it. One that gives up while its batch is in flight returns
// before the round trip ends, and its answer goes to Abandoned. A leader
// sees its round trip through.
func TestCallersThatGiveUp(t *testing.T) {
	g := &gated{}
	var rec recorder
	b := &batch.Batcher[int, int]{Trip: g.trip, Timeout: time.Minute, Abandoned: rec.abandoned}

	first := do(context.Background(), b, 1)
	waitFor(t, "the first round trip", func() bool { return g.trips() == 1 })
	ctx2, cancel2 := context.WithCancel(context.Background())
	leaves := do(ctx2, b, 2)
	waitFor(t, "2 to queue", func() bool { return b.Queued() == 1 })
	cancel2()
	expectGaveUp(t, "2, queued", leaves)
	if n := b.Queued(); n != 0 {
		t.Errorf("queued after 2 gave up: got %d, want 0", n)
	}

	// 3 and 4 queue behind 1; 3 will lead them, and 4 gives up while
	// their round trip is held.
	ctx4, cancel4 := context.WithCancel(context.Background())
	three := do(context.Background(), b, 3)
	waitFor(t, "3 to queue", func() bool { return b.Queued() == 1 })
	four := do(ctx4, b, 4)
	waitFor(t, "4 to queue", func() bool { return b.Queued() == 2 })
	g.release(t, 0)
	expect(t, "1", first, 2)
	waitFor(t, "3 and 4's round trip", func() bool { return g.trips() == 2 })
	cancel4()
	expectGaveUp(t, "4, in flight", four)

	// 5 and 6 queue behind 3 and 4, and 5 leads them. 5's caller goes
	// while its round trip is in flight: the leader still sees the round
	// trip through (bounded by its deadline), since 6 needs it.
	ctx5, cancel5 := context.WithCancel(context.Background())
	five := do(ctx5, b, 5)
	waitFor(t, "5 to queue", func() bool { return b.Queued() == 1 })
	six := do(context.Background(), b, 6)
	waitFor(t, "6 to queue", func() bool { return b.Queued() == 2 })
	g.release(t, 1) // 3 and 4's round trip ends: 5 is woken to lead 5 and 6
	expect(t, "3", three, 6)
	waitFor(t, "5 and 6's round trip", func() bool { return g.trips() == 3 })
	cancel5()
	g.release(t, 2)
	expect(t, "5, the leader", five, 10)
	expect(t, "6", six, 12)

	want := [][]int{{1}, {3, 4}, {5, 6}}
	if got := g.sent(); !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("round trips: got %v, want %v (nothing for 2)", got, want)
	}
	if got := rec.got(); len(got) != 1 || got[4] != 8 {
		t.Errorf("Abandoned heard %v, want 4→8 alone", got)
	}
}

// A round trip ends by its leader's deadline when that comes before
// Timeout, so that no caller waits on it past its own.
func TestRoundTripEndsByTheLeadersDeadline(t *testing.T) {
	g := &gated{}
	b := &batch.Batcher[int, int]{Trip: g.trip, Timeout: time.Hour}
	leaderDeadline := time.Now().Add(time.Minute)
	ctx, cancel := context.WithDeadline(context.Background(), leaderDeadline)
	defer cancel()
	c := do(ctx, b, 1)
	waitFor(t, "the round trip", func() bool { return g.trips() == 1 })
	g.mu.Lock()
	got, ok := g.ctxs[0].Deadline()
	g.mu.Unlock()
	if !ok || !got.Equal(leaderDeadline) {
		t.Errorf("round trip's deadline: got %v (%v), want the leader's %v", got, ok, leaderDeadline)
	}
	g.release(t, 0)
	expect(t, "1", c, 2)

	// Without a deadline of the caller's, Timeout bounds it.
	b2 := &batch.Batcher[int, int]{Trip: g.trip, Timeout: time.Hour}
	before := time.Now()
	c2 := do(context.Background(), b2, 2)
	waitFor(t, "the round trip", func() bool { return g.trips() == 2 })
	g.mu.Lock()
	got, ok = g.ctxs[1].Deadline()
	g.mu.Unlock()
	if !ok || got.Before(before.Add(time.Hour)) || got.After(time.Now().Add(time.Hour)) {
		t.Errorf("round trip's deadline: got %v (%v), want an hour from its start", got, ok)
	}
	g.release(t, 1)
	expect(t, "2", c2, 4)
}

// An error fails the whole batch; fewer answers than requests fail the
// rest with Short.
func TestErrorsAndShortAnswers(t *testing.T) {
	boom := errors.New("boom")
	empty := errors.New("empty")
	for _, c := range []struct {
		name  string
		trip  func(context.Context, []int) ([]int, error)
		want1 error
	}{
		{"error", func(context.Context, []int) ([]int, error) { return nil, boom }, boom},
		{"short", func(context.Context, []int) ([]int, error) { return nil, nil }, empty},
	} {
		b := &batch.Batcher[int, int]{Trip: c.trip, Short: empty}
		if _, err := b.Do(context.Background(), 1); !errors.Is(err, c.want1) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want1)
		}
	}
}

// Kick makes a round trip with nothing queued, and, while one is in
// flight, one more after it.
func TestKick(t *testing.T) {
	g := &gated{}
	b := &batch.Batcher[int, int]{Trip: g.trip, Timeout: time.Minute}
	b.Kick()
	g.release(t, 0)
	waitFor(t, "idle", func() bool { return !b.Busy() })

	c := do(context.Background(), b, 1)
	waitFor(t, "1's round trip", func() bool { return g.trips() == 2 })
	b.Kick()
	b.Kick() // one more round trip, not two
	g.release(t, 1)
	expect(t, "1", c, 2)
	g.release(t, 2)
	waitFor(t, "idle", func() bool { return !b.Busy() })
	want := [][]int{{}, {1}, {}}
	if got := g.sent(); !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("round trips: got %v, want %v", got, want)
	}
}

// Many callers at once each get their own answer, and every request is
// sent exactly once.
func TestConcurrentCallers(t *testing.T) {
	var mu sync.Mutex
	sent := map[int]int{}
	b := &batch.Batcher[int, int]{Trip: func(_ context.Context, qs []int) ([]int, error) {
		mu.Lock()
		for _, q := range qs {
			sent[q]++
		}
		mu.Unlock()
		time.Sleep(100 * time.Microsecond)
		out := make([]int, len(qs))
		for i, q := range qs {
			out[i] = 2 * q
		}
		return out, nil
	}}
	var wg sync.WaitGroup
	for q := range 2000 {
		wg.Go(func() {
			if r, err := b.Do(context.Background(), q); r != 2*q || err != nil {
				t.Errorf("request %d: got (%d, %v), want (%d, nil)", q, r, err, 2*q)
			}
		})
	}
	wg.Wait()
	if len(sent) != 2000 {
		t.Errorf("distinct requests sent: got %d, want 2000", len(sent))
	}
	for q, n := range sent {
		if n != 1 {
			t.Errorf("request %d sent %d times, want once", q, n)
		}
	}
	if s := b.Stats(); s.Requests != 2000 || s.RoundTrips >= 2000 {
		t.Errorf("stats: got %+v, want 2000 requests in fewer round trips", s)
	}
}

// Callers that give up at random moments, many at once: every request
// sent is answered to its caller or heard by Abandoned, exactly once, and
// the Batcher ends idle.
func TestCallersGivingUpAtRandom(t *testing.T) {
	var mu sync.Mutex
	sent := map[int]int{}
	var rec recorder
	b := &batch.Batcher[int, int]{Abandoned: rec.abandoned, Trip: func(ctx context.Context, qs []int) ([]int, error) {
		mu.Lock()
		for _, q := range qs {
			sent[q]++
		}
		mu.Unlock()
		time.Sleep(200 * time.Microsecond)
		out := make([]int, len(qs))
		for i, q := range qs {
			out[i] = 2 * q
		}
		return out, nil
	}}
	var wg sync.WaitGroup
	var amu sync.Mutex
	answered := map[int]bool{}
	for q := range 3000 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(q%7)*100*time.Microsecond)
			defer cancel()
			r, err := b.Do(ctx, q)
			switch {
			case err == nil && r == 2*q:
				amu.Lock()
				answered[q] = true
				amu.Unlock()
			case err == nil:
				t.Errorf("request %d: got %d, want %d", q, r, 2*q)
			case !errors.Is(err, context.DeadlineExceeded):
				t.Errorf("request %d: got %v, want an answer or its deadline", q, err)
			}
		})
	}
	wg.Wait()
	waitFor(t, "idle", func() bool { return !b.Busy() })
	heard := rec.got()
	mu.Lock()
	defer mu.Unlock()
	for q, n := range sent {
		_, ab := heard[q]
		if n != 1 || answered[q] == ab {
			t.Errorf("request %d: sent %d times, answered %v, abandoned %v; want sent once, and one of the two", q, n, answered[q], ab)
		}
	}
	for q := range answered {
		if sent[q] != 1 {
			t.Errorf("request %d answered without being sent", q)
		}
	}
}
