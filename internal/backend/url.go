// Package backend says what a backend entry is: Parse validates the URLs that
// the seeder writes and the dispatcher sends clients to, Normalize gives the
// one spelling the seeder stores (scheme and host in lower case), ParseOrigin the
// origins that health checks probe, and Weighted and Spread turn weights into
// the order of a plain list of entries.
package backend

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ErrInvalidURL is returned (wrapped, with the reason) for a string that is not
// an acceptable backend address. The seeder refuses to write such a string and
// the dispatcher refuses to send a client to one.
var ErrInvalidURL = errors.New("invalid backend URL")

// MaxLen is the longest entry, in bytes, that Parse accepts: 2 KiB, far
// more than any backend address needs. The rotation step skips longer
// entries inside Redis by their length alone (package store), so that
// Redis never sends one to a dispatcher.
const MaxLen = 2048

// ShowLen is how many bytes of an entry Truncate keeps.
const ShowLen = 200

// Truncate returns s as a log line, the dashboard or `seeder list` may show
// it: s itself when it has at most ShowLen bytes, else its first ShowLen
// bytes (fewer, to end on a whole UTF-8 character) and "…(N bytes)", N
// being the length of s. So no message carries more than a few hundred
// bytes of an entry, however long it is.
func Truncate(s string) string {
	if len(s) <= ShowLen {
		return s
	}
	n := ShowLen
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return fmt.Sprintf("%s…(%d bytes)", s[:n], len(s))
}

// Parse checks that s is a backend address a client may be sent to and
// returns it parsed. A backend address is an absolute http or https URL with a
// host (a DNS name or an IP address), an optional port (1-65535) and an
// optional path prefix; it has no user info, query or fragment, and no space,
// control or invisible character anywhere (so that what `redis-cli LRANGE`
// prints is exactly what is stored), and it is at most MaxLen bytes long.
// Errors show s through Truncate.
//
// This is the one validation both the seeder (before writing) and the
// dispatcher (before redirecting) apply, so that nothing outside it ever
// reaches a Location header.
func Parse(s string) (*url.URL, error) {
	invalid := func(reason string) error {
		return fmt.Errorf("%w %q: %s", ErrInvalidURL, Truncate(s), reason)
	}
	if s == "" {
		return nil, invalid("empty")
	}
	if len(s) > MaxLen {
		return nil, invalid(fmt.Sprintf("longer than %d bytes", MaxLen))
	}
	if !utf8.ValidString(s) {
		return nil, invalid("is not valid UTF-8")
	}
	for _, r := range s {
		// IsPrint is false for control, format (such as U+200B zero width
		// space or U+202E right-to-left override), private-use and
		// unassigned characters and for every space but ' ', checked too.
		if r == ' ' || !unicode.IsPrint(r) {
			return nil, invalid("contains a space, control or invisible character")
		}
	}
	if strings.Contains(s, `\`) {
		return nil, invalid("contains a backslash")
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, invalid("does not parse")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, invalid("scheme must be http or https")
	case u.User != nil:
		return nil, invalid("must not contain user info")
	case u.Hostname() == "":
		return nil, invalid("has no host")
	case !ValidHost(u.Hostname()):
		return nil, invalid("host must be a DNS name or an IP address")
	case u.RawQuery != "" || u.ForceQuery:
		return nil, invalid("must not have a query")
	case u.Fragment != "" || strings.Contains(s, "#"):
		return nil, invalid("must not have a fragment")
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return nil, invalid("port must be 1-65535")
		}
	} else if strings.HasSuffix(u.Host, ":") {
		return nil, invalid("has an empty port")
	}
	return u, nil
}

// Normalize returns the backend address s as the seeder stores it: s as
// Parse accepts it (the same error otherwise), with its scheme and host in
// lower case and the rest, port and path, exactly as typed. Scheme and host
// are case-insensitive (RFC 3986, 6.2.2.1), so "HTTP://Backend1:5000/App"
// and "http://backend1:5000/App" are one backend, and must be one entry to
// the strategies that count per entry (least-conn, p2c, the tally, the down
// set); the path is the backend's to interpret, so its case and escapes are
// kept.
func Normalize(s string) (string, error) {
	u, err := Parse(s)
	if err != nil {
		return "", err
	}
	// Parse accepted s, so it is scheme "://" host[:port] [path]: no user
	// info, and no percent-escape in the host (url.Parse refuses one there),
	// so u.Host is the authority as typed.
	k := len(u.Scheme) + len("://") + len(u.Host)
	return strings.ToLower(s[:k]) + s[k:], nil
}

// ValidHost accepts an IP address, or a DNS name: dot-separated labels of
// ASCII letters, digits, '-' (not at either end) and '_' (Docker service
// names may have one). An internationalized name must be given in its
// punycode (xn--) form.
func ValidHost(h string) bool {
	if strings.Contains(h, ":") {
		return net.ParseIP(h) != nil // IPv6 literal
	}
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// ValidBindHost accepts what a program may listen on (the dispatcher's
// BIND_HOST, the backend's CONTROL_BIND_HOST): an IP address, or a host
// name (dot-separated labels of ASCII letters, digits and '-', not at either
// end of a label), which net.Listen resolves at start. It is ValidHost
// without the '_' that only Docker service names in backend URLs need.
func ValidBindHost(h string) bool {
	return ValidHost(h) && !strings.Contains(h, "_")
}

// Origin is u's scheme, host and port, as health probes and the probe hash
// name them: "http://localhost:5000".
func Origin(u *url.URL) string {
	return u.Scheme + "://" + strings.ToLower(u.Host)
}

// ParseOrigin checks that s is a backend origin (an absolute http or https
// URL with a host, an optional port and no path other than "/", as Parse
// checks it) and returns it as probes name it: "http://localhost:5000".
func ParseOrigin(s string) (string, error) {
	u, err := Parse(s)
	if err != nil {
		return "", err
	}
	if u.Path != "" && u.Path != "/" {
		return "", fmt.Errorf("%w %q: an origin has no path", ErrInvalidURL, s)
	}
	return Origin(u), nil
}
