package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/spreadlb/spread/internal/pick"

	"github.com/labstack/echo/v4"
	"github.com/spreadlb/spread/internal/balance"
	"github.com/spreadlb/spread/internal/pool"
	"github.com/spreadlb/spread/internal/store"
)

// lengther is what readiness needs of the rotation: its length, which also
// proves Redis answers.
type lengther interface {
	Len(ctx context.Context) (int64, error)
}

// readiness is /readyz's view of the strategy running now: a strategy that
// knows when it is degraded (balance.Readiness, a Failover) answers for
// itself; for the others, the list's length from Redis or the snapshot.
type readiness struct {
	picker   balance.Picker // the Switch: asked anew on every call
	fallback lengther
}

func (r readiness) Len(ctx context.Context) (int64, error) {
	if rd, ok := balance.As[balance.Readiness](r.picker); ok {
		return rd.Len(ctx)
	}
	return r.fallback.Len(ctx)
}

// Degraded says why the strategy serves without Redis, or "".
func (r readiness) Degraded() string {
	if rd, ok := balance.As[balance.Readiness](r.picker); ok {
		return rd.Degraded()
	}
	return ""
}

// storeOrPool is readiness for strategies without a Failover: the list's
// length from Redis, or from the pool's snapshot while Redis does not
// answer (such strategies pick from the snapshot anyway).
type storeOrPool struct {
	store *store.Store
	pool  *pool.Pool
}

func (s storeOrPool) Len(ctx context.Context) (int64, error) {
	n, err := s.store.Len(ctx)
	if err == nil || !errors.Is(err, pick.ErrUnavailable) {
		return n, err
	}
	if pn, ok := s.pool.Len(); ok {
		return int64(pn), nil
	}
	return 0, err
}

// redisOps lists what this dispatcher does with Redis, for the check of
// the user's permissions (store.Missing): what its settings, and the
// strategy's needs, ask of it.
func redisOps(cfg config, needs []balance.Need) []store.Op {
	ops := []store.Op{store.OpRead, store.OpStrategy}
	if cfg.adminWrite {
		ops = append(ops, store.OpSetStrategy)
	}
	if cfg.health.Interval > 0 {
		ops = append(ops, store.OpHealth, store.OpReconcile)
	}
	if cfg.mode == balance.Proxy {
		ops = append(ops, store.OpReport)
		if cfg.proxy.ejectAfter > 0 {
			ops = append(ops, store.OpEject)
		}
	}
	for _, n := range needs {
		switch n {
		case balance.NeedRotation:
			ops = append(ops, store.OpRotate)
		case balance.NeedInflight:
			ops = append(ops, store.OpInflight)
		}
	}
	return ops
}

// newAdmin returns the admin listener's routes. They live on their own port
// so that the main port can pass every path, /healthz included, to the
// backends.
//
//	GET /healthz  200 while the process serves
//	GET /readyz   200 when Redis answers, the list is not empty and the
//	              Redis user may run every command this dispatcher needs, else
//	              503 saying why (naming the commands missing);
//	              200 "degraded: ..." while Redis is down and the dispatcher
//	              rotates over its snapshot of the list (balance.Failover)
//
// serve adds GET /metrics (metrics.go) and the dashboard, GET / and GET
// /events (dashboard.go).
//
// list is the rotation's length (and whether it is degraded); access, if not
// nil, checks the Redis user's permissions (store.CheckAccess) on every
// /readyz; refusal, if not nil, says why a stored strategy does not run
// here, which /readyz reports without failing: the dispatcher serves with
// the strategy it has.
func newAdmin(list lengther, key string, access func(context.Context) error, refusal func() string) *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.GET("/healthz", func(c echo.Context) error {
		return c.String(http.StatusOK, "ok\n")
	})
	e.GET("/readyz", func(c echo.Context) error {
		ctx, cancel := context.WithTimeout(c.Request().Context(), time.Second)
		defer cancel()
		n, err := list.Len(ctx)
		switch {
		case err != nil:
			return c.String(http.StatusServiceUnavailable, fmt.Sprintf("not ready: %v\n", err))
		case n == 0:
			return c.String(http.StatusServiceUnavailable, fmt.Sprintf("not ready: the list %q is empty\n", key))
		}
		if d, ok := list.(interface{ Degraded() string }); ok {
			if why := d.Degraded(); why != "" {
				return c.String(http.StatusOK, "degraded: "+why+"\n")
			}
		}
		// Redis answers: may this user do all this dispatcher needs? A
		// missing permission fails requests, or worse, silently ignores
		// the health checks.
		if access != nil {
			if err := access(ctx); errors.Is(err, pick.ErrNoPermission) || errors.Is(err, pick.ErrMisconfigured) {
				return c.String(http.StatusServiceUnavailable, fmt.Sprintf("not ready: %v\n", err))
			}
		}
		msg := fmt.Sprintf("ready: %q holds %d %s\n", key, n, plural(n, "entry", "entries"))
		if refusal != nil {
			if why := refusal(); why != "" {
				msg += why + "\n"
			}
		}
		return c.String(http.StatusOK, msg)
	})
	return e
}

func plural(n int64, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
