package main

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/spreadlb/spread/internal/balance"
	"github.com/spreadlb/spread/internal/pool"
	"github.com/spreadlb/spread/internal/store"
)

// Outlier ejection (passive health), in MODE=proxy. The active health
// checks probe /healthz every HEALTH_INTERVAL; a backend that answers its
// probes but fails the requests themselves (a 5xx, its database gone)
// stays in their rotation. The ejector watches how each proxied request
// ends (balance.Result, as the proxy reports it to Backend.Done) and counts
// each entry's failures in a row: a 5xx, a connect error or a timeout; any
// other answer starts the count again, and a request whose client left
// counts for nothing. At EJECT_AFTER it takes the entry out of this
// dispatcher's pool at once, and ejects it for every dispatcher on the list
// through Redis (store.Eject), which decides how long (EJECT_TIME × the
// times ejected, up to 5 min) and refuses past EJECT_MAX_PERCENT. It is
// outside the strategies: every strategy's picks are counted the same.
//
// It also stands between the strategy and the proxy (guarded): a pick that
// lands on an entry this dispatcher has just ejected (its round trip to
// Redis was under way when the ejection came) is given back unsent and
// taken again. The check and the count of requests sent to each entry
// share the ejector's lock with the decision, so a request is either
// among those counted as on their way at the ejection (the log's
// in_flight), or not sent there at all: after the EJECT_AFTER-th failure,
// no new request goes to the backend from this dispatcher.
type ejector struct {
	after  int // EJECT_AFTER
	policy store.EjectPolicy
	store  *store.Store
	pool   *pool.Pool
	log    *slog.Logger
	// ejected counts an ejection this dispatcher made, by backend URL
	// (spread_ejections_total).
	ejected func(backend string)
	timeout time.Duration // of the call to Redis

	mu    sync.Mutex
	fails map[string]int       // entry -> failures in a row
	busy  map[string]bool      // entry -> an ejection under way
	sent  map[string]int       // entry -> requests sent there and not over
	out   map[string]time.Time // entry -> until when this dispatcher ejected it
}

func newEjector(cfg proxyConfig, st *store.Store, pl *pool.Pool, timeout time.Duration, log *slog.Logger) *ejector {
	return &ejector{after: cfg.ejectAfter, policy: cfg.eject, store: st, pool: pl, log: log, timeout: timeout,
		ejected: func(string) {}, fails: map[string]int{}, busy: map[string]bool{},
		sent: map[string]int{}, out: map[string]time.Time{}}
}

// maxGivenBack bounds how many picks in a row a request gives back for
// landing on an entry just ejected; the last one is sent anyway.
const maxGivenBack = 3

// guarded is the Picker the front asks when ejection is on: the strategy's,
// through the ejector's check.
type guarded struct {
	balance.Picker
	e *ejector
}

// Pick asks the strategy, and takes another pick instead of one that lands
// on an entry this dispatcher has ejected; the pick it returns is counted
// as sent.
func (g guarded) Pick(ctx context.Context, r *http.Request) (balance.Backend, error) {
	for i := 0; ; i++ {
		b, err := g.Picker.Pick(ctx, r)
		if err != nil || g.e.send(b.Entry, i == maxGivenBack) {
			return b, err
		}
		b.Done(balance.Result{Err: balance.ErrNotSent})
	}
}

// Unwrap returns the strategy, for balance.As.
func (g guarded) Unwrap() balance.Picker { return g.Picker }

// send counts a request to entry as sent and reports true, unless this
// dispatcher has ejected entry and anyway is false.
func (e *ejector) send(entry string, anyway bool) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if until, ok := e.out[entry]; ok && !anyway {
		if time.Now().Before(until) {
			return false
		}
		delete(e.out, entry)
	}
	e.sent[entry]++
	return true
}

// observe counts how the request sent to b ended.
func (e *ejector) observe(b balance.Backend, r balance.Result) {
	if b.Entry == "" {
		return
	}
	e.mu.Lock()
	if e.sent[b.Entry]--; e.sent[b.Entry] <= 0 {
		delete(e.sent, b.Entry)
	}
	if errors.Is(r.Err, context.Canceled) {
		e.mu.Unlock()
		return // a client that left says nothing of the backend
	}
	if !r.Failed() {
		delete(e.fails, b.Entry)
		e.mu.Unlock()
		return
	}
	e.fails[b.Entry]++
	n := e.fails[b.Entry]
	if n < e.after || e.busy[b.Entry] {
		e.mu.Unlock()
		return
	}
	if len(e.fails) > 1024 { // entries come from the list; bound them anyway
		clear(e.fails)
		clear(e.out)
	}
	delete(e.fails, b.Entry)
	e.busy[b.Entry] = true
	until := time.Now().Add(e.policy.Base)
	e.out[b.Entry] = until
	// The requests already on their way there, which will end as they
	// may; from now on none is sent (send).
	inFlight := e.sent[b.Entry]
	e.mu.Unlock()
	// Out of this dispatcher's picks now; Redis decides for everyone.
	e.pool.Eject(b.Entry, until)
	why := []any{"backend", b.URL.String(), "failures", n, "in_flight", inFlight, "status", r.Status}
	if r.Err != nil {
		why = append(why, "err", r.Err)
	}
	go e.eject(b, why)
}

// eject asks Redis to eject b's entry, and logs the outcome with why.
func (e *ejector) eject(b balance.Backend, why []any) {
	defer func() {
		e.mu.Lock()
		delete(e.busy, b.Entry)
		e.mu.Unlock()
	}()
	url := b.URL.String()
	ctx, cancel := context.WithTimeout(context.Background(), e.timeout)
	defer cancel()
	res, err := e.store.Eject(ctx, b.Entry, e.policy)
	switch {
	case err != nil:
		e.log.Error("backend ejected from this dispatcher only: redis fails, the others do not know", append(why, "for", e.policy.Base, "redis_err", err)...)
	case res.Ejected:
		e.setOut(b.Entry, res.Until)
		e.ejected(url)
		e.log.Warn("backend ejected for every dispatcher: it failed EJECT_AFTER requests in a row",
			append(why, "times", res.Times, "for", res.For, "until", res.Until.UTC().Format(time.RFC3339))...)
	case res.Already:
		e.setOut(b.Entry, res.Until)
		e.log.Info("backend failing here is ejected already", append(why, "until", res.Until.UTC().Format(time.RFC3339))...)
	case res.Capped:
		e.setOut(b.Entry, time.Time{})
		e.pool.Uneject(b.Entry)
		e.log.Warn("backend not ejected: EJECT_MAX_PERCENT of the list is ejected already", append(why, "ejected", res.EjectedNow, "of", res.Pool)...)
	case res.NotIn:
		e.setOut(b.Entry, time.Time{})
		e.pool.Uneject(b.Entry)
	}
}

// setOut records until when this dispatcher keeps entry out: Redis's
// answer (a later ejection, one already there), or none (zero: refused).
func (e *ejector) setOut(entry string, until time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if until.IsZero() {
		delete(e.out, entry)
		return
	}
	e.out[entry] = until
}
