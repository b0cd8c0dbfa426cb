// Command dispatcher redirects each request to the next backend in a Redis
// list, the way the tutorial "spreading traffic with Redis" does: for every
// request, whatever its method and path, it takes one atomic step of the
// rotation (LMOVE servers servers RIGHT LEFT) and redirects the client to
// the URL it lands on, joined with the request's path and query.
//
// Usage:
//
//	dispatcher              serve on PORT; on ADMIN_PORT /healthz, /readyz, /metrics and the dashboard
//	dispatcher healthcheck  exit 0 if the dispatcher on ADMIN_PORT is ready: /readyz answers 200
//	dispatcher check        read the settings as a start does, print them as NAME=value (check.go)
//
// With MODE=proxy it forwards the request to that backend instead and relays
// the answer (proxy.go). STRATEGY chooses the backend some other way:
// random, hash, least-conn or p2c (docs/strategies.md).
//
// Where a request goes, file by file, and which package touches Redis:
// CONTRIBUTING.md, "Where a request goes".
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/spreadlb/spread/internal/redisconn"

	"github.com/spreadlb/spread/internal/pick"

	"github.com/labstack/echo/v4"
	"github.com/spreadlb/spread/internal/app"
	"github.com/spreadlb/spread/internal/balance"
	"github.com/spreadlb/spread/internal/health"
	"github.com/spreadlb/spread/internal/members"
	"github.com/spreadlb/spread/internal/pool"
	"github.com/spreadlb/spread/internal/store"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { <-ctx.Done(); stop() }() // after the first signal, a second one kills at once
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "dispatcher:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	if len(args) > 0 {
		if args[0] == "healthcheck" {
			return app.Healthcheck(ctx, app.LocalURL(cfg.adminBindHost, cfg.adminPort, "/readyz"))
		}
		if args[0] == "check" {
			return checkConfig(cfg, getenv, os.Stdout)
		}
		return fmt.Errorf("unknown command %q (want no argument, healthcheck or check)", args[0])
	}
	// Lines leave in batches, off the request's goroutine (logbuf.go);
	// what is left is written before run returns.
	logs := newLogBuffer(stderr)
	defer logs.Close()
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: cfg.logLevel}))
	redisconn.LogTo(log)

	rdb, err := redisconn.ConnectTLS(cfg.redisURL, "dispatcher", cfg.redisTLS)
	if err != nil {
		return err
	}
	defer rdb.Close()
	st := store.NewStore(rdb, cfg.key, log)

	ln, admin, err := listen(cfg)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, st, ln, admin, log)
}

// listen opens the main and the admin listener, on BIND_HOST and
// ADMIN_BIND_HOST (every interface when empty), first, so that "address in
// use" fails at start.
func listen(cfg config) (ln, admin net.Listener, err error) {
	if ln, err = net.Listen("tcp", net.JoinHostPort(cfg.bindHost, cfg.port)); err != nil {
		return nil, nil, fmt.Errorf("%s=%q %s=%s: %w", bindSetting.Name, cfg.bindHost, portSetting.Name, cfg.port, err)
	}
	if admin, err = net.Listen("tcp", net.JoinHostPort(cfg.adminBindHost, cfg.adminPort)); err != nil {
		ln.Close()
		return nil, nil, fmt.Errorf("%s=%q %s=%s: %w", adminBindSetting.Name, cfg.adminBindHost, adminSetting.Name, cfg.adminPort, err)
	}
	return ln, admin, nil
}

// serve runs the main and admin listeners until ctx is done, then drains
// both within cfg.shutdownTimeout.
func serve(ctx context.Context, cfg config, st *store.Store, ln, admin net.Listener, log *slog.Logger) error {
	st.SetStepTimeout(cfg.redisTimeout)
	log.Info("dispatcher listening", "addr", ln.Addr().String(), "admin", admin.Addr().String(),
		"idle_timeout", cfg.idleTimeout, "key", st.Key(), "mode", cfg.mode, "strategy", cfg.strategy, "redirect_status", cfg.status)
	m := newMetrics(string(cfg.mode), cfg.strategy)
	st.OnDenied(m.denied) // from the first command on
	// Say at once whether Redis answers; not fatal, since it may come up later.
	checkCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	n, err := st.Len(checkCtx)
	switch {
	case errors.Is(err, pick.ErrMisconfigured):
		cancel()
		return fmt.Errorf("%s: %w", redisconn.RedisURL.Name, err)
	case err != nil && !errors.Is(err, pick.ErrNoPermission):
		log.Warn("redis not ready at start; requests get 503 until the list has been read", "err", err)
	case err == nil:
		log.Info("rotation list found", "key", st.Key(), "entries", n)
	}
	// Say at once what the Redis user may not do; /readyz says it too.
	ops := redisOps(cfg, cfg.plan.Needs)
	if err := st.CheckAccess(checkCtx, ops...); errors.Is(err, pick.ErrNoPermission) {
		log.Error("the redis user lacks permissions this dispatcher needs; /readyz answers 503 until they are granted (docs/security.md)", "err", err)
	}
	cancel()

	ctx, stop := context.WithCancel(ctx)
	defer stop()
	var background sync.WaitGroup
	defer background.Wait() // the health checks release their lease on the way out

	// The snapshot of the list, read when it changes: what the strategies
	// pick from, and the fallback while Redis is down.
	pl := pool.New(st, pool.DefaultRefresh, log)
	pl.SetSlowStart(cfg.slowStart, cfg.slowStartMin)
	if err := pl.Refresh(ctx); err != nil {
		log.Warn("cannot read the rotation list yet; requests get 503 until it is read", "err", err)
	}
	background.Go(func() { pl.Run(ctx) })
	w := newWiring(ctx, st, pl, cfg, m, log, &background)
	strats, err := newStrategies(w, cfg, m, log)
	if err != nil {
		return err
	}
	w.health.picker = strats.sw
	// A strategy stored beside the list wins over STRATEGY from the
	// first request on; then every change is followed.
	strats.check(ctx)
	background.Go(func() { strats.sw.Run(ctx) })
	background.Go(func() { strats.Run(ctx) })
	var picker balance.Picker = strats.sw
	if cfg.health.Interval > 0 {
		hc := cfg.health
		hc.Log = log
		checker := health.New(st, hc)
		background.Go(func() { checker.Run(ctx) })
		// While it holds the lease, it is also the one writer that puts
		// registered backends in the list and takes gone ones out.
		rec := members.NewReconciler(st, checker.ID, log)
		background.Go(func() { rec.Run(ctx) })
	} else {
		log.Info("health checks off in this dispatcher (HEALTH_INTERVAL=0); it still skips backends others mark down, and never reconciles registrations")
	}
	// spread_backend_up and the dashboard's health marks follow the shared
	// down set, as this dispatcher last read it.
	background.Go(func() { watchHealth(ctx, pl, m) })

	f := &front{picker: timedPicker{picker, m}, timeout: cfg.redisTimeout, log: log,
		deliver: redirector{status: cfg.status}}
	if cfg.mode == balance.Proxy {
		// Failed connections count toward the shared health checks.
		report := health.NewReporter(st, cfg.redisTimeout, log).Report
		pm := newProxyMetrics(m)
		f.deliver = newProxier(cfg.proxy, log, func(backend string, err error) {
			pm.connectFailed(backend, err)
			report(backend)
		}, pm.retried.Inc)
		f.deliver.(*proxier).inflight = m.inflightGauge
		f.deliver.(*proxier).retry.refused = newRetryRefused(m).Inc
		if cfg.proxy.ejectAfter > 0 {
			ej := newEjector(cfg.proxy, st, pl, cfg.redisTimeout, log)
			ej.ejected = m.ejection
			f.deliver.(*proxier).outcome = ej.observe
			f.picker = timedPicker{guarded{picker, ej}, m}
		}
	}
	frontend := newFront(f, observeRequests(m, log))

	// The admin port: readiness, metrics, the dashboard, the strategy.
	access := &accessCheck{what: func() string { return fmt.Sprint(strats.ops()) },
		check: func(ctx context.Context) error { return st.CheckAccess(ctx, strats.ops()...) }}
	back := newAdmin(readiness{picker: picker, store: st, pool: pl, health: w.health}, st.Key(), cfg.redisTimeout,
		access, strats.Refusal)
	back.GET("/metrics", echo.WrapHandler(m.handler()))
	(&strategyAPI{strats: strats, write: cfg.adminWrite, log: log}).mount(back)
	d := &dashboard{m: m, pool: pl, picker: picker, key: st.Key(), refusal: strats.Refusal, degraded: w.health.Degraded,
		every: 250 * time.Millisecond, maxStreams: cfg.maxStreams, done: ctx.Done(), log: log}
	d.mount(back)
	errc := make(chan error, 2)
	// Both ports close idle keep-alive connections after IDLE_TIMEOUT and
	// bound header size and time (app.ServeWith).
	lim := app.Limits{IdleTimeout: cfg.idleTimeout, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	go func() { errc <- app.ServeWith(ctx, ln, frontend, cfg.shutdownTimeout, lim) }()
	go func() { errc <- app.ServeWith(ctx, admin, back, cfg.shutdownTimeout, lim) }()
	err = <-errc
	stop() // one listener failed or ctx is done: stop the other too
	err = errors.Join(err, <-errc)
	if st := w.env.Rotation.Stats(); st.Requests > 0 {
		log.Info("rotation steps taken", "steps", st.Requests, "round_trips", st.RoundTrips, "largest_batch", st.MaxBatch)
	}
	log.Info("dispatcher stopped", "err", err)
	return err
}
