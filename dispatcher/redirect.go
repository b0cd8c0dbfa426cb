package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/spreadlb/spread/internal/rotation"
)

// Picker chooses the backend for one request. It is the seam between HTTP
// and the balancing: *rotation.Store picks with one atomic step of the Redis
// list, *rotation.Local round-robins over a snapshot of it, and the HTTP
// layer never sees Redis. A Picker returns only URLs that
// passed rotation.ParseBackend.
type Picker interface {
	Next(ctx context.Context) (*url.URL, error)
}

// redirector is where every request on the main port is received: it asks
// the Picker for a backend and redirects the client there, keeping the
// request's path and query.
type redirector struct {
	picker  Picker
	status  int           // the redirect's status: 301, 302, 303, 307 or 308
	timeout time.Duration // how long to wait on the Picker
	log     *slog.Logger
}

// newRedirector returns the main port's Echo server: every method, every
// path goes to the redirector.
func newRedirector(r *redirector) *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	// Request lines such as "GET http://host HTTP/1.1" (empty path) or
	// "GET *" carry a path that does not start with "/", which no route
	// matches; give them one so that they are dispatched like the rest.
	// ("OPTIONS *" never gets here: net/http answers it itself.)
	e.Pre(func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if u := c.Request().URL; !strings.HasPrefix(u.Path, "/") {
				u.Path, u.RawPath = "/"+u.Path, ""
			}
			return next(c)
		}
	})
	e.Any("/*", r.handle)
	// RouteNotFound also catches methods that Any does not list, so that
	// truly every request is dispatched rather than answered 405.
	e.RouteNotFound("/*", r.handle)
	return e
}

func (r *redirector) handle(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), r.timeout)
	defer cancel()
	backend, err := r.picker.Next(ctx)
	if err == nil && backend == nil {
		err = errors.New("the picker returned no backend and no error")
	}
	if err != nil {
		status, msg := explain(err)
		if c.Request().Context().Err() != nil {
			// The client left before a backend was chosen; nobody reads this.
			r.log.Debug("client gone before a backend was chosen", "path", c.Request().URL.Path)
		} else {
			r.log.Error("no backend for request", "method", c.Request().Method, "path", c.Request().URL.Path, "status", status, "err", err)
		}
		c.Response().Header().Set("Retry-After", "1")
		return c.String(status, msg+"\n")
	}
	chose(c, backend) // for the request log and metrics (observeRequests)
	// The rotation is the point: no cache may replay this redirect.
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.Redirect(r.status, target(backend, c.Request().URL).String())
}

// target is backend joined with the request's path and query. Scheme and
// host always come from backend, which the Picker has validated; the
// request supplies only the path, which url.URL escapes, and the query,
// which escapeQuery escapes, so a request cannot change where the client is
// sent or add a header, and the Location is printable ASCII.
func target(backend, req *url.URL) *url.URL {
	u := *backend
	u.Path = strings.TrimSuffix(backend.Path, "/") + req.Path
	u.RawPath = strings.TrimSuffix(backend.EscapedPath(), "/") + req.EscapedPath()
	if u.RawPath == u.Path {
		u.RawPath = ""
	}
	u.RawQuery = escapeQuery(req.RawQuery)
	u.ForceQuery = false
	u.Fragment, u.RawFragment = "", ""
	return &u
}

// escapeQuery percent-encodes the bytes of a raw query that do not belong in
// a URL: spaces, controls, non-ASCII, '#' (which would start a fragment) and
// the characters RFC 3986 excludes. Go's HTTP server already refuses control
// characters in a request line; the rest arrive only from hand-made requests.
// Everything else, '%' escapes included, is kept as the client sent it.
func escapeQuery(q string) string {
	var b strings.Builder
	for i := 0; i < len(q); i++ {
		if c := q[i]; c <= ' ' || c >= 0x7f || strings.IndexByte("\"#<>\\^`{|}", c) >= 0 {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// explain maps a pick error to the status and one-line body a client gets.
// Every failure is a 503: the dispatcher is up but cannot choose a backend
// now, and Retry-After invites the client to try again.
func explain(err error) (int, string) {
	switch {
	case errors.Is(err, rotation.ErrNoBackends):
		return http.StatusServiceUnavailable, "no backends: the rotation list is empty or missing (fill it with `seeder seed`)"
	case errors.Is(err, rotation.ErrWrongType):
		return http.StatusServiceUnavailable, "misconfigured: the rotation key in Redis is not a list"
	case errors.Is(err, rotation.ErrAllDown):
		return http.StatusServiceUnavailable, "all backends are down: every entry of the rotation list fails its health checks"
	case errors.Is(err, rotation.ErrNoValidBackend):
		return http.StatusServiceUnavailable, "no valid backend: the rotation list holds only invalid URLs"
	case errors.Is(err, rotation.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, "redis unavailable: cannot choose a backend"
	default:
		return http.StatusServiceUnavailable, fmt.Sprintf("cannot choose a backend (%T)", err)
	}
}
