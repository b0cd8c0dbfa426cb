package balance

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spreadlb/spread/internal/pick"

	"github.com/spreadlb/spread/internal/pool"
)

// Failover keeps a strategy that needs Redis on the request path serving
// while Redis is down or hung.
//
// While Redis answers, picks go to the primary Picker (the shared rotation,
// say). The first pick that Redis fails (an error, or no answer within
// REDIS_TIMEOUT) puts the dispatcher in degraded mode: from then on picks go
// straight to the secondary Picker, which picks from the pool's last
// snapshot of the list (read whenever it changed while Redis answered), without
// waiting on Redis at all. So while Redis hangs, only the requests already
// waiting on it when it stopped answering wait REDIS_TIMEOUT; the rest are
// answered as fast as usual, and none gets an error. A background check
// pings Redis every recheck interval while degraded; the first answer ends
// degraded mode and the shared rotation resumes by itself.
//
// Degraded mode gives up the shared rotation, not correctness: the snapshot
// holds only entries that passed validation and were not marked down when it
// was read, and each dispatcher counts for itself until Redis is back.
type Failover struct {
	primary, secondary Picker
	redis              Redis
	pool               *pool.Pool
	recheck            time.Duration // how often to ping Redis while degraded
	timeout            time.Duration // how long one ping may take
	log                *slog.Logger

	degraded atomic.Bool
	wake     chan struct{} // tells run that degraded mode began
	mu       sync.Mutex
	since    time.Time // when degraded mode began
	reason   error     // the failure that began it
	picks    atomic.Uint64

	// onChange, if set, is called with true when degraded mode begins and
	// false when it ends (Env.OnDegraded).
	onChange func(degraded bool)
	// onError, if set, hears every failed call to Redis of a pick
	// (Env.OnRedisError).
	onError func(error)
}

// defaultRecheck is how often a degraded dispatcher asks whether Redis is
// back.
const defaultRecheck = 500 * time.Millisecond

// NewFailover returns primary, with secondary standing in while Redis
// fails. Its Run pings Redis while degraded.
func NewFailover(primary, secondary Picker, e Env) *Failover {
	timeout := e.Timeout
	if timeout <= 0 {
		timeout = time.Second
	}
	return &Failover{primary: primary, secondary: secondary, redis: e.Redis, pool: e.Pool,
		recheck: defaultRecheck, timeout: timeout, log: e.log(), onChange: e.OnDegraded,
		onError: e.OnRedisError, wake: make(chan struct{}, 1)}
}

// Pick asks the primary, or the secondary while degraded. A permission
// error (pick.ErrNoPermission) or a misconfiguration is returned as it is:
// Redis answered, so it is not down, and picking from the snapshot would
// hide a mistake that only its fix ends.
func (f *Failover) Pick(ctx context.Context, r *http.Request) (Backend, error) {
	if !f.degraded.Load() {
		b, err := f.primary.Pick(ctx, r)
		if f.onError != nil && (pick.Unavailable(err) || pick.Refused(err)) {
			f.onError(err)
		}
		if !pick.Unavailable(err) {
			return b, err
		}
		f.enter(err)
	}
	f.picks.Add(1)
	return f.secondary.Pick(ctx, r)
}

// Unwrap returns the Picker used while Redis answers.
func (f *Failover) Unwrap() Picker { return f.primary }

// Len is what /readyz asks: the list's length from Redis, or the
// snapshot's while degraded.
func (f *Failover) Len(ctx context.Context) (int64, error) {
	if !f.degraded.Load() {
		n, err := f.redis.Len(ctx)
		if !pick.Unavailable(err) {
			return n, err
		}
		f.enter(err)
	}
	n, ok := f.pool.Len()
	if !ok {
		return 0, fmt.Errorf("%w, and the list was never read", pick.ErrUnavailable)
	}
	return int64(n), nil
}

// Degraded says why the dispatcher is degraded, or "" when it is not.
func (f *Failover) Degraded() string {
	if !f.degraded.Load() {
		return ""
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n, _ := f.pool.Len()
	return fmt.Sprintf("redis unavailable for %s (%v); picking in this process from the last snapshot of the list (%d %s), not shared with other dispatchers",
		time.Since(f.since).Round(time.Second), f.reason, n, plural(int64(n), "entry", "entries"))
}

// enter begins degraded mode, once.
func (f *Failover) enter(err error) {
	f.mu.Lock()
	if f.degraded.Load() {
		f.mu.Unlock()
		return
	}
	f.since, f.reason = time.Now(), err
	f.degraded.Store(true)
	if f.onChange != nil {
		f.onChange(true)
	}
	f.mu.Unlock()
	n, _ := f.pool.Len()
	f.log.Error("degraded: redis unavailable; picking in this process from the last snapshot of the list until it answers again",
		"err", err, "snapshot_entries", n)
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// Run pings Redis while degraded and ends degraded mode when it answers,
// until ctx is done; it also runs the primary's background work, if any.
func (f *Failover) Run(ctx context.Context) {
	if r, ok := f.primary.(Runner); ok {
		done := make(chan struct{})
		go func() { r.Run(ctx); close(done) }()
		defer func() { <-done }()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.wake:
		}
		for f.degraded.Load() {
			select {
			case <-ctx.Done():
				return
			case <-time.After(f.recheck):
			}
			pctx, cancel := context.WithTimeout(ctx, f.timeout)
			err := f.redis.Ping(pctx)
			cancel()
			if err != nil && !pick.Refused(err) { // a refusal is an answer
				continue
			}
			f.mu.Lock()
			// Logged first, so that whoever sees the shared rotation back
			// finds the line in the log.
			f.log.Info("redis answers again: degraded mode over, the shared strategy resumes",
				"degraded_for", time.Since(f.since).Round(time.Millisecond), "local_picks", f.picks.Swap(0))
			f.degraded.Store(false)
			if f.onChange != nil {
				f.onChange(false)
			}
			f.mu.Unlock()
		}
	}
}

func plural(n int64, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
