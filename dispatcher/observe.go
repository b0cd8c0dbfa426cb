package main

import (
	"log/slog"
	"net/url"
	"time"

	"github.com/labstack/echo/v4"
)

// backendKey is where front.handle leaves, on the echo.Context, the
// backend it chose, for observeRequests to log and count.
const backendKey = "spread.backend"

// chose notes on c that the request goes to backend.
func chose(c echo.Context, backend *url.URL) { c.Set(backendKey, backend.String()) }

// observeRequests is the main port's middleware that sees every request
// once it has been answered: it counts it in m (spread_requests_total) and
// writes one log line at info level, also when its answer was cut short:
//
//	level=INFO msg=request method=GET path=/ status=302 backend=http://localhost:5000 duration=412µs
//
// backend is empty when none was chosen (a 503).
func observeRequests(m *metrics, log *slog.Logger) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			defer func() {
				// An answer cut short (the backend's body broke off, or the
				// client left): the ReverseProxy aborts the handler with
				// panic(http.ErrAbortHandler) once the status was sent, and
				// net/http closes the connection. The request is counted and
				// logged all the same, with the status the client got.
				if v := recover(); v != nil {
					if c.Response().Committed {
						observe(m, log, c, start)
					}
					panic(v)
				}
			}()
			if err := next(c); err != nil {
				c.Error(err) // answer now, so that the status below is the one sent
			}
			observe(m, log, c, start)
			return nil
		}
	}
}

// observe counts and logs the request of c, answered since start.
func observe(m *metrics, log *slog.Logger, c echo.Context, start time.Time) {
	backend, _ := c.Get(backendKey).(string)
	status := c.Response().Status
	m.request(backend, status)
	req := c.Request()
	if !log.Enabled(req.Context(), slog.LevelInfo) {
		// Not even the attributes: they would be allocated for nothing.
		return
	}
	log.LogAttrs(req.Context(), slog.LevelInfo, "request",
		slog.String("method", req.Method), slog.String("path", req.URL.Path),
		slog.Int("status", status), slog.String("backend", backend),
		slog.Duration("duration", time.Since(start)))
}
