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
	b.Done(balance.Result{})
	return false
}

// target is backend joined with the request's path and query. Scheme and
// host always come from backend, which the Picker has validated; the
// request supplies only the path, which joinPath confines under backend's
// path and url.URL escapes, and the query, which escapeQuery escapes, so a
// request cannot change where the client is sent or add a header, and the
// Location is printable ASCII.
func target(backend, req *url.URL) *url.URL {
	u := *backend
	u.Path, u.RawPath = joinPath(backend, req)
	u.RawQuery = escapeQuery(req.RawQuery)
	u.ForceQuery = false
	u.Fragment, u.RawFragment = "", ""
	return &u
}

// joinPath is the path, decoded and escaped (for url.URL's Path and
// RawPath), that a request for req goes to on backend, in both modes: the
// request's escaped path with its dot segments removed (cleanPath), after
// backend's path. So it always starts with backend's path followed by "/",
// and holds no "." or ".." segment, escaped or not, that a browser or a
// backend could resolve to climb out of it. The redirect's Location and the
// proxied request's path are both this.
func joinPath(backend, req *url.URL) (path, rawPath string) {
	prefix := strings.TrimSuffix(backend.EscapedPath(), "/")
	raw := prefix + cleanPath(req.EscapedPath())
	path, err := url.PathUnescape(raw)
	if err != nil {
		// Not reached: both parts come escaped from url.URL, and
		// cleanPath only drops whole segments.
		return strings.TrimSuffix(backend.Path, "/") + "/", ""
	}
	if raw == path {
		raw = ""
	}
	return path, raw
}

// cleanPath removes the dot segments of p, an escaped path, as RFC 3986
// (5.2.4, remove_dot_segments) does, counting as a dot segment every
// segment that decodes to "." or "..", so that "%2e%2e" and ".%2E" are too,
// as browsers count them. The result starts with "/" (a path without one
// gets one), and ".." never climbs above it. Segments between escaped
// slashes (%2F) stay whole: they are one segment of the URL; see
// hidesDotSegment for what happens to them.
func cleanPath(p string) string {
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	if !strings.Contains(p, ".") && !strings.Contains(p, "%2") {
		return p // no dot segment possible: the usual case, untouched
	}
	segs := strings.Split(p[1:], "/")
	out := make([]string, 0, len(segs))
	for i, s := range segs {
		last := i == len(segs)-1
		switch dots(s) {
		case 1:
			if last {
				out = append(out, "") // "/a/." is "/a/"
			}
		case 2:
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "") // "/a/b/.." is "/a/"
			}
		default:
			out = append(out, s)
		}
	}
	return "/" + strings.Join(out, "/")
}

// dots is 1 for a segment that decodes to ".", 2 for "..", else 0.
func dots(seg string) int {
	if len(seg) > 6 || (seg != "" && seg[0] != '.' && seg[0] != '%') {
		return 0
	}
	switch d, _ := url.PathUnescape(seg); d {
	case ".":
		return 1
	case "..":
		return 2
	}
	return 0
}

// hidesDotSegment reports whether the escaped path p, once decoded, has a
// "." or ".." segment between slashes or backslashes. After cleanPath only
// an escaped slash ("/..%2F..%2Fetc") or a backslash can hide one there, and
// a backend that decodes the path before resolving it (most do) would climb
// out of its prefix with it, so the dispatcher refuses such a request (400)
// in both modes rather than guess which slashes the backend means.
func hidesDotSegment(p string) bool {
	if !strings.Contains(p, ".") && !strings.Contains(p, "%2") {
		return false // no dot at all, plain or escaped: the usual case, no allocation
	}
	d, err := url.PathUnescape(p)
	if err != nil {
		return true
	}
	start := 0
	for i := 0; i <= len(d); i++ {
		if i < len(d) && d[i] != '/' && d[i] != '\\' {
			continue
		}
		if s := d[start:i]; s == "." || s == ".." {
			return true
		}
		start = i + 1
	}
	return false
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
