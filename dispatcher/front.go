package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/spreadlb/spread/internal/pick"

	"github.com/labstack/echo/v4"
	"github.com/spreadlb/spread/internal/balance"
)

// front is where every request on the main port is received, in both
// modes: it asks the Picker for a backend, then hands the request to the
// mode's deliverer (redirect.go or proxy.go), which both send it to the
// same path under the entry's (joinPath). CONNECT is refused with 405 first,
// and a path that hides a dot segment (behind "%2F", a ";" parameter, a
// double escape) with 400 (hidesDotSegment). A deliverer that could not
// reach the backend, and may try another, asks for the next pick.
type front struct {
	picker  balance.Picker
	timeout time.Duration // how long to wait on the Picker, per pick (REDIS_TIMEOUT)
	log     *slog.Logger
	deliver deliverer
}

// deliverer sends one request to the backend picked for it, and calls
// b.Done when the backend's part is over. retry reports that nothing was
// written and the request may go to the next pick.
type deliverer interface {
	deliver(c echo.Context, b balance.Backend, try int) (retry bool)
}

// newFront returns the main port's handler: an Echo server, with mw (the
// request metrics and log), behind pathFromSlash; every method, every path
// goes to f.handle.
func newFront(f *front, mw ...echo.MiddlewareFunc) http.Handler {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.Use(mw...)
	e.Any("/*", f.handle)
	// RouteNotFound also catches methods that Any does not list, so that
	// truly every request is dispatched rather than answered 405.
	e.RouteNotFound("/*", f.handle)
	return pathFromSlash(e)
}

// pathFromSlash gives request lines such as "GET http://host HTTP/1.1"
// (empty path) or "GET *" a path that starts with "/", which no route
// would match otherwise, so that they are dispatched like the rest.
// ("OPTIONS *" never gets here: net/http answers it itself.) It wraps the
// Echo server rather than being one of Echo's Pre middlewares, which cost
// two allocations a request: Echo builds a closure for each of them, and
// one for the routing behind them, on every request.
func pathFromSlash(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u := r.URL; len(u.Path) == 0 || u.Path[0] != '/' {
			u.Path, u.RawPath = "/"+u.Path, ""
		}
		next.ServeHTTP(w, r)
	})
}

// allowed is the Allow header of the 405 that answers CONNECT: the methods
// of RFC 9110 that the dispatcher passes on. Any other method, such as
// PURGE, is passed on too, but Allow cannot say "all but CONNECT".
const allowed = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE"

func (f *front) handle(c echo.Context) error {
	if c.Request().Method == http.MethodConnect {
		// CONNECT asks for a tunnel to the host it names: the dispatcher
		// is not a forward proxy, a proxy would forward it to the entry's
		// path as if it were one, and no client follows a redirect of it.
		// Refused in both modes, before the pick: no rotation step.
		c.Response().Header().Set(echo.HeaderAllow, allowed)
		return c.String(http.StatusMethodNotAllowed, "method not allowed: CONNECT (the dispatcher opens no tunnels)\n")
	}
	if hidesDotSegment(cleanPath(c.Request().URL.EscapedPath())) {
		// Refused before the pick: no rotation step is spent on it.
		return c.String(http.StatusBadRequest, "bad request: the path hides a dot segment (behind an escaped slash or a backslash, a \";\" parameter, or a double escape such as %252e)\n")
	}
	for try := 0; ; try++ {
		b, err := f.pick(c.Request())
		if err != nil {
			return f.noBackend(c, err)
		}
		chose(c, b.URL) // for the request log and metrics; the last one tried
		if !f.deliver.deliver(c, b, try) {
			return nil
		}
	}
}

// pick asks the Picker for a backend, waiting at most f.timeout.
func (f *front) pick(r *http.Request) (balance.Backend, error) {
	ctx, cancel := context.WithTimeout(r.Context(), f.timeout)
	defer cancel()
	b, err := f.picker.Pick(ctx, r)
	if err == nil && b.URL == nil {
		err = errors.New("the picker returned no backend and no error")
	}
	return b, err
}

// noBackend answers a request for which no backend could be chosen: 503,
// the reason in one line, and Retry-After.
func (f *front) noBackend(c echo.Context, err error) error {
	if c.Request().Context().Err() != nil {
		// The client left before a backend was chosen; nobody reads this.
		f.log.Debug("client gone before a backend was chosen", "path", c.Request().URL.Path)
		return c.NoContent(statusClientClosed)
	}
	status, msg := explain(err)
	f.log.Error("no backend for request", "method", c.Request().Method, "path", c.Request().URL.Path, "status", status, "err", err)
	c.Response().Header().Set("Retry-After", "1")
	return c.String(status, msg+"\n")
}

// statusClientClosed is what the request log and spread_requests_total
// record for a request whose client left before it was answered: nginx's
// 499 (Client Closed Request). No client receives it. Recording a 502 or
// a 503 instead would blame the backend, or Redis, for a client that gave
// up waiting.
const statusClientClosed = 499

// explain maps a pick error to the status and one-line body a client gets.
// Every failure is a 503: the dispatcher is up but cannot choose a backend
// now, and Retry-After invites the client to try again.
func explain(err error) (int, string) {
	switch {
	case errors.Is(err, pick.ErrNoBackends):
		return http.StatusServiceUnavailable, "no backends: the rotation list is empty or missing (fill it with `seeder seed URL...`; in the compose stack, `docker compose run --rm seeder` restores the tutorial's list)"
	case errors.Is(err, pick.ErrWrongType):
		return http.StatusServiceUnavailable, "misconfigured: the rotation key in Redis is not a list"
	case errors.Is(err, pick.ErrAllDown):
		return http.StatusServiceUnavailable, "all backends are down: every entry of the rotation list fails its health checks"
	case errors.Is(err, pick.ErrNoValidBackend):
		return http.StatusServiceUnavailable, "no valid backend: the rotation list holds only invalid URLs"
	case errors.Is(err, pick.ErrNoPermission):
		msg := "misconfigured: the Redis user may not run a command the pick needs"
		if pe := (*pick.PermissionError)(nil); errors.As(err, &pe) && pe.Command != "" {
			msg += " (" + pe.Command + ")"
		}
		return http.StatusServiceUnavailable, msg + "; see docs/security.md"
	case errors.Is(err, pick.ErrMisconfigured):
		return http.StatusServiceUnavailable, "misconfigured: Redis refuses the configuration (see /readyz on the admin port)"
	case pick.Unavailable(err):
		return http.StatusServiceUnavailable, "redis unavailable: cannot choose a backend"
	default:
		return http.StatusServiceUnavailable, fmt.Sprintf("cannot choose a backend (%T)", err)
	}
}
