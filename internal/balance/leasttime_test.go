package balance_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spreadlb/spread/internal/balance"
)

// shareLog records which backend each pick went to, and when.
type shareLog struct {
	mu    sync.Mutex
	picks []timedPick
}

type timedPick struct {
	at      time.Time
	backend string
}

func (s *shareLog) add(b string) {
	s.mu.Lock()
	s.picks = append(s.picks, timedPick{time.Now(), b})
	s.mu.Unlock()
}

// share is backend's share of the picks made in (from, to].
func (s *shareLog) share(backend string, from, to time.Time) (float64, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, of := 0, 0
	for _, p := range s.picks {
		if p.at.After(from) && !p.at.After(to) {
			of++
			if p.backend == backend {
				n++
			}
		}
	}
	if of == 0 {
		return 0, 0
	}
	return float64(n) / float64(of), of
}

// least-time, against a real Redis: with clients that each wait for their
// answer, a backend answering in 100 ms while the others answer in 5 ms
// gets under 10% of the requests; once it is fast again, its share is
// back near a third within LEAST_TIME_DECAY.
func TestLeastTimeAvoidsASlowBackendAndForgives(t *testing.T) {
	t.Parallel()
	s, _ := seededStore(t)
	pl := readPool(t, s)
	const decay = 1500 * time.Millisecond
	p := newStrategy(t, "least-time", map[string]string{"LEAST_TIME_DECAY": decay.String()}, env(s, pl, "d1"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if r, ok := p.(balance.Runner); ok {
		go r.Run(ctx)
	}
	slow := three[0]
	var slowNow atomic.Bool
	slowNow.Store(true)
	latency := func(b string) time.Duration {
		if b == slow && slowNow.Load() {
			return 100 * time.Millisecond
		}
		return 5 * time.Millisecond
	}
	var log shareLog
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				b, err := p.Pick(ctx, get())
				if err != nil {
					t.Error(err)
					return
				}
				u := b.URL.String()
				log.add(u)
				d := latency(u)
				time.Sleep(d)
				b.Done(balance.Result{Latency: d, Duration: d, Status: 200})
			}
		})
	}
	defer wg.Wait()
	defer cancel()

	// Slow: measured over 3 s, after a second to learn.
	start := time.Now()
	time.Sleep(4 * time.Second)
	got, n := log.share(slow, start.Add(time.Second), time.Now())
	t.Logf("slow: %.1f%% of %d requests", 100*got, n)
	if got >= 0.10 || n < 100 {
		t.Errorf("while it answers in 100 ms: the slow backend got %.1f%% of %d requests, want under 10%%", 100*got, n)
	}

	// Fast again: within LEAST_TIME_DECAY, some half second gives it
	// its third, give or take 10 points.
	fast := time.Now()
	slowNow.Store(false)
	best := 0.0
	for end := fast.Add(500 * time.Millisecond); !end.After(fast.Add(decay)); end = end.Add(100 * time.Millisecond) {
		time.Sleep(time.Until(end))
		got, _ := log.share(slow, end.Add(-500*time.Millisecond), end)
		best = max(best, got)
	}
	t.Logf("fast again: best half second within %s: %.1f%%", decay, 100*best)
	if best < 1.0/3-0.10 {
		t.Errorf("fast again: the best half second within LEAST_TIME_DECAY (%s) gave it %.1f%%, want at least %.1f%%", decay, 100*best, 100*(1.0/3-0.10))
	}
}
