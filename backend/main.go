// Command backend is the tutorial's hello-world web server: it answers
// "Hello, World!" and names itself in an X-Backend header on every response,
// so a client sees which backend the dispatcher chose.
//
// A backend can be made slow, small and unreliable, to watch how the
// dispatcher's strategies cope: LATENCY (plus up to LATENCY_JITTER) is each
// GET /'s service time, CAPACITY bounds how many are in service at once while
// the rest wait in a FIFO queue, and FAIL_RATE answers that fraction of them
// 500. GET /stats shows the live counts. /healthz, /whoami and /stats answer
// at once, so health checks never queue behind load.
//
// With CONTROL=1 a second port, CONTROL_PORT, takes POST /control, which
// changes those knobs while the backend runs, and takes PORT down (dials
// refused, as for a stopped process) and up again. PORT never serves
// /control: a dispatcher in MODE=proxy forwards every path to its backends,
// and no client of the pool may turn the knobs.
//
// Usage:
//
//	backend              serve on PORT (and CONTROL_PORT)
//	backend healthcheck  exit 0 if the backend on PORT answers GET /healthz
//	backend check        read the settings as a start does and print them as
//	                     NAME=value; a bad one is an error naming it
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/spreadlb/spread/internal/app"
	"github.com/spreadlb/spread/internal/backend"
	"github.com/spreadlb/spread/internal/members"
	"github.com/spreadlb/spread/internal/pick"
	"github.com/spreadlb/spread/internal/redisconn"
	"github.com/spreadlb/spread/internal/store"
)

// The backend's settings; the README's configuration table lists the same.
var (
	portSetting = app.Setting{Name: "PORT", Default: "5000", Usage: "port to listen on"}
	nameSetting = app.Setting{Name: "BACKEND_NAME", Default: "",
		Usage: "name sent in X-Backend; empty means hostname:PORT"}
	latencySetting = app.Setting{Name: "LATENCY", Default: "0",
		Usage: "service time of each GET / (a Go duration such as 250ms); 0 answers at once"}
	jitterSetting = app.Setting{Name: "LATENCY_JITTER", Default: "0",
		Usage: "a uniform random 0..LATENCY_JITTER added to each GET /'s service time"}
	capacitySetting = app.Setting{Name: "CAPACITY", Default: "0",
		Usage: "how many GET / are in service at once, the rest wait in a FIFO queue; 0 means no limit"}
	failRateSetting = app.Setting{Name: "FAIL_RATE", Default: "0",
		Usage: "the fraction of GET / answered 500 at once, 0 to 1"}
	controlSetting = app.Setting{Name: "CONTROL", Default: "0",
		Usage: "1: serve POST /control on CONTROL_PORT, to change the knobs and take PORT down while running; 0: no control"}
	controlPortSetting = app.Setting{Name: "CONTROL_PORT", Default: "9000",
		Usage: "CONTROL=1: port of POST /control and GET /stats"}
	controlBindSetting = app.Setting{Name: "CONTROL_BIND_HOST", Default: "127.0.0.1",
		Usage: "CONTROL=1: address CONTROL_PORT listens on, an IP address or a host name (0.0.0.0: every interface)"}
	registerSetting = app.Setting{Name: "REGISTER", Default: "0",
		Usage: "1: announce this backend in Redis (REDIS_URL, REDIS_KEY) every HEARTBEAT, so that the dispatchers put ADVERTISE_URL in the list; 0: wait to be seeded"}
	advertiseSetting = app.Setting{Name: "ADVERTISE_URL", Default: "",
		Usage: "REGISTER=1: the URL the list holds for this backend; empty means http://HOSTNAME:PORT"}
	heartbeatSetting = app.Setting{Name: "HEARTBEAT", Default: members.DefaultHeartbeat.String(),
		Usage: "REGISTER=1: how often the registration is renewed, from 100ms to 1h; it lives three heartbeats"}
	drainSetting = app.Setting{Name: "DRAIN_TIMEOUT", Default: "10s",
		Usage: "after SIGTERM: how long the backend may take to leave the list (REGISTER=1) and answer the requests in flight before it exits"}
	settings = []app.Setting{portSetting, nameSetting, latencySetting, jitterSetting, capacitySetting,
		failRateSetting, controlSetting, controlPortSetting, controlBindSetting,
		registerSetting, advertiseSetting, heartbeatSetting, drainSetting,
		redisconn.RedisURL, store.RedisKey, redisconn.RedisTLSCA, redisconn.RedisTLSCert, redisconn.RedisTLSKey}
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { <-ctx.Done(); stop() }() // after the first signal, a second one kills at once
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "backend:", err)
		os.Exit(1)
	}
}

// config is the backend's settings, read and checked.
type config struct {
	port, name string // name: sent in X-Backend
	knobs      knobs  // the starting knobs; POST /control changes them
	// control: CONTROL=1; controlHost and controlPort are CONTROL_BIND_HOST
	// and CONTROL_PORT, set only then.
	control                  bool
	controlHost, controlPort string
	drain                    time.Duration // DRAIN_TIMEOUT
	// register: REGISTER=1; then the registration's settings: the URL
	// advertised, the heartbeat, and where Redis is.
	register  bool
	advertise string
	heartbeat time.Duration
	redisURL  string
	key       string
	redisTLS  *tls.Config
}

// loadConfig reads the settings; an error names the first bad one and the
// values it accepts.
func loadConfig(getenv func(string) string) (config, error) {
	c := config{port: portSetting.Get(getenv), name: nameSetting.Get(getenv)}
	if c.name == "" {
		host, _ := os.Hostname()
		c.name = net.JoinHostPort(host, c.port)
	}
	var ok bool
	for _, d := range []struct {
		s   app.Setting
		dst *time.Duration
	}{{latencySetting, &c.knobs.latency}, {jitterSetting, &c.knobs.jitter}} {
		v := d.s.Get(getenv)
		if *d.dst, ok = parseDuration(v); !ok {
			return c, fmt.Errorf("%s=%q: want %s", d.s.Name, v, acceptsDuration)
		}
	}
	v := capacitySetting.Get(getenv)
	if c.knobs.capacity, ok = parseCapacity(v); !ok {
		return c, fmt.Errorf("%s=%q: want %s", capacitySetting.Name, v, acceptsCapacity)
	}
	v = failRateSetting.Get(getenv)
	if c.knobs.failRate, ok = parseFailRate(v); !ok {
		return c, fmt.Errorf("%s=%q: want %s", failRateSetting.Name, v, acceptsFailRate)
	}
	switch v = controlSetting.Get(getenv); v {
	case "0":
	case "1":
		c.control = true
		c.controlHost, c.controlPort = controlBindSetting.Get(getenv), controlPortSetting.Get(getenv)
		if !backend.ValidBindHost(c.controlHost) {
			return c, fmt.Errorf("%s=%q: want an IP address (127.0.0.1, 0.0.0.0, ::1) or a host name",
				controlBindSetting.Name, c.controlHost)
		}
		if n, err := strconv.Atoi(c.controlPort); err != nil || n < 0 || n > 65535 {
			return c, fmt.Errorf("%s=%q: want a port number, 0 to 65535", controlPortSetting.Name, c.controlPort)
		}
	default:
		return c, fmt.Errorf("%s=%q: want 1 (serve POST /control on %s) or 0", controlSetting.Name, v, controlPortSetting.Name)
	}
	v = drainSetting.Get(getenv)
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return c, fmt.Errorf("%s=%q: want a positive duration such as 10s", drainSetting.Name, v)
	}
	c.drain = d
	return c, loadRegister(&c, getenv)
}

// maxHeartbeat bounds HEARTBEAT: a registration lives three heartbeats, so
// a backend that crashes stays in the list that long; and three times a
// duration much longer would overflow time.Duration.
const maxHeartbeat = time.Hour

// loadRegister reads REGISTER and, with REGISTER=1, what registering needs:
// ADVERTISE_URL (a URL the list accepts), HEARTBEAT and Redis's settings,
// as the seeder and the dispatcher read them.
func loadRegister(c *config, getenv func(string) string) error {
	switch v := registerSetting.Get(getenv); v {
	case "0":
		return nil
	case "1":
		c.register = true
	default:
		return fmt.Errorf("%s=%q: want 1 (announce this backend in Redis) or 0", registerSetting.Name, v)
	}
	c.advertise = advertiseSetting.Get(getenv)
	if c.advertise == "" {
		host, _ := os.Hostname()
		c.advertise = "http://" + net.JoinHostPort(host, c.port)
	}
	// As the seeder writes a URL, scheme and host in lower case: the same
	// backend seeded and registered is one entry, not two.
	u, err := backend.Normalize(c.advertise)
	if err != nil {
		return fmt.Errorf("%s=%q: want the http(s) URL the dispatchers reach this backend at, such as http://backend4:5000: %w", advertiseSetting.Name, c.advertise, err)
	}
	c.advertise = u
	v := heartbeatSetting.Get(getenv)
	d, err := time.ParseDuration(v)
	if err != nil || d < 100*time.Millisecond || d > maxHeartbeat {
		return fmt.Errorf("%s=%q: want a duration from 100ms to %v, such as 2s", heartbeatSetting.Name, v, maxHeartbeat)
	}
	c.heartbeat = d
	c.redisURL = redisconn.RedisURL.Get(getenv)
	if c.key, err = store.LoadKey(getenv); err != nil {
		return err
	}
	if c.redisTLS, err = redisconn.LoadTLS(getenv); err != nil {
		return err
	}
	// Parses REDIS_URL without connecting: a bad one is refused now.
	rdb, err := redisconn.ConnectTLS(c.redisURL, "backend", c.redisTLS)
	if err != nil {
		return err
	}
	return rdb.Close()
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	c, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	if len(args) > 0 {
		switch args[0] {
		case "healthcheck":
			return app.Healthcheck(ctx, app.LocalURL("", c.port, "/healthz"))
		case "check": // loadConfig accepted every setting
			return app.PrintSettings(os.Stdout, settings, getenv)
		}
		return fmt.Errorf("unknown command %q (want no argument, healthcheck or check)", args[0])
	}
	// Listen first, so that "address in use" fails at start.
	b, err := listen(c, "")
	if err != nil {
		return err
	}
	attrs := []any{"addr", b.port.Addr().String(), "name", c.name, "latency", c.knobs.latency,
		"latency_jitter", c.knobs.jitter, "capacity", c.knobs.capacity, "fail_rate", c.knobs.failRate}
	if b.controlLn != nil {
		attrs = append(attrs, "control", b.controlLn.Addr().String())
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	log.Info("backend listening", attrs...)
	if !c.register {
		return b.serve(ctx, c.drain, nil)
	}
	redisconn.LogTo(log)
	rdb, err := redisconn.ConnectTLS(c.redisURL, "backend", c.redisTLS)
	if err != nil {
		return err
	}
	defer rdb.Close()
	st := store.NewStore(rdb, c.key, log)
	// Say at once what the Redis user may not do; the heartbeats say it
	// too, and go on trying.
	checkCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	if err := st.CheckRegister(checkCtx, c.advertise); errors.Is(err, pick.ErrNoPermission) {
		log.Error("the redis user may not register this backend (docs/security.md)", "err", err)
	}
	cancel()
	reg := members.NewRegistrar(st, c.advertise, c.heartbeat, log)
	go reg.Run(ctx)
	return b.serve(ctx, c.drain, reg.Leave)
}

// server is a backend listening: PORT, and CONTROL_PORT with CONTROL=1.
type server struct {
	svc       *service
	port      *trafficPort
	controlLn net.Listener // nil without CONTROL=1
	control   *echo.Echo
}

// listen opens c's ports: PORT on host ("" is every interface) and, with
// CONTROL=1, CONTROL_PORT on CONTROL_BIND_HOST.
func listen(c config, host string) (*server, error) {
	b := &server{svc: newService(c.knobs)}
	srv := app.NewServer(newServer(c.name, b.svc), app.Limits{})
	var err error
	if b.port, err = listenTraffic(host, c.port, srv); err != nil {
		return nil, fmt.Errorf("%s=%s: %w", portSetting.Name, c.port, err)
	}
	if c.control {
		if b.controlLn, err = net.Listen("tcp", net.JoinHostPort(c.controlHost, c.controlPort)); err != nil {
			b.port.Close()
			return nil, fmt.Errorf("%s=%s %s=%s: %w", controlBindSetting.Name, c.controlHost, controlPortSetting.Name, c.controlPort, err)
		}
		b.control = newControlServer(c.name, &controller{svc: b.svc, port: b.port})
	}
	return b, nil
}

// serve serves both ports until ctx is done or one of them fails, which
// stops the other. When ctx is done (SIGTERM), PORT first goes on serving
// while leave, if not nil, takes the backend out of the list; then it stops
// accepting connections and answers the requests in flight; drain bounds
// the two together (DRAIN_TIMEOUT).
func (b *server) serve(ctx context.Context, drain time.Duration, leave func(context.Context)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	go func() { errc <- app.ServeServerThen(ctx, b.port, b.port.srv, drain, leave) }()
	n := 1
	if b.controlLn != nil {
		n++
		go func() { errc <- app.Serve(ctx, b.controlLn, b.control, drain) }()
	}
	var first error
	for range n {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
		cancel()
	}
	return first
}

// statusClientClosed is nginx's code for a request whose client left before
// the answer; nobody receives it, but a log in between may record it.
const statusClientClosed = 499

// newServer returns the routes of PORT:
//
//	GET /         200 "Hello, World!", after a slot and a service time of svc;
//	              500 at once for a failure drawn by FAIL_RATE
//	GET /healthz  200 "ok"
//	ANY /whoami   200, JSON: this backend's name and the method, path, query
//	              and body it received (to see what a redirect kept)
//	GET /stats    200, JSON: GET /'s counts in service, queued, served and
//	              failed, and the knobs of svc
//
// Only GET / goes through svc; the others answer at once, so that health
// checks do not queue behind load. While the backend is down (POST /control
// on CONTROL_PORT), every request that still reaches PORT, on a connection
// opened before, is answered 503 "down". Every response, errors included,
// carries X-Backend: name.
func newServer(name string, svc *service) *echo.Echo {
	e := newEcho(name)
	e.Use(func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if c.Path() != "/" && svc.isDown() { // GET / says so itself, counted
				return c.String(http.StatusServiceUnavailable, "down")
			}
			return next(c)
		}
	})
	e.GET("/", func(c echo.Context) error {
		switch err := svc.do(c.Request().Context()); err {
		case nil:
			return c.String(http.StatusOK, "Hello, World!")
		case errFailed:
			return c.String(http.StatusInternalServerError, "failed on purpose (FAIL_RATE)")
		case errDown:
			return c.String(http.StatusServiceUnavailable, "down")
		}
		return c.NoContent(statusClientClosed)
	})
	e.GET("/stats", func(c echo.Context) error {
		return c.JSON(http.StatusOK, svc.stats(name))
	})
	e.GET("/healthz", func(c echo.Context) error {
		return c.String(http.StatusOK, "ok")
	})
	e.Any("/whoami", func(c echo.Context) error {
		body, err := io.ReadAll(io.LimitReader(c.Request().Body, 1<<20))
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, whoami{
			Backend: name,
			Method:  c.Request().Method,
			Path:    c.Request().URL.Path,
			Query:   c.Request().URL.RawQuery,
			Body:    string(body),
		})
	})
	return e
}

// newEcho is an Echo without its banner whose every response, errors
// included, carries X-Backend: name.
func newEcho(name string) *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.Use(func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			c.Response().Header().Set("X-Backend", name)
			return next(c)
		}
	})
	return e
}

// whoami is the body of /whoami.
type whoami struct {
	Backend string `json:"backend"`
	Method  string `json:"method"`
	Path    string `json:"path"`
	Query   string `json:"query"`
	Body    string `json:"body"`
}
