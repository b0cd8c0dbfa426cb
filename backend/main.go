// Command backend is the tutorial's hello-world web server: it answers
// "Hello, World!" and names itself in an X-Backend header on every response,
// so a client sees which backend the dispatcher chose.
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
	settings = []app.Setting{portSetting, nameSetting}
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

// loadConfig returns the port to listen on and the name to send in X-Backend.
func loadConfig(getenv func(string) string) (port, name string) {
	port = portSetting.Get(getenv)
	name = nameSetting.Get(getenv)
	if name == "" {
		host, _ := os.Hostname()
		name = net.JoinHostPort(host, port)
	}
	return port, name
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	port, name := loadConfig(getenv)
	if len(args) > 0 {
		if args[0] == "healthcheck" {
			return app.Healthcheck(ctx, app.LocalURL(port, "/healthz"))
		}
		return fmt.Errorf("unknown command %q (want no argument, or healthcheck)", args[0])
	}

	// Listen first, so that "address in use" fails at start.
	ln, err := net.Listen("tcp", ":"+port)
	if err != nil {
		return err
	}
	slog.New(slog.NewTextHandler(stderr, nil)).Info("backend listening", "addr", ln.Addr().String(), "name", name)
	return app.Serve(ctx, ln, newServer(name), 10*time.Second)
}

// newServer returns the backend's routes:
//
//	GET /         200 "Hello, World!"
//	GET /healthz  200 "ok"
//	ANY /whoami   200, JSON: this backend's name and the method, path, query
//	              and body it received (to see what a redirect kept)
//
// Every response, errors included, carries X-Backend: name.
func newServer(name string) *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.Use(func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			c.Response().Header().Set("X-Backend", name)
			return next(c)
		}
	})
	e.GET("/", func(c echo.Context) error {
		return c.String(http.StatusOK, "Hello, World!")
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
