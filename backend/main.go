// Command backend is the tutorial's hello-world web server: it answers
// "Hello, World!" and names itself in an X-Backend header on every response,
// so a client sees which backend the dispatcher chose.
//
// A backend can be made slow and small, to watch how the dispatcher's
// strategies cope: LATENCY (plus up to LATENCY_JITTER) is each GET /'s
// service time, and CAPACITY bounds how many are in service at once while
// the rest wait in a FIFO queue. GET /stats shows the live counts. /healthz,
// /whoami and /stats answer at once, so health checks never queue behind load.
//
// Usage:
//
//	backend              serve on PORT
//	backend healthcheck  exit 0 if the backend on PORT answers GET /healthz
package main

import (
	"context"
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
	settings = []app.Setting{portSetting, nameSetting, latencySetting, jitterSetting, capacitySetting}
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
	port, name      string // name: sent in X-Backend
	latency, jitter time.Duration
	capacity        int // 0: no limit
}

// loadConfig reads the settings; an error names the first bad one and the
// values it accepts.
func loadConfig(getenv func(string) string) (config, error) {
	c := config{port: portSetting.Get(getenv), name: nameSetting.Get(getenv)}
	if c.name == "" {
		host, _ := os.Hostname()
		c.name = net.JoinHostPort(host, c.port)
	}
	var err error
	if c.latency, err = duration(latencySetting, getenv); err != nil {
		return c, err
	}
	if c.jitter, err = duration(jitterSetting, getenv); err != nil {
		return c, err
	}
	v := capacitySetting.Get(getenv)
	if c.capacity, err = strconv.Atoi(v); err != nil || c.capacity < 0 {
		return c, fmt.Errorf("%s=%q: want a whole number, 0 or more (0 means no limit)", capacitySetting.Name, v)
	}
	return c, nil
}

// duration reads s as a Go duration of 0 or more.
func duration(s app.Setting, getenv func(string) string) (time.Duration, error) {
	v := s.Get(getenv)
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%s=%q: want a duration of 0 or more, such as 0, 250ms or 2s", s.Name, v)
	}
	return d, nil
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	c, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	if len(args) > 0 {
		if args[0] == "healthcheck" {
			return app.Healthcheck(ctx, app.LocalURL(c.port, "/healthz"))
		}
		return fmt.Errorf("unknown command %q (want no argument, or healthcheck)", args[0])
	}

	// Listen first, so that "address in use" fails at start.
	ln, err := net.Listen("tcp", ":"+c.port)
	if err != nil {
		return err
	}
	slog.New(slog.NewTextHandler(stderr, nil)).Info("backend listening", "addr", ln.Addr().String(), "name", c.name,
		"latency", c.latency, "latency_jitter", c.jitter, "capacity", c.capacity)
	return app.Serve(ctx, ln, newServer(c.name, newService(c.latency, c.jitter, c.capacity)), 10*time.Second)
}

// statusClientClosed is nginx's code for a request whose client left before
// the answer; nobody receives it, but a log in between may record it.
const statusClientClosed = 499

// newServer returns the backend's routes:
//
//	GET /         200 "Hello, World!", after a slot and a service time of svc
//	GET /healthz  200 "ok"
//	ANY /whoami   200, JSON: this backend's name and the method, path, query
//	              and body it received (to see what a redirect kept)
//	GET /stats    200, JSON: GET /'s counts in service, queued and served,
//	              and the settings of svc
//
// Only GET / goes through svc; the others answer at once, so that health
// checks do not queue behind load. Every response, errors included, carries
// X-Backend: name.
func newServer(name string, svc *service) *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.Use(func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			c.Response().Header().Set("X-Backend", name)
			return next(c)
		}
	})
	e.GET("/", func(c echo.Context) error {
		if err := svc.do(c.Request().Context()); err != nil {
			return c.NoContent(statusClientClosed)
		}
		return c.String(http.StatusOK, "Hello, World!")
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

// whoami is the body of /whoami.
type whoami struct {
	Backend string `json:"backend"`
	Method  string `json:"method"`
	Path    string `json:"path"`
	Query   string `json:"query"`
	Body    string `json:"body"`
}
