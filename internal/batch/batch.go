// Package batch lets concurrent callers share round trips to a server
// while each keeps its own request and its own answer.
//
// A caller that finds no round trip in flight makes one at once, for
// itself alone: an idle Batcher adds no wait. Callers that arrive
// meanwhile queue up. When the round trip ends, the whole queue becomes the
// next batch, and its first caller is woken to lead it: it makes one round
// trip for all of them and hands each its own answer. So under load there
// is one round trip per batch instead of one per request, and each
// goroutine leads at most one batch, so no caller is held back serving
// others'.
//
// A caller waits at most until its context's deadline. One that gives up
// while queued leaves the queue, and nothing is asked for it; one that
// gives up while its batch is in flight returns at once, and the answer
// that comes for it later goes to Abandoned (a strategy gives back the
// count it took, say). A leader sees its round trip through, since its
// batch needs it: a round trip ends by the earlier of Timeout and the
// deadline of the first caller in it still waiting, normally its leader's,
// who arrived first. So no caller waits much past its own deadline.
//
// Package store shares the rotation's steps and least-conn's calls this
// way.
package batch

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Batcher shares round trips among concurrent calls of Do. Set its fields
// before the first call; its zero value is not usable without Trip.
type Batcher[Q, R any] struct {
	// Trip makes one round trip for a batch of requests and returns their
	// answers in order. It must not keep batch, which is reused. An error fails every request of the batch; fewer
	// answers than requests fail the rest with Short.
	Trip func(ctx context.Context, batch []Q) ([]R, error)
	// Abandoned, if set, hears an answer whose caller gave up waiting
	// after its request was sent.
	Abandoned func(q Q, r R)
	// Timeout bounds one round trip; 0 means DefaultTimeout.
	Timeout time.Duration
	// Short is the error of a request that a round trip left without an
	// answer; nil means ErrShort.
	Short error

	mu       sync.Mutex
	busy     bool // a round trip is in flight, or about to be
	again    bool // Kick came while busy: make one more round trip
	queue    []*waiter[Q, R]
	solo     [1]*waiter[Q, R] // the batch of a caller that goes alone
	waiters  sync.Pool        // waiters to reuse
	qs       []Q              // the requests of the round trip in flight, reused
	trips    uint64           // round trips made
	requests uint64           // requests sent
	maxBatch int              // most requests in one round trip
}

// DefaultTimeout bounds a round trip when Batcher.Timeout is 0.
const DefaultTimeout = time.Second

// ErrShort is the default Short error.
var ErrShort = errors.New("the round trip answered fewer requests than were sent")

// waiter states.
const (
	waiting   int32 = iota
	answered        // the answer is set and sent on done
	abandoned       // the caller left; the answer goes to Abandoned
)

// waiter is one request, waiting. Waiters are reused (Batcher.done), so
// done is signalled by a send, not closed.
type waiter[Q, R any] struct {
	q        Q
	deadline time.Time // the caller's deadline, zero if none
	done     chan struct{}
	state    atomic.Int32
	r        R
	err      error
	batch    []*waiter[Q, R] // set when this waiter is woken to lead it
}

// Do sends q in the next round trip, sharing it with the requests around
// it, and returns q's answer, or ctx's error if ctx is done first.
func (b *Batcher[Q, R]) Do(ctx context.Context, q Q) (R, error) {
	me, _ := b.waiters.Get().(*waiter[Q, R])
	if me == nil {
		me = &waiter[Q, R]{done: make(chan struct{}, 1)}
	}
	me.q = q
	me.deadline, _ = ctx.Deadline()
	b.mu.Lock()
	if !b.busy {
		// Nothing in flight: go now, alone. One round trip is in flight
		// at a time, so its batch can be the Batcher's own.
		b.busy = true
		b.solo[0] = me
		b.mu.Unlock()
		b.lead(ctx, b.solo[:])
		return b.done(me)
	}
	b.queue = append(b.queue, me)
	b.mu.Unlock()

	select {
	case <-me.done:
	case <-ctx.Done():
		b.mu.Lock()
		for i, w := range b.queue {
			if w == me {
				// Still queued: leave, and nothing is sent for q.
				b.queue = append(b.queue[:i], b.queue[i+1:]...)
				b.mu.Unlock()
				var zero R
				return zero, ctx.Err()
			}
		}
		if batch := me.batch; batch != nil {
			// Woken to lead a batch: it still needs a leader, and this
			// caller cannot wait. A goroutine of its own leads it, and
			// this caller's answer goes to Abandoned.
			me.state.Store(abandoned)
			b.mu.Unlock()
			go b.lead(context.WithoutCancel(ctx), batch)
			var zero R
			return zero, ctx.Err()
		}
		b.mu.Unlock()
		if me.state.CompareAndSwap(waiting, abandoned) {
			// In a batch in flight: its answer goes to Abandoned.
			var zero R
			return zero, ctx.Err()
		}
		<-me.done // answered meanwhile
	}
	if me.batch != nil {
		b.lead(ctx, me.batch)
	}
	return b.done(me)
}

// done returns w's answer and puts w back for another call: nothing else
// refers to a waiter that was answered, or that led its batch, once its
// caller has it. (One whose caller gave up is left to the garbage
// collector: its batch still holds it.)
func (b *Batcher[Q, R]) done(w *waiter[Q, R]) (R, error) {
	r, err := w.r, w.err
	var zeroQ Q
	var zeroR R
	w.q, w.r, w.err, w.batch, w.deadline = zeroQ, zeroR, nil, nil, time.Time{}
	w.state.Store(waiting)
	b.waiters.Put(w)
	return r, err
}

// Kick asks for a round trip soon, with whatever is queued by then, even
// nothing, and does not wait for it: a change that Trip sends with every
// round trip (a count released, say) reaches the server without a request
// of its own.
func (b *Batcher[Q, R]) Kick() {
	b.mu.Lock()
	if b.busy {
		b.again = true
		b.mu.Unlock()
		return
	}
	b.busy = true
	b.mu.Unlock()
	go b.lead(context.Background(), nil)
}

// lead makes the round trip for batch (whose first element, if any, is
// the caller), hands out the answers, then passes the queue that built up
// meanwhile to its first waiter, or marks the Batcher idle. The caller set
// busy.
func (b *Batcher[Q, R]) lead(ctx context.Context, batch []*waiter[Q, R]) {
	for {
		b.trip(ctx, batch)

		b.mu.Lock()
		next := b.queue
		b.queue = nil
		again := b.again
		b.again = false
		if len(next) > 0 {
			// The next batch's first waiter leads it (set under mu, where
			// a waiter that gives up looks for it); Kick's wish goes
			// with it.
			next[0].batch = next
		} else if !again {
			b.busy = false
		}
		b.mu.Unlock()
		switch {
		case len(next) > 0:
			next[0].done <- struct{}{}
			return
		case !again:
			return
		case len(batch) > 0 && batch[0].state.Load() != abandoned:
			// This caller's answer is in: a goroutine of its own makes
			// the round trip that Kick asked for.
			go b.lead(context.WithoutCancel(ctx), nil)
			return
		}
		batch = nil
	}
}

// trip makes one round trip for batch and delivers each answer.
func (b *Batcher[Q, R]) trip(ctx context.Context, batch []*waiter[Q, R]) {
	timeout := b.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	// The earliest deadline of a caller still waiting: the leader's, unless
	// it gave up.
	deadline := time.Now().Add(timeout)
	for _, w := range batch {
		if w.state.Load() == waiting && !w.deadline.IsZero() {
			if w.deadline.Before(deadline) {
				deadline = w.deadline
			}
			break
		}
	}
	tctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
	qs := b.qs[:0]
	for _, w := range batch {
		qs = append(qs, w.q)
	}
	rs, err := b.Trip(tctx, qs)
	cancel()
	clear(qs) // let the requests go
	b.qs = qs[:0]

	b.mu.Lock()
	b.trips++
	b.requests += uint64(len(batch))
	b.maxBatch = max(b.maxBatch, len(batch))
	b.mu.Unlock()

	short := b.Short
	if short == nil {
		short = ErrShort
	}
	for i, w := range batch {
		switch {
		case err != nil:
			w.err = err
		case i < len(rs):
			w.r = rs[i]
		default:
			w.err = short
		}
		if i == 0 {
			continue // the leader reads its own answer when lead returns
		}
		if w.state.CompareAndSwap(waiting, answered) {
			w.done <- struct{}{}
		} else if w.err == nil && b.Abandoned != nil {
			b.Abandoned(w.q, w.r)
		}
	}
	if len(batch) > 0 && batch[0].state.Load() == abandoned && batch[0].err == nil && b.Abandoned != nil {
		b.Abandoned(batch[0].q, batch[0].r)
	}
}

// Stats says how requests were grouped into round trips so far.
type Stats struct {
	RoundTrips uint64 // round trips made
	Requests   uint64 // requests sent
	MaxBatch   int    // most requests in one round trip
}

// Stats reports the round trips so far.
func (b *Batcher[Q, R]) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return Stats{RoundTrips: b.trips, Requests: b.requests, MaxBatch: b.maxBatch}
}

// Queued is how many requests wait for the round trip in flight.
func (b *Batcher[Q, R]) Queued() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.queue)
}

// Busy reports whether a round trip is in flight.
func (b *Batcher[Q, R]) Busy() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.busy
}
