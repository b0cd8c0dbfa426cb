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
	if !hasDotSegment(p) {
		return p // dots only inside names ("app.js"): untouched, no allocation
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

// hasDotSegment reports whether a segment of the escaped path p (after its
// leading "/") is a dot segment, as dots counts them.
func hasDotSegment(p string) bool {
	for rest := p[1:]; ; {
		seg, more, found := strings.Cut(rest, "/")
		if dots(seg) != 0 {
			return true
		}
		if !found {
			return false
		}
		rest = more
	}
}

// dots is 1 for a segment that decodes to ".", 2 for "..", else 0: a
// segment made of one or two dots, each "." or "%2e" ("%2E").
func dots(seg string) int {
	n := 0
	for i := 0; i < len(seg); n++ {
		switch {
		case seg[i] == '.':
			i++
		case len(seg)-i >= 3 && seg[i] == '%' && seg[i+1] == '2' && (seg[i+2] == 'e' || seg[i+2] == 'E'):
			i += 3
		default:
			return 0
		}
	}
	if n > 2 {
		return 0
	}
	return n
}

// hidesDotSegment reports whether the escaped path p hides a "." or ".."
// segment that a backend could resolve, though cleanPath left none in the
// URL. A backend may see one
//
//   - between escaped slashes or backslashes, once it decodes the path
//     ("/..%2F..%2Fetc", "/..%5Cx", "/..\\x");
//   - in a segment with ";" parameters, which a Tomcat-style backend drops
//     before it resolves dot segments ("/..;/x", "/..;jsessionid=1/");
//   - behind an escape escaped again, once it decodes the path twice or
//     more ("/%252e%252e/x", "/..%252F..%252Fetc").
//
// So every decoding of p, from none to as many as change it, is split at
// "/" and "\\", each segment is cut at its first ";", and a "." or ".."
// found is refused (400), in both modes, rather than guessing how often the
// backend decodes or whether it reads parameters. A path without a "." or
// "%2" cannot hide one (every escape of "." or "%" starts with "%2"); one
// without a percent-escape is checked without allocating.
func hidesDotSegment(p string) bool {
	if !strings.Contains(p, ".") && !strings.Contains(p, "%2") {
		return false // no dot at all, plain or escaped: the usual case
	}
	for {
		if dotSegmentIn(p) {
			return true
		}
		d := unescapeValid(p)
		if d == p {
			return false
		}
		p = d // shorter by two bytes per escape: the loop ends
	}
}

// dotSegmentIn reports whether p, split at "/" and "\\", has a segment that
// is "." or ".." once cut at its first ";".
func dotSegmentIn(p string) bool {
	start := 0
	for i := 0; i <= len(p); i++ {
		if i < len(p) && p[i] != '/' && p[i] != '\\' {
			continue
		}
		s := p[start:i]
		if j := strings.IndexByte(s, ';'); j >= 0 {
			s = s[:j]
		}
		if s == "." || s == ".." {
			return true
		}
		start = i + 1
	}
	return false
}

// unescapeValid decodes every valid %XX escape of s and keeps the rest as
// it is ("%zz", a "%" at the end), as a lenient backend decodes a path. It
// returns s itself, without allocating, when s holds no valid escape.
func unescapeValid(s string) string {
	first := -1
	for i := 0; i+2 < len(s); i++ {
		if s[i] == '%' && ishex(s[i+1]) && ishex(s[i+2]) {
			first = i
			break
		}
	}
	if first < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	b.WriteString(s[:first])
	for i := first; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && ishex(s[i+1]) && ishex(s[i+2]) {
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
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
