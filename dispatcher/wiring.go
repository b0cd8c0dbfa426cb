package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/spreadlb/spread/internal/balance"
	"github.com/spreadlb/spread/internal/pool"
	"github.com/spreadlb/spread/internal/store"
)

// wiring is where the strategies meet Redis: the balance.Env that every
// strategy's Picker gets, filled with package store's types. The shared
// in-flight counts are made on first use, once for the dispatcher's life,
// and renewed in Redis from then on (a strategy that needs none never
// touches their keys, so its Redis user need not be allowed to).
type wiring struct {
	env    balance.Env
	health *redisHealth

	ctx        context.Context
	st         *store.Store
	background *sync.WaitGroup
	once       sync.Once
	inflight   *store.Inflight
}

func newWiring(ctx context.Context, st *store.Store, pl *pool.Pool, cfg config, m *metrics, log *slog.Logger, background *sync.WaitGroup) *wiring {
	w := &wiring{ctx: ctx, st: st, background: background, health: newRedisHealth(pl, m)}
	w.env = balance.Env{Pool: pl, Rotation: store.NewRotation(st), Inflight: w.counts, Redis: st,
		Timeout: cfg.redisTimeout, OnDegraded: w.health.failoverChanged, OnRedisError: m.redisError, OnFallback: m.fallbacks.Inc, Log: log}
	m.countRotation(w.env.Rotation)
	return w
}

// counts is Env.Inflight: this dispatcher's side of the shared in-flight
// counts, kept alive in Redis until the dispatcher stops, then withdrawn.
func (w *wiring) counts() balance.Counts {
	w.once.Do(func() {
		w.inflight = w.st.NewInflight(balance.DispatcherID(""), false)
		w.background.Go(func() { w.inflight.Keepalive(w.ctx) })
	})
	return w.inflight
}

// redisHealth is the dispatcher's one answer to "does it serve without
// Redis?", whatever the strategy, the one it started with or one it
// switched to: yes while the pool's reads fail for want of Redis (every
// strategy then picks from the last snapshot, or falls back on it), or
// while the running strategy's Failover has given up on Redis (its picks
// failed before the pool's next read did). It keeps spread_degraded and
// the dashboard's mark, and says why in /readyz.
type redisHealth struct {
	pool   *pool.Pool
	m      *metrics
	picker balance.Picker // the Switch, once built: a Failover among what it runs says why

	mu       sync.Mutex
	failover bool // the running strategy's Failover is degraded (Env.OnDegraded)
}

func newRedisHealth(pl *pool.Pool, m *metrics) *redisHealth {
	h := &redisHealth{pool: pl, m: m}
	pl.OnUnavailable(func(bool) { h.update(nil) })
	h.update(nil)
	return h
}

// failoverChanged is Env.OnDegraded: a Failover began or ended degraded
// mode (or a switch left a degraded one behind).
func (h *redisHealth) failoverChanged(degraded bool) { h.update(&degraded) }

// update sets the metrics from the state, with the Failover's news if
// any.
func (h *redisHealth) update(failover *bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if failover != nil {
		h.failover = *failover
	}
	err, _ := h.pool.Unavailable()
	h.m.SetDegraded(h.failover || err != nil)
}

// Degraded says why the dispatcher serves without Redis, or "".
func (h *redisHealth) Degraded() string {
	if h.picker != nil {
		if rd, ok := balance.As[balance.Readiness](h.picker); ok {
			if why := rd.Degraded(); why != "" {
				return why
			}
		}
	}
	err, since := h.pool.Unavailable()
	if err == nil {
		return ""
	}
	n, ok := h.pool.Len()
	if !ok {
		return fmt.Sprintf("redis unavailable for %s (%v), and the list was never read", time.Since(since).Round(time.Second), err)
	}
	return fmt.Sprintf("redis unavailable for %s (%v); picking in this process from the last snapshot of the list (%d %s), not shared with other dispatchers",
		time.Since(since).Round(time.Second), err, n, plural(int64(n), "entry", "entries"))
}
