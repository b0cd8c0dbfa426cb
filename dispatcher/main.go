// Command dispatcher redirects each request to the next backend in a Redis
// list, the way the tutorial "spreading traffic with Redis" does: for every
// request, whatever its method and path, it takes one atomic step of the
// rotation (LMOVE servers servers RIGHT LEFT) and redirects the client to
// the URL it lands on, joined with the request's path and query.
//
// Usage:
//
//	dispatcher              serve on PORT; on ADMIN_PORT /healthz, /readyz, /metrics and the dashboard
//	dispatcher healthcheck  exit 0 if the dispatcher on ADMIN_PORT answers /healthz
//
// With MODE=proxy it forwards the request to that backend instead and relays
// the answer (proxy.go).
//
// Where things happen: redirect.go receives every request and builds the
// redirect (proxy.go in MODE=proxy); the backend is chosen by a Picker: rotation.Store (ROTATION=redis,
// one shared step in Redis per request, concurrent requests sharing a round
// trip) or rotation.Local (ROTATION=local, round robin in process over a
// snapshot of the list). With ROTATION=redis, fallback.go switches to that
// snapshot while Redis is down or hung. rotation.Health probes the backends
// (settings in health.go) and marks the failing ones down, in Redis, for
// every dispatcher. Package rotation is the one place that touches Redis.
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

	"github.com/labstack/echo/v4"
	"github.com/spreadlb/spread/internal/app"
	"github.com/spreadlb/spread/internal/rotation"
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
			return app.Healthcheck(ctx, app.LocalURL(cfg.adminPort, "/healthz"))
		}
		return fmt.Errorf("unknown command %q (want no argument, or healthcheck)", args[0])
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.logLevel}))
	rotation.LogTo(log)

	rdb, err := rotation.Connect(cfg.redisURL, "dispatcher")
	if err != nil {
		return err
	}
	defer rdb.Close()
	store := rotation.NewStore(rdb, cfg.key, log)

	// Listen first, so that "address in use" fails at start.
	ln, err := net.Listen("tcp", ":"+cfg.port)
	if err != nil {
		return err
	}
	admin, err := net.Listen("tcp", ":"+cfg.adminPort)
	if err != nil {
		ln.Close()
		return err
	}
	return serve(ctx, cfg, store, ln, admin, log)
}

// serve runs the main and admin listeners until ctx is done, then drains
// both within cfg.shutdownTimeout.
func serve(ctx context.Context, cfg config, store *rotation.Store, ln, admin net.Listener, log *slog.Logger) error {
	store.SetStepTimeout(cfg.redisTimeout)
	log.Info("dispatcher listening", "addr", ln.Addr().String(), "admin", admin.Addr().String(),
		"key", store.Key(), "rotation", cfg.rotation, "mode", cfg.mode, "redirect_status", cfg.status)
	// Say at once whether Redis answers; not fatal, since it may come up later.
	checkCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	if n, err := store.Len(checkCtx); err != nil {
		log.Warn("redis not ready at start; requests get 503 until the list has been read", "err", err)
	} else {
		log.Info("rotation list found", "key", store.Key(), "entries", n)
	}
	cancel()

	ctx, stop := context.WithCancel(ctx)
	defer stop()
	var background sync.WaitGroup
	defer background.Wait() // the health checks release their lease on the way out

	// A snapshot of the list, read every second: the whole rotation with
	// ROTATION=local, the fallback while Redis is down with ROTATION=redis.
	local := rotation.NewLocal(store, rotation.DefaultRefresh)
	if err := local.Refresh(ctx); err != nil {
		log.Warn("cannot read the rotation list yet; requests get 503 until it is read", "err", err)
	}
	background.Go(func() { local.Run(ctx) })
	m := newMetrics(cfg.mode)
	fb := newFallback(store, local, cfg.redisTimeout, log)
	fb.onChange = m.SetDegraded
	background.Go(func() { fb.run(ctx) })
	var picker Picker = fb
	var list rotationLister = store
	source := fmt.Sprintf("Redis list %q", store.Key())
	if cfg.rotation == "local" {
		picker, list = local, local
		source = fmt.Sprintf("this process's copy of Redis list %q (ROTATION=local)", store.Key())
	}
	if cfg.health.Interval > 0 {
		health := rotation.NewHealth(store, cfg.health)
		background.Go(func() { health.Run(ctx) })
	} else {
		log.Info("health checks off in this dispatcher (HEALTH_INTERVAL=0); it still skips backends others mark down")
	}
	// spread_backend_up and the dashboard's health marks follow the shared
	// down set, as this dispatcher last read it.
	background.Go(func() { watchHealth(ctx, local, m) })

	r := &redirector{picker: timedPicker{picker, m}, status: cfg.status, timeout: cfg.redisTimeout, log: log}
	// The redirector, or in MODE=proxy a proxier (proxy.go), whose failed
	// connections count toward the shared health checks.
	front := newFront(cfg, r, m, newFailureReporter(store, cfg.redisTimeout, log).report)
	front.Use(observeRequests(m, log))
	back := newAdmin(fb, store.Key())
	back.GET("/metrics", echo.WrapHandler(m.handler()))
	d := &dashboard{m: m, list: list, source: source,
		every: 250 * time.Millisecond, done: ctx.Done(), log: log}
	d.mount(back)
	errc := make(chan error, 2)
	go func() { errc <- app.Serve(ctx, ln, front, cfg.shutdownTimeout) }()
	go func() { errc <- app.Serve(ctx, admin, back, cfg.shutdownTimeout) }()
	err := <-errc
	stop() // one listener failed or ctx is done: stop the other too
	err = errors.Join(err, <-errc)
	if cfg.rotation == "redis" {
		st := store.Coalescing()
		log.Info("rotation steps taken", "steps", st.Steps, "round_trips", st.RoundTrips, "largest_batch", st.MaxBatch,
			"invalid_entries_skipped", store.Skipped())
	}
	log.Info("dispatcher stopped", "err", err)
	return err
}
