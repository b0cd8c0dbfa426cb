package main

import (
	"context"
	"errors"
	"log/slog"
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
type ejector struct {
	after  int // EJECT_AFTER
	policy store.EjectPolicy
	store  *store.Store
	pool   *pool.Pool
	log    *slog.Logger
	// ejected counts an ejection this dispatcher made, by backend URL
	// (spread_ejections_total); inflight is this dispatcher's requests in
	// flight to a backend URL now, for the log.
	ejected  func(backend string)
	inflight func(backend string) int64
	timeout  time.Duration // of the call to Redis

	mu    sync.Mutex
	fails map[string]int  // entry -> failures in a row
	busy  map[string]bool // entry -> an ejection under way
}

func newEjector(cfg proxyConfig, st *store.Store, pl *pool.Pool, timeout time.Duration, log *slog.Logger) *ejector {
	return &ejector{after: cfg.ejectAfter, policy: cfg.eject, store: st, pool: pl, log: log, timeout: timeout,
		ejected: func(string) {}, inflight: func(string) int64 { return 0 },
		fails: map[string]int{}, busy: map[string]bool{}}
}

// observe counts how the request sent to b ended.
func (e *ejector) observe(b balance.Backend, r balance.Result) {
	if b.Entry == "" || errors.Is(r.Err, context.Canceled) {
		return // a client that left says nothing of the backend
	}
	e.mu.Lock()
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
	if len(e.fails) > 1024 { // entries come from the list; bound it anyway
		clear(e.fails)
	}
	delete(e.fails, b.Entry)
	e.busy[b.Entry] = true
	e.mu.Unlock()
	// Out of this dispatcher's picks now; Redis decides for everyone.
	e.pool.Eject(b.Entry, time.Now().Add(e.policy.Base))
	// The requests already on their way there, which will end as they
	// may (the last failure, still counted, aside).
	url := b.URL.String()
	why := []any{"backend", url, "failures", n, "in_flight", max(0, e.inflight(url)-1), "status", r.Status}
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
		e.ejected(url)
		e.log.Warn("backend ejected for every dispatcher: it failed EJECT_AFTER requests in a row",
			append(why, "times", res.Times, "for", res.For, "until", res.Until.UTC().Format(time.RFC3339))...)
	case res.Already:
		e.log.Info("backend failing here is ejected already", append(why, "until", res.Until.UTC().Format(time.RFC3339))...)
	case res.Capped:
		e.pool.Uneject(b.Entry)
		e.log.Warn("backend not ejected: EJECT_MAX_PERCENT of the list is ejected already", append(why, "ejected", res.EjectedNow, "of", res.Pool)...)
	case res.NotIn:
		e.pool.Uneject(b.Entry)
	}
}
