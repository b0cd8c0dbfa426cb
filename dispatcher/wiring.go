package main

import (
	"context"
	"log/slog"
	"sync"

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
	env balance.Env

	ctx        context.Context
	st         *store.Store
	background *sync.WaitGroup
	once       sync.Once
	inflight   *store.Inflight
}

func newWiring(ctx context.Context, st *store.Store, pl *pool.Pool, cfg config, m *metrics, log *slog.Logger, background *sync.WaitGroup) *wiring {
	w := &wiring{ctx: ctx, st: st, background: background}
	w.env = balance.Env{Pool: pl, Rotation: store.NewRotation(st), Inflight: w.counts, Redis: st,
		Timeout: cfg.redisTimeout, OnDegraded: m.SetDegraded, OnRedisError: m.redisError, OnFallback: m.fallbacks.Inc, Log: log}
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
