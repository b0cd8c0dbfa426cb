package main

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/labstack/echo/v4"
	"github.com/spreadlb/spread/internal/balance"
)

// redirector delivers in MODE=redirect: it answers with a redirect to the
// picked backend, keeping the request's path and query.
type redirector struct {
	status int // the redirect's status: 301, 302, 303, 307 or 308
}

func (r redirector) deliver(c echo.Context, b balance.Backend, _ int) bool {
	// The pick is the point: no cache may replay this redirect.
	c.Response().Header().Set("Cache-Control", "no-store")
	_ = c.Redirect(r.status, target(b.URL, c.Request().URL).String())
	b.Done(nil)
	return false
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
