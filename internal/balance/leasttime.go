package balance

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/spreadlb/spread/internal/app"
	"github.com/spreadlb/spread/internal/backend"
	"github.com/spreadlb/spread/internal/pool"
)

// least-time: Peak EWMA, the latency-aware balancer of Finagle and Linkerd.
// Each backend's cost is a moving average of its response times, raised at
// once to any answer slower than it (the peak) and decaying toward the
// faster answers, and toward zero while the backend is not heard from, so
// that a backend that was slow is tried again; multiplied by its requests
// in flight plus one. Each request compares two random eligible backends
// and goes to the cheaper (p2c over that cost).
//
// The response times are learned by each dispatcher from its own answers
// (Done: the time to the response headers; a failed request counts as
// failedLatency, so that a backend that fails fast does not look fast). The
// requests in flight are the shared ones, as p2c counts them: the other
// dispatchers' as last read from Redis, this one's exact. A backend never
// measured costs the median of the measured ones, so that a newcomer is
// neither starved nor flooded. Proxy mode only.
//
// LEAST_TIME_DECAY is how long a slow answer weighs: the average's time
// constant is a fifth of it, so a peak weighs under 1% of what it did after
// LEAST_TIME_DECAY, and a backend that is fast again has its share back
// within it (TestLeastTimeAvoidsASlowBackendAndForgives). Finagle's and
// Linkerd's "decay time" is the time constant itself: their 10 s is our
// 50 s.

// LeastTimeDecaySetting is LEAST_TIME_DECAY.
var LeastTimeDecaySetting = app.Setting{Name: "LEAST_TIME_DECAY", Default: "10s",
	Usage: "STRATEGY=least-time: how long a slow answer weighs on a backend's cost: after it, a peak weighs under 1% of what it did, and a backend that is fast again has its share back"}

// failedLatency is the response time a failed request counts as.
const failedLatency = time.Second

func init() {
	Register(Strategy{
		Name:     "least-time",
		Usage:    "MODE=proxy: Peak EWMA: the cheaper of two random backends by response time × (requests in flight + 1)",
		Modes:    []Mode{Proxy},
		Settings: []app.Setting{LeastTimeDecaySetting},
		Configure: func(getenv func(string) string, _ Mode) (Plan, error) {
			v := LeastTimeDecaySetting.Get(getenv)
			decay, err := time.ParseDuration(v)
			if err != nil || decay <= 0 {
				return Plan{}, fmt.Errorf("%s=%q: want a positive duration such as 10s or 500ms", LeastTimeDecaySetting.Name, v)
			}
			return Plan{Needs: []Need{NeedInflight}, New: func(e Env) (Picker, error) {
				return NewLeastTime(e.Pool, e.Inflight(), decay), nil
			}}, nil
		},
	})
}

// LeastTime picks the cheaper of two random backends by Peak EWMA cost.
type LeastTime struct {
	cands *pool.View[*candidates]
	in    Counts
	tau   float64          // the average's time constant, in seconds
	now   func() time.Time // time.Now; tests set another

	mu  sync.Mutex
	est map[string]*estimate // by entry: its response time, as learned
}

// estimate is one backend's moving average of response times.
type estimate struct {
	secs float64   // the average, in seconds, as of at
	at   time.Time // when it was last updated
}

// NewLeastTime returns a Peak EWMA pick over p, counting in in, whose
// peaks fade over decay.
func NewLeastTime(p *pool.Pool, in Counts, decay time.Duration) *LeastTime {
	in.SetEager(false)
	return &LeastTime{cands: pool.NewView(p, candidatesOf), in: in, tau: decay.Seconds() / 5,
		now: time.Now, est: map[string]*estimate{}}
}

// Pick compares two random backends and counts the request to the cheaper.
func (l *LeastTime) Pick(context.Context, *http.Request) (Backend, error) {
	now := l.now()
	return pickOfTwo(l.cands, l.in, l, func(a, b backend.Weighted) bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.cost(a.URL, a.Weight, now) < l.cost(b.URL, b.Weight, now)
	})
}

// cost is entry's response time as of now, times its requests in flight
// plus one, per unit of weight. The caller holds mu.
func (l *LeastTime) cost(entry string, weight int, now time.Time) float64 {
	secs, ok := l.current(entry, now)
	if !ok {
		secs = l.median(now)
	}
	return secs * float64(l.in.Load(entry)+1) / float64(max(weight, 1))
}

// current is entry's average decayed to now, and whether it was ever
// measured. The caller holds mu.
func (l *LeastTime) current(entry string, now time.Time) (float64, bool) {
	e, ok := l.est[entry]
	if !ok {
		return 0, false
	}
	return e.secs * math.Exp(-now.Sub(e.at).Seconds()/l.tau), true
}

// median is the median of the measured candidates' averages now, 0 if
// none is measured. The caller holds mu.
func (l *LeastTime) median(now time.Time) float64 {
	c, err := l.cands.Get()
	if err != nil {
		return 0
	}
	var v []float64
	for _, w := range c.list {
		if s, ok := l.current(w.URL, now); ok {
			v = append(v, s)
		}
	}
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	return v[len(v)/2]
}

// Done releases the request's count and learns its response time: a
// slower answer than the average raises it at once; a faster one pulls it
// down, the more the longer since the last.
func (l *LeastTime) Done(b Backend, r Result) {
	l.in.Release(b.Entry)
	if errors.Is(r.Err, ErrNotSent) {
		return
	}
	rtt := r.Latency.Seconds()
	if r.Failed() {
		rtt = max(rtt, failedLatency.Seconds())
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.est[b.Entry]
	if !ok {
		if len(l.est) >= maxEstimates {
			clear(l.est) // entries come from the list; bound them anyway
		}
		l.est[b.Entry] = &estimate{secs: rtt, at: now}
		return
	}
	w := math.Exp(-now.Sub(e.at).Seconds() / l.tau)
	if cur := e.secs * w; rtt > cur {
		e.secs = rtt
	} else {
		e.secs = e.secs*w + rtt*(1-w)
	}
	e.at = now
}

// maxEstimates bounds the backends a LeastTime remembers.
const maxEstimates = 4096

// Run sends this dispatcher's counts and reads the others' every
// P2CRefresh until ctx is done.
func (l *LeastTime) Run(ctx context.Context) { syncEvery(ctx, l.in, P2CRefresh) }

// InFlight returns the requests in flight by entry, every dispatcher's, as
// last read.
func (l *LeastTime) InFlight() map[string]int64 { return l.in.Shared() }
