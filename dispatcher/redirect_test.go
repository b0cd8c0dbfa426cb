package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spreadlb/spread/internal/pick"

	"github.com/spreadlb/spread/internal/backend"
	"github.com/spreadlb/spread/internal/balance"
	"github.com/spreadlb/spread/internal/redistest"
	"github.com/spreadlb/spread/internal/store"
)

var three = []string{"http://127.0.0.1:5000", "http://127.0.0.1:5001", "http://127.0.0.1:5002"}

// stack is a dispatcher's main handler over a real Redis.
type stack struct {
	redis *redistest.Server
	store *store.Store
	h     http.Handler
}

func newStack(t *testing.T, status int) *stack {
	t.Helper()
	srv := redistest.Start(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st := store.NewStore(srv.Client, "servers", log)
	f := &front{picker: balance.NewShared(store.NewRotation(st)), timeout: time.Second, log: log, deliver: redirector{status: status}}
	return &stack{redis: srv, store: st, h: newFront(f)}
}

func (s *stack) do(method, target string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	s.h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	return rec
}

func (s *stack) seed(t *testing.T, urls ...string) {
	t.Helper()
	if err := s.store.Replace(context.Background(), urls); err != nil {
		t.Fatal(err)
	}
}

func TestRedirectsRotateExactly(t *testing.T) {
	s := newStack(t, http.StatusFound)
	s.seed(t, three...)
	counts := map[string]int{}
	var order []string
	for i := range 30 {
		rec := s.do("GET", "/")
		if rec.Code != http.StatusFound {
			t.Fatalf("request %d: got status %d, want 302 (body %q)", i, rec.Code, rec.Body.String())
		}
		loc := rec.Header().Get("Location")
		counts[loc]++
		order = append(order, loc)
		if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
			t.Errorf("request %d: got Cache-Control %q, want no-store", i, cc)
		}
	}
	for _, b := range three {
		if counts[b+"/"] != 10 {
			t.Errorf("%s: got %d redirects, want 10 (all: %v)", b, counts[b+"/"], counts)
		}
	}
	for i := 3; i < len(order); i++ {
		if order[i] != order[i%3] {
			t.Errorf("request %d went to %q, want %q: the order must repeat every 3", i, order[i], order[i%3])
		}
	}
}

func TestRedirectKeepsPathQueryAndMethod(t *testing.T) {
	s := newStack(t, http.StatusTemporaryRedirect)
	s.seed(t, "http://b.example:5000/app/")
	tests := []struct{ method, target, want string }{
		{"GET", "/", "http://b.example:5000/app/"},
		{"GET", "/hello/world?x=1&y=two", "http://b.example:5000/app/hello/world?x=1&y=two"},
		{"POST", "/form", "http://b.example:5000/app/form"},
		{"DELETE", "/items/7", "http://b.example:5000/app/items/7"},
		{"PURGE", "/cache", "http://b.example:5000/app/cache"},
		{"GET", "/a%2Fb?q=%20", "http://b.example:5000/app/a%2Fb?q=%20"},
		{"GET", "//evil.example/x", "http://b.example:5000/app//evil.example/x"},
		{"GET", "/%0d%0aSet-Cookie:%20x=1", "http://b.example:5000/app/%0d%0aSet-Cookie:%20x=1"},
		{"GET", "/?next=http://evil.example", "http://b.example:5000/app/?next=http://evil.example"},
		{"GET", "/../x", "http://b.example:5000/app/x"},
		{"GET", "/%2e%2e/%2E./.%2e/x?y=1", "http://b.example:5000/app/x?y=1"},
		{"GET", "/a/b/../../../../etc", "http://b.example:5000/app/etc"},
		// Look like the refused ones (TestPathsHidingDotSegmentsAreRefused),
		// hide no dot segment, and pass unchanged.
		{"GET", "/shop;jsessionid=1/cart", "http://b.example:5000/app/shop;jsessionid=1/cart"},
		{"GET", "/a..;b/.x;y/;..", "http://b.example:5000/app/a..;b/.x;y/;.."},
		{"GET", "/100%25/v1.2/a.txt", "http://b.example:5000/app/100%25/v1.2/a.txt"},
		{"GET", "/%25zz/%252/x.y", "http://b.example:5000/app/%25zz/%252/x.y"},
	}
	for _, tc := range tests {
		rec := s.do(tc.method, tc.target)
		if rec.Code != http.StatusTemporaryRedirect {
			t.Errorf("%s %s: got status %d, want 307", tc.method, tc.target, rec.Code)
		}
		if got := rec.Header().Get("Location"); got != tc.want {
			t.Errorf("%s %s: got Location %q, want %q", tc.method, tc.target, got, tc.want)
		}
		if len(rec.Header()["Set-Cookie"]) > 0 {
			t.Errorf("%s %s: a request added a Set-Cookie header", tc.method, tc.target)
		}
	}
}

// A path that hides a dot segment behind an escaped slash or a backslash
// is refused, with no rotation step: a backend that decodes it would climb
// out of the entry's path.
func TestPathsHidingDotSegmentsAreRefused(t *testing.T) {
	s := newStack(t, http.StatusFound)
	s.seed(t, "http://b.example:5000/app/")
	for _, target := range []string{"/..%2F..%2Fetc", "/a/..%2f", "/%2e%2e%5cx", "/x/.%2F",
		// Path parameters: a Tomcat-style backend drops ";..." from each
		// segment, and "..;" becomes "..".
		"/..;/x", "/a/..;jsessionid=1/..;/etc", "/.;/x", "/.;x/y", "/%2e%2e;x/y", "/..%3B/x", "/..;%5Cx",
		// Escaped twice or more: a backend that decodes twice sees "..".
		"/%252e%252e/x", "/.%252E/x", "/%25252e%25252e/x", "/..%252F..%252Fetc", "/x/%252e"} {
		rec := s.do("GET", target)
		if rec.Code != http.StatusBadRequest || rec.Header().Get("Location") != "" {
			t.Errorf("GET %s: got %d, Location %q; want 400 and none", target, rec.Code, rec.Header().Get("Location"))
		}
	}
	if tally, _ := s.store.Tally(context.Background()); len(tally) != 0 {
		t.Errorf("refused requests took rotation steps: tally %v, want none", tally)
	}
}

// The path checks (cleanPath, hidesDotSegment) allocate nothing for a path
// that has no percent-escape and no dot segment, dots in names and ";"
// parameters included: every request pays for them.
func TestPathChecksAllocateNothingForOrdinaryPaths(t *testing.T) {
	for _, p := range []string{"/", "/some/path", "/static/app.min.js", "/v1.2/a..b/.well-known/x",
		"/shop;jsessionid=1/cart", "/a..;b/c"} {
		if n := testing.AllocsPerRun(100, func() {
			if hidesDotSegment(cleanPath(p)) {
				t.Fatalf("%s: refused", p)
			}
		}); n != 0 {
			t.Errorf("%s: got %v allocations per path, want 0", p, n)
		}
	}
}

func TestNoRedirectWithoutAValidBackend(t *testing.T) {
	s := newStack(t, http.StatusFound)
	ctx := context.Background()
	tests := []struct {
		name     string
		setup    func()
		wantBody string
	}{
		{"missing key", func() {}, "no backends"},
		// Redis deletes a list when its last entry goes, so this is the
		// same state as a missing key, reached the way a user would.
		{"last entry removed", func() { s.seed(t, three[0]); s.store.Remove(ctx, three[0]) }, "no backends"},
		{"wrong type", func() { s.redis.Client.Set(ctx, "servers", "x", 0) }, "not a list"},
		{"only invalid entries", func() { s.redis.Client.RPush(ctx, "servers", "javascript:alert(1)", "//evil.example") }, "no valid backend"},
		{"every entry down", func() { s.seed(t, three...); s.redis.Client.SAdd(ctx, s.store.DownKey(), three) }, "all backends are down"},
		{"redis down", func() { s.redis.Stop() }, "redis unavailable"},
	}
	for _, tc := range tests {
		s.redis.Client.Del(ctx, "servers")
		tc.setup()
		rec := s.do("GET", "/x")
		if rec.Code != http.StatusServiceUnavailable {
			t.Errorf("%s: got status %d, want 503", tc.name, rec.Code)
		}
		if loc := rec.Header().Get("Location"); loc != "" {
			t.Errorf("%s: got Location %q, want none", tc.name, loc)
		}
		if body := rec.Body.String(); !strings.Contains(body, tc.wantBody) || strings.Count(body, "\n") != 1 {
			t.Errorf("%s: got body %q, want one line with %q", tc.name, body, tc.wantBody)
		}
		if ra := rec.Header().Get("Retry-After"); ra != "1" {
			t.Errorf("%s: got Retry-After %q, want 1", tc.name, ra)
		}
	}
}

func TestInvalidEntriesAreSkipped(t *testing.T) {
	s := newStack(t, http.StatusFound)
	ctx := context.Background()
	s.redis.Client.RPush(ctx, "servers", "http://good.example:1", "javascript:alert(1)", "http://evil.example\r\nX: y", "http://u:p@evil.example")
	for i := range 8 {
		rec := s.do("GET", "/")
		if got := rec.Header().Get("Location"); rec.Code != http.StatusFound || got != "http://good.example:1/" {
			t.Errorf("request %d: got %d %q, want 302 to the one valid entry", i, rec.Code, got)
		}
	}
}

func TestTarget(t *testing.T) {
	tests := []struct{ backend, request, want string }{
		{"http://a:5000", "/", "http://a:5000/"},
		{"http://a:5000/", "/x?y=1", "http://a:5000/x?y=1"},
		{"https://a/base", "/x", "https://a/base/x"},
		{"http://a:5000", "/%2F%2Fevil", "http://a:5000/%2F%2Fevil"},
		{"http://a:5000", "/caf%C3%A9", "http://a:5000/caf%C3%A9"},
		{"http://a:5000", "/?q=caf\xc3\xa9&x=\"<>`{|}^\\", "http://a:5000/?q=caf%C3%A9&x=%22%3C%3E%60%7B%7C%7D%5E%5C"},
		{"http://a:5000", "/?a=%41&b=%zz", "http://a:5000/?a=%41&b=%zz"},
		{"http://a:5000/app/", "/../x", "http://a:5000/app/x"},
		{"http://a:5000/app", "/..", "http://a:5000/app/"},
		{"http://a:5000/app", "/%2e%2e/%2E%2e/x", "http://a:5000/app/x"},
		{"http://a:5000/app", "/a/./b/../c", "http://a:5000/app/a/c"},
		{"http://a:5000/app", "/a/.", "http://a:5000/app/a/"},
		{"http://a:5000/app", "/a/b/..", "http://a:5000/app/a/"},
		{"http://a:5000/app", "//evil.example/../x", "http://a:5000/app//x"},
		{"http://a:5000/app", "/a..b/.../.x", "http://a:5000/app/a..b/.../.x"},
		{"http://a:5000/app", "/caf%C3%A9/../%2F%2F", "http://a:5000/app/%2F%2F"},
		{"http://a:5000/app", "*", "http://a:5000/app/%2A"},
	}
	for _, tc := range tests {
		b, err := backend.Parse(tc.backend)
		if err != nil {
			t.Fatal(err)
		}
		r, err := url.ParseRequestURI(tc.request)
		if err != nil {
			t.Fatal(err)
		}
		if got := target(b, r).String(); got != tc.want {
			t.Errorf("target(%q, %q): got %q, want %q", tc.backend, tc.request, got, tc.want)
		}
	}
}

// FuzzTarget: whatever the request's path and query, the redirect goes to
// the backend's scheme and host, and is printable ASCII (so nothing can end
// a header line). Its path stays under the entry's path "/app/": it holds
// no dot segment, escaped or not, that a browser would resolve, and, unless
// the front refuses the request (hidesDotSegment), none once decoded that a
// backend would, nor once decoded again or stripped of ";" parameters.
func FuzzTarget(f *testing.F) {
	escape := regexp.MustCompile(`%[0-9A-Fa-f]{2}`)
	for _, s := range []string{"/", "/a?b=c", "//evil.example", "/\\evil", "/%0d%0a", "/?#x", "/@evil", "/..//..", "*",
		"/%2e%2e/x", "/.%2E/./", "/..%2f..%2fetc", "/a/../../b", "/..\\x",
		"/..;/x", "/a/..;x/..;/b", "/.;/x", "/..%3b/x", "/shop;jsessionid=1/cart",
		"/%252e%252e/x", "/..%252F..%252Fetc", "/%25252e%25252E/x", "/100%25/a.txt", "/%25zz/%252/x"} {
		f.Add(s)
	}
	bk, _ := backend.Parse("http://backend1:5000/app")
	f.Fuzz(func(t *testing.T, requestURI string) {
		r, err := url.ParseRequestURI(requestURI)
		if err != nil {
			return // the HTTP server refuses such a request line
		}
		loc := target(bk, r).String()
		for _, c := range []byte(loc) {
			if c <= ' ' || c >= 0x7f {
				t.Fatalf("request %q: Location %q holds byte %#x, not printable ASCII", requestURI, loc, c)
			}
		}
		u, err := url.Parse(loc)
		if err != nil {
			t.Fatalf("Location %q does not parse: %v", loc, err)
		}
		if u.Scheme != "http" || u.Host != "backend1:5000" || u.User != nil {
			t.Fatalf("request %q sent the client to %q (scheme %q host %q)", requestURI, loc, u.Scheme, u.Host)
		}
		esc := u.EscapedPath()
		if !strings.HasPrefix(esc, "/app/") {
			t.Fatalf("request %q: Location %q is not under /app/", requestURI, loc)
		}
		for _, seg := range strings.Split(esc, "/") {
			if d, _ := url.PathUnescape(seg); d == "." || d == ".." {
				t.Fatalf("request %q: Location %q keeps the dot segment %q", requestURI, loc, seg)
			}
		}
		if hidesDotSegment(cleanPath(r.EscapedPath())) {
			return // the front answers 400 and sends no one anywhere
		}
		if !strings.HasPrefix(u.Path, "/app/") || path.Clean(u.Path) != "/app" && !strings.HasPrefix(path.Clean(u.Path), "/app/") {
			t.Fatalf("request %q: Location %q decodes to %q, which resolves outside /app/", requestURI, loc, u.Path)
		}
		for _, seg := range strings.FieldsFunc(u.Path, func(r rune) bool { return r == '/' || r == '\\' }) {
			if seg == "." || seg == ".." {
				t.Fatalf("request %q: Location %q decodes to %q, with a dot segment", requestURI, loc, u.Path)
			}
		}
		// Nor once a backend drops ";" parameters from its segments
		// (Tomcat: "..;x" is "..") or decodes the path again, up to eight
		// times, leniently ("%252e" is "%2e", then "."; "%zz" stays).
		deep := u.Path
		for range 8 {
			deep = escape.ReplaceAllStringFunc(deep, func(e string) string {
				c, _ := strconv.ParseUint(e[1:], 16, 8)
				return string([]byte{byte(c)})
			})
		}
		for _, seg := range strings.FieldsFunc(deep, func(r rune) bool { return r == '/' || r == '\\' }) {
			if seg, _, _ = strings.Cut(seg, ";"); seg == "." || seg == ".." {
				t.Fatalf("request %q: Location %q reaches the backend as %q, a dot segment once decoded again or without parameters", requestURI, loc, deep)
			}
		}
	})
}

func TestExplain(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{pick.ErrNoBackends, "no backends"},
		{fmt.Errorf("x: %w", pick.ErrWrongType), "not a list"},
		{pick.ErrNoValidBackend, "no valid backend"},
		{pick.ErrAllDown, "all backends are down"},
		{fmt.Errorf("%w: dial", pick.ErrUnavailable), "redis unavailable"},
		{context.DeadlineExceeded, "redis unavailable"},
		{&pick.PermissionError{Command: "SCARD {servers}:down", Reply: "NOPERM"}, "may not run a command the pick needs (SCARD {servers}:down)"},
		{fmt.Errorf("%w: db 99", pick.ErrMisconfigured), "Redis refuses the configuration"},
		{errors.New("other"), "cannot choose a backend"},
	}
	for _, tc := range tests {
		status, msg := explain(tc.err)
		if status != http.StatusServiceUnavailable || !strings.Contains(msg, tc.want) {
			t.Errorf("explain(%v): got (%d, %q), want (503, ...%q...)", tc.err, status, msg, tc.want)
		}
	}
}
