package main

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

// service models the work behind GET /: at most capacity requests are in
// service at once (0 means no limit), the others wait in a FIFO queue, and
// each stays in service for latency plus a uniform random 0..jitter.
type service struct {
	latency, jitter time.Duration
	capacity        int

	// slots holds one token per request in service; nil when capacity is 0.
	// A request that finds it full blocks on the send, and the runtime
	// queues blocked senders in arrival order and hands a freed slot to the
	// first of them: that queue is the FIFO queue.
	slots chan struct{}

	// sleep waits d, or until ctx is done; tests replace it to end each
	// service time when they choose.
	sleep func(ctx context.Context, d time.Duration) error

	mu                        sync.Mutex // guards the counts, so that /stats sees each request once
	inService, queued, served int64
}

func newService(latency, jitter time.Duration, capacity int) *service {
	s := &service{latency: latency, jitter: jitter, capacity: capacity, sleep: sleepCtx}
	if capacity > 0 {
		s.slots = make(chan struct{}, capacity)
	}
	return s
}

// do waits for a slot, then for one service time. It returns ctx's error if
// the client leaves first: a request that leaves the queue frees its place,
// one that leaves in service frees its slot.
func (s *service) do(ctx context.Context) error {
	if s.slots != nil {
		s.move(nil, &s.queued)
		select {
		case s.slots <- struct{}{}:
		case <-ctx.Done():
			s.move(&s.queued, nil)
			return ctx.Err()
		}
		defer func() { <-s.slots }()
		s.move(&s.queued, &s.inService)
	} else {
		s.move(nil, &s.inService)
	}
	if err := s.sleep(ctx, s.serviceTime()); err != nil {
		s.move(&s.inService, nil)
		return err
	}
	// Counted before the answer is written, so that a client holding its
	// answer finds it counted in /stats.
	s.move(&s.inService, &s.served)
	return nil
}

// move takes one request from the count from and adds it to the count to, in
// one step; nil stands for outside.
func (s *service) move(from, to *int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if from != nil {
		*from--
	}
	if to != nil {
		*to++
	}
}

// serviceTime is latency plus a uniform random 0..jitter, both ends included.
func (s *service) serviceTime() time.Duration {
	if s.jitter <= 0 {
		return s.latency
	}
	return s.latency + time.Duration(rand.Int64N(int64(s.jitter)+1))
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

// stats is the body of GET /stats.
type stats struct {
	Backend         string  `json:"backend"`
	InService       int64   `json:"in_service"`
	Queued          int64   `json:"queued"`
	Served          int64   `json:"served"`
	Capacity        int     `json:"capacity"`
	LatencyMS       float64 `json:"latency_ms"`
	LatencyJitterMS float64 `json:"latency_jitter_ms"`
}

// stats returns the live counts, read together.
func (s *service) stats(name string) stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return stats{
		Backend:         name,
		InService:       s.inService,
		Queued:          s.queued,
		Served:          s.served,
		Capacity:        s.capacity,
		LatencyMS:       float64(s.latency) / float64(time.Millisecond),
		LatencyJitterMS: float64(s.jitter) / float64(time.Millisecond),
	}
}
