package main

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// knobs are the settings of the work behind GET /. They start from the
// environment (LATENCY, LATENCY_JITTER, CAPACITY, FAIL_RATE) and, with
// CONTROL=1, POST /control changes them while requests flow.
type knobs struct {
	latency, jitter time.Duration
	capacity        int     // 0: no limit
	failRate        float64 // 0..1: the fraction of GET / answered 500
	down            bool    // refuse everything: see service.do and trafficPort
}

// The ways a GET / can end other than served.
var (
	// errFailed: the request drew a failure (FAIL_RATE, fail_rate).
	errFailed = errors.New("failed on purpose")
	// errDown: the backend is down, or went down while the request waited
	// or was in service.
	errDown = errors.New("down")
)

// service models the work behind GET /: at most capacity requests are in
// service at once (0 means no limit), the others wait in a FIFO queue, and
// each stays in service for latency plus a uniform random 0..jitter. A
// failRate fraction of the requests fails at once, before the queue, as a
// backend whose dependency is gone answers (Envoy's fault injection aborts
// the same way). Every knob may change while requests flow:
//
//   - latency and jitter apply to the requests that enter service after the
//     change; those in service keep the service time they drew;
//   - a larger capacity (or 0) lets the first of the queue in at once; a
//     smaller one lets the requests in service finish, and the queue waits
//     until fewer than the new capacity are in service;
//   - down answers every request queued or in service 503 at once, and
//     every new one until it is set back.
type service struct {
	mu    sync.Mutex // guards everything below, so that /stats sees each request once
	knobs knobs
	rng   *rand.Rand // the jitter and the failures; tests seed it

	inService int64
	queue     []*waiter // in arrival order
	served    int64     // answered 200
	failed    int64     // answered 500 (failRate) or 503 (down)

	// downCtx is canceled when the backend goes down, which ends every
	// request queued or in service; going up again makes a new one.
	downCtx    context.Context
	downCancel context.CancelFunc

	// sleep waits d, or until ctx is done; tests replace it to end each
	// service time when they choose.
	sleep func(ctx context.Context, d time.Duration) error
}

// waiter is a request in the queue; ready is closed when it is let into
// service.
type waiter struct {
	ready    chan struct{}
	admitted bool
}

func newService(k knobs) *service {
	s := &service{knobs: k, rng: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())), sleep: sleepCtx}
	s.downCtx, s.downCancel = context.WithCancel(context.Background())
	if k.down {
		s.downCancel()
	}
	return s
}

// do serves one GET /: it draws a failure, waits for a place in service,
// then for one service time. It returns nil when served, errFailed or
// errDown, or ctx's error if the client leaves first: a request that leaves
// the queue frees its place, one that leaves in service frees its slot.
func (s *service) do(ctx context.Context) error {
	s.mu.Lock()
	if s.knobs.down {
		s.failed++
		s.mu.Unlock()
		return errDown
	}
	if s.knobs.failRate > 0 && s.rng.Float64() < s.knobs.failRate {
		s.failed++
		s.mu.Unlock()
		return errFailed
	}
	down := s.downCtx
	var w *waiter
	if s.hasRoom() && len(s.queue) == 0 {
		s.inService++
	} else {
		w = &waiter{ready: make(chan struct{})}
		s.queue = append(s.queue, w)
	}
	s.mu.Unlock()

	// The request ends early when its client leaves or the backend goes
	// down.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(down, cancel)()

	if w != nil {
		select {
		case <-w.ready:
		case <-ctx.Done():
			s.mu.Lock()
			defer s.mu.Unlock()
			if w.admitted { // let in at the moment it left
				s.inService--
				s.admit()
			} else {
				s.queue = slices.DeleteFunc(s.queue, func(x *waiter) bool { return x == w })
			}
			return s.endedEarly(ctx, down)
		}
	}
	err := s.sleep(ctx, s.serviceTime())
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inService--
	s.admit()
	if err != nil {
		return s.endedEarly(ctx, down)
	}
	// Counted before the answer is written, so that a client holding its
	// answer finds it counted in /stats.
	s.served++
	return nil
}

// endedEarly counts a request that ended before its answer and says why:
// errDown if the backend went down, else its client's error. s.mu is held.
func (s *service) endedEarly(ctx, down context.Context) error {
	if down.Err() != nil {
		s.failed++
		return errDown
	}
	return ctx.Err()
}

// hasRoom says whether one more request may enter service. s.mu is held.
func (s *service) hasRoom() bool {
	return s.knobs.capacity == 0 || s.inService < int64(s.knobs.capacity)
}

// admit lets the first of the queue into service while there is room and
// the backend is up (going down empties the queue). s.mu is held.
func (s *service) admit() {
	for !s.knobs.down && len(s.queue) > 0 && s.hasRoom() {
		w := s.queue[0]
		s.queue[0] = nil
		s.queue = s.queue[1:]
		w.admitted = true
		close(w.ready)
		s.inService++
	}
}

// set changes the knobs in one step; see service for what each change does
// to the requests already there.
func (s *service) set(k knobs) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case k.down && !s.knobs.down:
		s.downCancel()
	case !k.down && s.knobs.down:
		s.downCtx, s.downCancel = context.WithCancel(context.Background())
	}
	s.knobs = k
	s.admit()
}

// current returns the knobs as they are.
func (s *service) current() knobs {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.knobs
}

// isDown says whether the backend is down.
func (s *service) isDown() bool { return s.current().down }

// serviceTime is latency plus a uniform random 0..jitter, both ends included.
func (s *service) serviceTime() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.knobs.jitter <= 0 {
		return s.knobs.latency
	}
	return s.knobs.latency + time.Duration(s.rng.Int64N(int64(s.knobs.jitter)+1))
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stats is the body of GET /stats, and of POST /control's answer.
type stats struct {
	Backend         string  `json:"backend"`
	InService       int64   `json:"in_service"`
	Queued          int64   `json:"queued"`
	Served          int64   `json:"served"`
	Failed          int64   `json:"failed"`
	Capacity        int     `json:"capacity"`
	LatencyMS       float64 `json:"latency_ms"`
	LatencyJitterMS float64 `json:"latency_jitter_ms"`
	FailRate        float64 `json:"fail_rate"`
	Down            bool    `json:"down"`
}

// stats returns the live counts and the knobs, read together.
func (s *service) stats(name string) stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return stats{
		Backend:         name,
		InService:       s.inService,
		Queued:          int64(len(s.queue)),
		Served:          s.served,
		Failed:          s.failed,
		Capacity:        s.knobs.capacity,
		LatencyMS:       float64(s.knobs.latency) / float64(time.Millisecond),
		LatencyJitterMS: float64(s.knobs.jitter) / float64(time.Millisecond),
		FailRate:        s.knobs.failRate,
		Down:            s.knobs.down,
	}
}
