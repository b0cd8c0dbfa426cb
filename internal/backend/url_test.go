package backend

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	good := []string{
		"http://127.0.0.1:5000",
		"http://localhost:5001/",
		"https://example.com",
		"http://backend1:5000/app",
		"http://[::1]:5002",
		"HTTP://Example.COM:8080",
		// A percent-encoded CR LF is not a control character: it stays
		// encoded in every Location header.
		"http://a.example/%0d%0a",
		"http://backend_1:5000",
		"http://10.0.0.7:8080/",
		"http://localhost.:5000",
		"https://xn--caf-dma.example",
		"http://a.example/café",
	}
	for _, s := range good {
		u, err := Parse(s)
		if err != nil {
			t.Errorf("Parse(%q): got error %v, want none", s, err)
			continue
		}
		if u.Host == "" {
			t.Errorf("Parse(%q): got empty host", s)
		}
	}

	bad := []struct{ in, why string }{
		{"", "empty"},
		{"javascript:alert(1)", "scheme"},
		{"javascript://example.com/%0Aalert(1)", "scheme"},
		{"data:text/html,hi", "scheme"},
		{"ftp://example.com", "scheme"},
		{"/relative/path", "relative"},
		{"relative", "relative"},
		{"//evil.example", "scheme-relative"},
		{"http:evil.example", "opaque"},
		{"http:///nohost", "no host"},
		{"http://", "no host"},
		{"http://:5000", "no host"},
		{"http://a.example\r\nSet-Cookie: x=1", "CRLF"},
		{"http://a.example/\r\n", "CRLF"},
		{"http://a.example\n", "LF"},
		{"http://a.example\x00", "NUL"},
		{"http://a b.example", "space"},
		{" http://a.example", "leading space"},
		{"http://a.example/ x", "space in path"},
		{"http://a.example\t", "tab"},
		{"http://user@a.example", "user info"},
		{"http://user:pass@a.example", "user info"},
		{"http://a.example:0", "port 0"},
		{"http://a.example:65536", "port too large"},
		{"http://a.example:http", "port not a number"},
		{"http://a.example:", "empty port"},
		{"http://a.example/?x=1", "query"},
		{"http://a.example/?", "empty query"},
		{"http://a.example/#top", "fragment"},
		{"http://a.example#", "empty fragment"},
		{`http://a.example\@evil.example`, "backslash"},
		{"http://[::1", "bad IPv6"},
		{"http://[::g]:80", "bad IPv6"},
		{"http://a.example/\u2028", "unicode line separator"},
		{"http://a.example/\u00a0", "no-break space"},
		{"http://a.example\u200b", "zero width space"},
		{"http://a\u202eelpmaxe.com", "right-to-left override"},
		{"http://a.example/\ufeff", "byte order mark"},
		{"http://a.example/\ue000", "private use"},
		{"http://a.example/\xff", "invalid UTF-8"},
		{`http://a.example/\evil`, "backslash in path"},
		{"http://a<b>.example", "bad host character"},
		{`http://a".example`, "quote in host"},
		{"http://a%25b", "percent in host"},
		{"http://%E2%80%AE.example", "escaped RLO in host"},
		{"http://-a.example", "label starts with -"},
		{"http://a..example", "empty label"},
		{"http://café.example", "non-ASCII host"},
	}
	for _, tc := range bad {
		_, err := Parse(tc.in)
		if !errors.Is(err, ErrInvalidURL) {
			t.Errorf("Parse(%q) (%s): got error %v, want ErrInvalidURL", tc.in, tc.why, err)
		}
	}
}

func ExampleParse() {
	for _, s := range []string{"http://localhost:5000", "javascript:alert(1)", "http://a:5000\r\n"} {
		if _, err := Parse(s); err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Println("ok", s)
	}
	// Output:
	// ok http://localhost:5000
	// invalid backend URL "javascript:alert(1)": scheme must be http or https
	// invalid backend URL "http://a:5000\r\n": contains a space, control or invisible character
}

// FuzzParse: whatever Parse accepts is an http(s) URL with a
// host, no user info, and nothing that could break a header line.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"http://a:5000", "https://a/b", "javascript:x", "//a", "http://a\r\n", "http://u@a", "http://[::1]:1",
		"HTTP://UPPER/Path", "hTTps://[2001:DB8::A]:443/%7E/%2f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := Parse(s)
		if err != nil {
			if _, nerr := Normalize(s); nerr == nil {
				t.Fatalf("%q: Parse refuses it (%v), Normalize accepts it", s, err)
			}
			return
		}
		// Normalize: valid, idempotent, scheme and host in lower case,
		// the path exactly as typed.
		n, err := Normalize(s)
		if err != nil {
			t.Fatalf("%q: Parse accepts it, Normalize refuses it: %v", s, err)
		}
		nu, err := Parse(n)
		if err != nil {
			t.Fatalf("Normalize(%q) = %q, which Parse refuses: %v", s, n, err)
		}
		if again, _ := Normalize(n); again != n {
			t.Fatalf("Normalize(%q) = %q, but Normalize(%q) = %q", s, n, n, again)
		}
		k := len(u.Scheme) + len("://") + len(u.Host) // where the path starts
		if nu.Host != strings.ToLower(u.Host) || nu.Scheme != u.Scheme || len(n) != len(s) || n[:k] != strings.ToLower(s[:k]) || n[k:] != s[k:] {
			t.Fatalf("Normalize(%q) = %q: want scheme %q and host %q, then the path as typed", s, n, u.Scheme, strings.ToLower(u.Host))
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			t.Fatalf("%q accepted with scheme %q", s, u.Scheme)
		}
		if u.Hostname() == "" || u.User != nil {
			t.Fatalf("%q accepted with host %q, user %v", s, u.Hostname(), u.User)
		}
		for _, c := range []byte(u.String()) {
			if c <= ' ' || c >= 0x7f {
				t.Fatalf("%q accepted, and prints as %q, which is not printable ASCII", s, u.String())
			}
		}
	})
}

// An entry longer than MaxLen is refused, and the error carries at most
// ShowLen bytes of it (each quoted in at most 4), marked with its length.
func TestParseRefusesLongEntries(t *testing.T) {
	long := "http://a.example/" + strings.Repeat("x", MaxLen-len("http://a.example/"))
	if _, err := Parse(long); err != nil {
		t.Errorf("an entry of exactly %d bytes: got %v, want it accepted", MaxLen, err)
	}
	for _, s := range []string{long + "x", "http://a.example/" + strings.Repeat("\xff\r\n", 1<<18)} {
		_, err := Parse(s)
		if !errors.Is(err, ErrInvalidURL) || !strings.Contains(err.Error(), "longer than 2048 bytes") {
			t.Errorf("an entry of %d bytes: got %v, want ErrInvalidURL, longer than 2048 bytes", len(s), err)
			continue
		}
		if msg := err.Error(); len(msg) > 4*ShowLen+100 || !strings.Contains(msg, fmt.Sprintf("…(%d bytes)", len(s))) {
			t.Errorf("an entry of %d bytes: the error has %d bytes (%.60q...), want at most %d, marked with the length", len(s), len(msg), msg, 4*ShowLen+100)
		}
	}
}

func TestTruncate(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{strings.Repeat("a", ShowLen), strings.Repeat("a", ShowLen)},
		{strings.Repeat("a", ShowLen+1), strings.Repeat("a", ShowLen) + "…(201 bytes)"},
		// A character that straddles the cut is left out whole.
		{strings.Repeat("a", ShowLen-1) + "é" + "b", strings.Repeat("a", ShowLen-1) + "…(202 bytes)"},
	}
	for _, tc := range tests {
		if got := Truncate(tc.in); got != tc.want {
			t.Errorf("Truncate(%d bytes): got %q, want %q", len(tc.in), got, tc.want)
		}
	}
}

// Normalize lower-cases the scheme and host (RFC 3986, 6.2.2.1) and keeps
// the rest as typed; what Parse refuses, it refuses.
func TestNormalize(t *testing.T) {
	tests := []struct{ in, want string }{
		{"HTTP://UPPER", "http://upper"},
		{"http://upper", "http://upper"},
		{"HTTPS://Example.COM:8443/App/Path/", "https://example.com:8443/App/Path/"},
		{"Http://Backend_1:5000/%7Euser/%2F/", "http://backend_1:5000/%7Euser/%2F/"},
		{"http://[2001:DB8::A]:80/X", "http://[2001:db8::a]:80/X"},
		{"http://LOCALHOST.:5000/caf%C3%A9", "http://localhost.:5000/caf%C3%A9"},
	}
	for _, tc := range tests {
		got, err := Normalize(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("Normalize(%q): got (%q, %v), want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "javascript:alert(1)", "HTTP://u@X", "http://X/?q=1", "//X"} {
		if got, err := Normalize(bad); !errors.Is(err, ErrInvalidURL) || got != "" {
			t.Errorf("Normalize(%q): got (%q, %v), want ErrInvalidURL", bad, got, err)
		}
	}
}

func TestParseOrigin(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{"http://localhost:5000", "http://localhost:5000", ""},
		{"http://LOCALHOST:5000/", "http://localhost:5000", ""},
		{"https://b.example", "https://b.example", ""},
		{"http://b.example/app", "", "no path"},
		{"javascript:alert(1)", "", "scheme"},
		{"", "", "empty"},
	}
	for _, tc := range tests {
		got, err := ParseOrigin(tc.in)
		if got != tc.want || (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("ParseOrigin(%q): got (%q, %v), want (%q, error with %q)", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestValidBindHost(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"127.0.0.1", true},
		{"::1", true},
		{"0.0.0.0", true},
		{"localhost", true},
		{"lab-backend.internal", true},
		{"backend_1", false}, // a Docker service name: a URL may hold one, a bind address not
		{"127.0.0.1:9000", false},
		{"http://localhost", false},
		{"-bad", false},
		{"a b", false},
	}
	for _, tc := range tests {
		if got := ValidBindHost(tc.in); got != tc.want {
			t.Errorf("ValidBindHost(%q): got %v, want %v", tc.in, got, tc.want)
		}
	}
}
