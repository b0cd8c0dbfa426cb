// Package app holds what the project's programs share around their work:
// settings read from the environment, serving on a listener with a graceful
// shutdown, and the healthcheck mode that distroless images need (they have
// no curl).
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"
	"unicode"
)

// Setting is one environment variable a program reads, with its default.
// Each program lists its settings in one table; the README's configuration
// table is that list, and a test in each module keeps the two in step.
type Setting struct {
	Name    string
	Default string
	Usage   string
}

// Get returns the variable's value, or the default when it is unset or empty.
func (s Setting) Get(getenv func(string) string) string {
	if v := getenv(s.Name); v != "" {
		return v
	}
	return s.Default
}

// PrintSettings writes each of settings as NAME=value, one a line in the
// table's order, with the value the program uses: the variable's, or the
// default where it is unset or empty. It is what a program's `check` command
// prints once it has read and accepted its settings, so that a person, or
// deploy/kubernetes's check of the manifests, sees the effective
// configuration and which variables the program reads. A password in a
// URL's user info or in its password= query parameter prints as xxxxx.
func PrintSettings(w io.Writer, settings []Setting, getenv func(string) string) error {
	for _, s := range settings {
		if _, err := fmt.Fprintf(w, "%s=%s\n", s.Name, redactURL(s.Get(getenv))); err != nil {
			return err
		}
	}
	return nil
}

// redactURL returns v with the password of a URL replaced by xxxxx, and
// any other value as it is.
func redactURL(v string) string {
	u, err := url.Parse(v)
	if err != nil || u.Scheme == "" || u.Opaque != "" {
		return v
	}
	_, inUser := u.User.Password()
	q := u.Query()
	if !inUser && !q.Has("password") {
		return v
	}
	if q.Has("password") {
		for i := range q["password"] {
			q["password"][i] = "xxxxx"
		}
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// The limits every server of the project puts on a client's connection.
// None of them bounds how long a request may take once its headers are in:
// a proxied body or answer may stream for as long as it needs.
const (
	// DefaultIdleTimeout is how long a keep-alive connection may wait for
	// its next request before the server closes it, unless Limits says
	// otherwise.
	DefaultIdleTimeout = 60 * time.Second
	// ReadHeaderTimeout is how long a client may take to send a request's
	// line and headers: from the moment it connects, for its first request,
	// and from the first byte of each later one on a kept-alive connection.
	ReadHeaderTimeout = 10 * time.Second
	// MaxHeaderBytes bounds a request's line and headers together: 64 KiB
	// (net/http allows 4 KiB more as slack). A larger request gets 431
	// Request Header Fields Too Large and its connection is closed.
	// net/http's own default is 1 MiB.
	MaxHeaderBytes = 64 << 10
)

// Limits are the per-connection limits a program may choose.
type Limits struct {
	// IdleTimeout closes a keep-alive connection that has sent no new
	// request for this long. 0 means DefaultIdleTimeout; there is no way
	// to keep idle connections forever, since each holds a file descriptor
	// and memory.
	IdleTimeout time.Duration
	// ErrorLog, if set, takes the server's own complaints (a TLS handshake
	// that failed, a handler that panicked), which otherwise go to the
	// standard logger on stderr.
	ErrorLog *log.Logger
}

// Serve is ServeWith with the default Limits.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, grace time.Duration) error {
	return ServeWith(ctx, ln, h, grace, Limits{})
}

// ServeWith serves h on ln until ctx is done, then stops accepting
// connections and waits up to grace for requests in flight. A clean
// shutdown is not an error. Connections are bounded by ReadHeaderTimeout,
// MaxHeaderBytes and lim.IdleTimeout.
func ServeWith(ctx context.Context, ln net.Listener, h http.Handler, grace time.Duration, lim Limits) error {
	return ServeServer(ctx, ln, NewServer(h, lim), grace)
}

// NewServer is the http.Server that ServeWith runs: h, bounded by
// ReadHeaderTimeout, MaxHeaderBytes and lim.IdleTimeout. A program that
// must act on the server while it runs (the backend closes its idle
// connections when it is taken down) makes it here and serves it with
// ServeServer.
func NewServer(h http.Handler, lim Limits) *http.Server {
	idle := lim.IdleTimeout
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	return &http.Server{Handler: h, ReadHeaderTimeout: ReadHeaderTimeout, IdleTimeout: idle, MaxHeaderBytes: MaxHeaderBytes,
		ErrorLog: lim.ErrorLog}
}

// ServeServer serves srv on ln until ctx is done, then shuts it down as
// ServeWith does.
func ServeServer(ctx context.Context, ln net.Listener, srv *http.Server, grace time.Duration) error {
	return ServeServerThen(ctx, ln, srv, grace, nil)
}

// ServeServerThen is ServeServer, except that when ctx is done it first
// calls before, still serving, with a context that ends grace from then,
// and shuts srv down by the same deadline: grace bounds the two together.
// A backend that registered itself leaves the list there, before it
// refuses requests. A nil before is ServeServer.
func ServeServerThen(ctx context.Context, ln net.Listener, srv *http.Server, grace time.Duration, before func(context.Context)) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if before != nil {
		before(sctx)
	}
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close() // the requests still in flight are cut, as the process exit would
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Healthcheck GETs url and returns nil on 200. Programs run it as their
// "healthcheck" command, which compose uses as a container healthcheck.
func Healthcheck(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

// LocalURL returns the URL of path on a listener of this host's at
// host:port, for a healthcheck: host is what the listener was bound to, and
// when that is empty or every interface (0.0.0.0, ::), 127.0.0.1 reaches it.
// A listener bound to one address (ADMIN_BIND_HOST=10.0.0.5, say) is only
// reachable there, so that address is dialled.
func LocalURL(host, port, path string) string {
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + path
}

// Undocumented returns the settings of program that readme's configuration
// table does not list exactly: a row whose first cell is `NAME`, whose second
// is `DEFAULT` (or "(empty)" where the default is empty) and whose third, the
// programs that read it, names program. Each program's tests call it through
// CheckREADME, so that the README stays true.
func Undocumented(readme, program string, settings []Setting) []string {
	var missing []string
	for _, s := range settings {
		def := "`" + s.Default + "`"
		if s.Default == "" {
			def = "(empty)"
		}
		found := false
		for _, line := range strings.Split(readme, "\n") {
			cells := strings.Split(line, "|")
			if len(cells) < 5 || strings.TrimSpace(cells[0]) != "" {
				continue
			}
			name, value, readers := strings.TrimSpace(cells[1]), strings.TrimSpace(cells[2]), cells[3]
			if name == "`"+s.Name+"`" && value == def && slices.Contains(strings.FieldsFunc(readers, notWordRune), program) {
				found = true
				break
			}
		}
		if !found {
			missing = append(missing, fmt.Sprintf("| `%s` | %s | %s |", s.Name, def, program))
		}
	}
	return missing
}

func notWordRune(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) }

// CheckREADME reads the README at path and returns an error naming every
// setting of program that its configuration table lacks (see Undocumented).
func CheckREADME(path, program string, settings []Setting) error {
	readme, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if missing := Undocumented(string(readme), program, settings); len(missing) > 0 {
		return fmt.Errorf("%s: the configuration table lacks the rows %s", path, strings.Join(missing, ", "))
	}
	return nil
}
