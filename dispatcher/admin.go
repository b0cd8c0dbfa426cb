package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
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

// readiness is /readyz's view of the dispatcher: whether it serves without
// Redis (redisHealth, whatever the strategy), else the list's length from
// Redis, asked of the strategy running now if it knows better
// (balance.Readiness: a Failover), else of the store. It never reads the
// list itself: every call costs Redis one LLEN on a pooled connection, or
// nothing while the dispatcher is degraded.
type readiness struct {
	picker balance.Picker // the Switch: asked anew on every call
	store  lengther       // the list's length from Redis
	pool   *pool.Pool     // the snapshot's, while Redis does not answer
	health *redisHealth
}

// Ready returns the list's length and, if the dispatcher serves without
// Redis, why; or why it is not ready.
func (r readiness) Ready(ctx context.Context) (n int64, degraded string, err error) {
	if why := r.health.Degraded(); why != "" {
		if pn, ok := r.pool.Len(); ok {
			return int64(pn), why, nil
		}
		return 0, "", fmt.Errorf("%w: %s", pick.ErrUnavailable, why)
	}
	var l lengther = r.store
	if rd, ok := balance.As[balance.Readiness](r.picker); ok {
		l = rd
	}
	n, err = l.Len(ctx)
	if !pick.Unavailable(err) {
		return n, "", err
	}
	r.pool.Report(err) // the dispatcher is degraded from now on, not only this answer
	// Redis failed this call before the pool or the picks noticed: the
	// strategies serve from the snapshot meanwhile.
	pn, ok := r.pool.Len()
	if !ok {
		return 0, "", err
	}
	return int64(pn), fmt.Sprintf("redis unavailable (%v); picking in this process from the last snapshot of the list (%d %s)",
		err, pn, plural(int64(pn), "entry", "entries")), nil
}

// accessCheck is /readyz's permission check (store.CheckAccess). What it
// checks changes when the strategy does: what names it, and something new
// is checked at once.
type accessCheck struct {
	what  func() string
	check func(ctx context.Context) error
}

// cachedCheck is an accessCheck whose answer is kept for every: /readyz
// may be called many times a second, and a user's rights change rarely. An
// answer is kept (the rights, or their lack); a failure to ask is not. A
// caller that comes while another asks gets the last answer rather than
// wait.
type cachedCheck struct {
	every time.Duration
	accessCheck

	mu      sync.Mutex
	key     string
	at      time.Time
	err     error
	running bool
}

// get returns the check's answer, asking if it is older than every or was
// for another key.
func (c *cachedCheck) get(ctx context.Context) error {
	key := c.what()
	c.mu.Lock()
	if c.running || (c.key == key && !c.at.IsZero() && time.Since(c.at) < c.every) {
		err := c.err
		c.mu.Unlock()
		return err
	}
	c.running = true
	c.mu.Unlock()
	err := c.check(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.running = false
	if err == nil || errors.Is(err, pick.ErrNoPermission) || errors.Is(err, pick.ErrMisconfigured) {
		c.key, c.at, c.err = key, time.Now(), err
	}
	return err
}

// accessEvery is how long /readyz trusts its last permission check.
const accessEvery = 5 * time.Second

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
//	              serves from its snapshot of the list, whatever the strategy
//
// serve adds GET /metrics (metrics.go) and the dashboard, GET / and GET
// /events (dashboard.go).
//
// list is the dispatcher's readiness; every /readyz answers within
// timeout (REDIS_TIMEOUT). access, if not nil, checks the Redis user's
// permissions (store.CheckAccess), at most every accessEvery; refusal, if not nil, says why a stored strategy does not
// run here, which /readyz reports without failing: the dispatcher serves
// with the strategy it has.
func newAdmin(list interface {
	Ready(context.Context) (int64, string, error)
}, key string, timeout time.Duration, access *accessCheck, refusal func() string) *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.GET("/healthz", func(c echo.Context) error {
		return c.String(http.StatusOK, "ok\n")
	})
	var checked *cachedCheck
	if access != nil {
		checked = &cachedCheck{every: accessEvery, accessCheck: *access}
	}
	e.GET("/readyz", func(c echo.Context) error {
		ctx, cancel := context.WithTimeout(c.Request().Context(), timeout)
		defer cancel()
		n, degraded, err := list.Ready(ctx)
		switch {
		case err != nil:
			return c.String(http.StatusServiceUnavailable, fmt.Sprintf("not ready: %v\n", err))
		case n == 0:
			return c.String(http.StatusServiceUnavailable, fmt.Sprintf("not ready: the list %q is empty\n", key))
		case degraded != "":
			return c.String(http.StatusOK, "degraded: "+degraded+"\n")
		}
		// Redis answers: may this user do all this dispatcher needs? A
		// missing permission fails requests, or worse, silently ignores
		// the health checks.
		if checked != nil {
			if err := checked.get(ctx); errors.Is(err, pick.ErrNoPermission) || errors.Is(err, pick.ErrMisconfigured) {
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
