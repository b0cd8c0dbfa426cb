package rotation

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"unicode"
)

// ErrInvalidURL is returned (wrapped, with the reason) for a string that is not
// an acceptable backend address. The seeder refuses to write such a string and
// the dispatcher refuses to send a client to one.
var ErrInvalidURL = errors.New("invalid backend URL")

// ParseBackend checks that s is a backend address a client may be sent to and
// returns it parsed. A backend address is an absolute http or https URL with a
// host, an optional port (1-65535) and an optional path prefix; it has no user
// info, query or fragment, and no spaces or control characters anywhere.
//
// This is the one validation both the seeder (before writing) and the
// dispatcher (before redirecting) apply, so that nothing outside it ever
// reaches a Location header.
func ParseBackend(s string) (*url.URL, error) {
	invalid := func(reason string) error {
		return fmt.Errorf("%w %q: %s", ErrInvalidURL, s, reason)
	}
	if s == "" {
		return nil, invalid("empty")
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) || r == unicode.ReplacementChar {
			return nil, invalid("contains a space or control character")
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
	case u.Opaque != "":
		return nil, invalid("must be of the form scheme://host[:port][/path]")
	case u.User != nil:
		return nil, invalid("must not contain user info")
	case u.Hostname() == "":
		return nil, invalid("has no host")
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
	if h := u.Hostname(); strings.Contains(u.Host, "[") && net.ParseIP(h) == nil {
		return nil, invalid("has a malformed IPv6 host")
	}
	return u, nil
}
