package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spreadlb/spread/internal/store"
)

// upstream is an httptest server standing in for the project's backend: it
// names itself in X-Backend, answers "Hello, World!" on GET / and echoes
// what it received as JSON on /whoami. hits counts the requests it got.
type upstream struct {
	name string
	srv  *httptest.Server
	hits atomic.Int64
}

// seen is what a backend's /whoami says it received.
type seen struct {
	Backend, Method, Path, Query, Body, Host string
	Header                                   http.Header
}

func newBackend(t *testing.T, name string, extra http.Handler) *upstream {
	t.Helper()
	b := &upstream{name: name}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		w.Header().Set("X-Backend", name)
		switch {
		case r.URL.Path == "/":
			io.WriteString(w, "Hello, World!")
		case strings.HasSuffix(r.URL.Path, "/whoami"):
			body, _ := io.ReadAll(r.Body)
			json.NewEncoder(w).Encode(seen{name, r.Method, r.URL.Path, r.URL.RawQuery, string(body), r.Host, r.Header})
		default:
			if extra == nil {
				http.NotFound(w, r)
				return
			}
			extra.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(b.srv.Close)
	return b
}

// deadURL is a loopback address where nothing listens: connecting to it is
// refused at once.
func deadURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ln.Addr().String()
	ln.Close()
	return u
}

func proxyEnv(more ...string) map[string]string {
	env := map[string]string{"MODE": "proxy"}
	for i := 0; i+1 < len(more); i += 2 {
		env[more[i]] = more[i+1]
	}
	return env
}

func proxied(mode, backend, status string) map[string]string {
	return map[string]string{"backend": backend, "mode": mode, "status": status}
}

// MODE=proxy forwards every request to the next backend of the rotation
// and relays its answer: 30 GETs give each of three backends 10, in the
// rotation's order (last entry first), with the backend's body and
// X-Backend, and /metrics counts them under mode="proxy".
func TestProxyForwardsInRotationOrder(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bs := []*upstream{newBackend(t, "b1", nil), newBackend(t, "b2", nil), newBackend(t, "b3", nil)}
	s := startServe(t, ctx, proxyEnv(), bs[0].srv.URL, bs[1].srv.URL, bs[2].srv.URL)
	counts := map[string]int{}
	for i := range 30 {
		resp, err := http.Get(s.main + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		name := resp.Header.Get("X-Backend")
		if want := bs[2-i%3].name; resp.StatusCode != 200 || string(body) != "Hello, World!" || name != want {
			t.Fatalf("request %d: got %d %q from %q, want 200 %q from %q", i, resp.StatusCode, body, name, "Hello, World!", want)
		}
		counts[name]++
	}
	fams := scrape(t, s.adm+"/metrics")
	for _, b := range bs {
		if counts[b.name] != 10 || b.hits.Load() != 10 {
			t.Errorf("%s: got %d answers and %d requests, want 10 and 10", b.name, counts[b.name], b.hits.Load())
		}
		if got, _ := sample(fams, "spread_requests_total", proxied("proxy", b.srv.URL, "200")); got != 10 {
			t.Errorf("spread_requests_total{backend=%q,mode=\"proxy\",status=\"200\"}: got %v, want 10", b.srv.URL, got)
		}
	}
}

// What the backend receives: the client's method, path, query and body;
// its own address as Host; X-Forwarded-* set by the dispatcher, whatever
// the client claimed; no hop-by-hop headers. Nothing in the request, not an
// absolute request URI nor a Host header, changes where it goes.
func TestProxyKeepsTheRequestButNotItsAddress(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := newBackend(t, "b1", nil)
	// The entry has a path: the request's is joined to it.
	s := startServe(t, ctx, proxyEnv(), b.srv.URL+"/app")
	backendHost := strings.TrimPrefix(b.srv.URL, "http://")
	dispatcherHost := strings.TrimPrefix(s.main, "http://")

	req, _ := http.NewRequest("POST", s.main+"/whoami?x=1&y=two", strings.NewReader("payload"))
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	req.Header.Set("X-Forwarded-Host", "evil.example")
	req.Header.Set("Connection", "X-Secret")
	req.Header.Set("X-Secret", "hop-by-hop")
	req.Header.Set("X-Kept", "end-to-end")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var got seen
	err = json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct{ what, got, want string }{
		{"X-Backend", resp.Header.Get("X-Backend"), "b1"},
		{"method", got.Method, "POST"},
		{"path", got.Path, "/app/whoami"},
		{"query", got.Query, "x=1&y=two"},
		{"body", got.Body, "payload"},
		{"Host", got.Host, backendHost},
		{"X-Forwarded-For", got.Header.Get("X-Forwarded-For"), "127.0.0.1"},
		{"X-Forwarded-Host", got.Header.Get("X-Forwarded-Host"), dispatcherHost},
		{"X-Forwarded-Proto", got.Header.Get("X-Forwarded-Proto"), "http"},
		{"X-Secret (named in Connection)", got.Header.Get("X-Secret"), ""},
		{"X-Kept", got.Header.Get("X-Kept"), "end-to-end"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.what, c.got, c.want)
		}
	}

	// An absolute request URI and a Host header naming elsewhere still go
	// to the listed backend.
	conn, err := net.Dial("tcp", dispatcherHost)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprint(conn, "GET http://evil.example/whoami HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
	raw, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Body.Close()
	if err := json.NewDecoder(raw.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if raw.StatusCode != 200 || got.Backend != "b1" || got.Host != backendHost || got.Path != "/app/whoami" {
		t.Errorf("absolute URI to evil.example: got %d, backend %q saw Host %q path %q; want 200, b1 with Host %q, /app/whoami",
			raw.StatusCode, got.Backend, got.Host, got.Path, backendHost)
	}
	if n := b.hits.Load(); n != 2 {
		t.Errorf("the backend got %d requests, want 2", n)
	}
}

// When connecting to the chosen backend fails, an idempotent request
// without a body takes the next rotation step, at most PROXY_RETRIES more
// times; any other request gets 502 at once and is never sent elsewhere.
// Each failed connection is counted per backend, and each move to the next
// step as a retry.
func TestProxyRetriesOnlyWhatIsSafe(t *testing.T) {
	dead := deadURL(t)
	tests := []struct {
		name      string
		env       map[string]string
		list      func(live string) []string // LRANGE order: the last entry is tried first
		method    string
		body      string
		status    int
		liveHits  int64
		connFails float64
		retries   float64
	}{
		{"GET moves on to the next backend", proxyEnv(),
			func(live string) []string { return []string{live, dead} }, "GET", "", 200, 1, 1, 1},
		{"DELETE without a body too", proxyEnv(),
			func(live string) []string { return []string{live, dead} }, "DELETE", "", 200, 1, 1, 1},
		{"POST is not retried", proxyEnv(),
			func(live string) []string { return []string{live, dead} }, "POST", "", 502, 0, 1, 0},
		{"a request with a body is not retried", proxyEnv(),
			func(live string) []string { return []string{live, dead} }, "PUT", "payload", 502, 0, 1, 0},
		{"at most PROXY_RETRIES more backends", proxyEnv(),
			func(live string) []string { return []string{live, dead, dead, dead} }, "GET", "", 502, 0, 3, 2},
		{"PROXY_RETRIES=3 reaches the fourth", proxyEnv("PROXY_RETRIES", "3"),
			func(live string) []string { return []string{live, dead, dead, dead} }, "GET", "", 200, 1, 3, 3},
		{"PROXY_RETRIES=0 never retries", proxyEnv("PROXY_RETRIES", "0"),
			func(live string) []string { return []string{live, dead} }, "GET", "", 502, 0, 1, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			live := newBackend(t, "live", nil)
			s := startServe(t, ctx, tc.env, tc.list(live.srv.URL)...)
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			req, _ := http.NewRequest(tc.method, s.main+"/whoami", body)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Errorf("%s: got %d, want %d", tc.method, resp.StatusCode, tc.status)
			}
			if n := live.hits.Load(); n != tc.liveHits {
				t.Errorf("the live backend got %d requests, want %d", n, tc.liveHits)
			}
			fams := scrape(t, s.adm+"/metrics")
			if got, _ := sample(fams, "spread_proxy_connect_errors_total", map[string]string{"backend": dead}); got != tc.connFails {
				t.Errorf("spread_proxy_connect_errors_total{backend=%q}: got %v, want %v", dead, got, tc.connFails)
			}
			if got, _ := sample(fams, "spread_proxy_retries_total", nil); got != tc.retries {
				t.Errorf("spread_proxy_retries_total: got %v, want %v", got, tc.retries)
			}
			last := live.srv.URL
			if tc.liveHits == 0 {
				last = dead
			}
			if got, _ := sample(fams, "spread_requests_total", proxied("proxy", last, fmt.Sprint(tc.status))); got != 1 {
				t.Errorf("spread_requests_total{backend=%q,status=%d}: got %v, want 1 (the last backend tried)", last, tc.status, got)
			}
		})
	}
}

// A backend that accepts the request but does not answer within
// PROXY_RESPONSE_TIMEOUT gives 504, and the request is not sent again.
func TestProxyResponseTimeout(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	release := make(chan struct{})
	slow := newBackend(t, "slow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	t.Cleanup(func() { close(release) }) // runs before the backend closes
	live := newBackend(t, "live", nil)
	s := startServe(t, ctx, proxyEnv("PROXY_RESPONSE_TIMEOUT", "50ms"), live.srv.URL, slow.srv.URL)
	resp, err := http.Get(s.main + "/slow")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusGatewayTimeout || !strings.Contains(string(body), "gateway timeout") {
		t.Errorf("got %d %q, want 504 saying gateway timeout", resp.StatusCode, body)
	}
	if s, l := slow.hits.Load(), live.hits.Load(); s != 1 || l != 0 {
		t.Errorf("got %d requests at the slow backend and %d at the other, want 1 and 0", s, l)
	}
}

// Bodies stream both ways: the backend reads the first part of a request
// body while the client still holds the rest back, and the client reads
// the first part of the answer while the backend still holds the rest.
func TestProxyStreamsBodies(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	gotFirst := make(chan string, 1)
	sendRest := make(chan struct{})
	stream := newBackend(t, "stream", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		br := bufio.NewReader(r.Body)
		line, _ := br.ReadString('\n')
		gotFirst <- line
		rest, _ := io.ReadAll(br)
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "got %q\n", line)
		w.(http.Flusher).Flush()
		<-sendRest
		fmt.Fprintf(w, "then %q\n", rest)
	}))
	s := startServe(t, ctx, proxyEnv(), stream.srv.URL)

	pr, pw := io.Pipe()
	type result struct {
		resp *http.Response
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := http.Post(s.main+"/stream", "text/plain", pr)
		done <- result{resp, err}
	}()
	fmt.Fprint(pw, "part one\n")
	select {
	case line := <-gotFirst:
		if line != "part one\n" {
			t.Errorf("the backend read %q first, want %q", line, "part one\n")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the backend did not get the first part of the body before the rest was sent: it was not streamed")
	}
	fmt.Fprint(pw, "part two")
	pw.Close()
	var res result
	select {
	case res = <-done:
	case <-time.After(10 * time.Second):
		close(sendRest)
		t.Fatal("no response headers while the backend holds back the rest of its answer: the answer was not streamed")
	}
	if res.err != nil {
		close(sendRest)
		t.Fatal(res.err)
	}
	defer res.resp.Body.Close()
	br := bufio.NewReader(res.resp.Body)
	first, err := br.ReadString('\n')
	if want := "got \"part one\\n\"\n"; err != nil || first != want {
		t.Errorf("first line of the answer: got (%q, %v), want %q", first, err, want)
	}
	close(sendRest)
	rest, _ := io.ReadAll(br)
	if want := "then \"part two\"\n"; string(rest) != want {
		t.Errorf("rest of the answer: got %q, want %q", rest, want)
	}
}

// A WebSocket upgrade passes through: the client gets the backend's 101 and
// X-Backend, then bytes flow both ways over the connection; the request is
// counted with status 101.
func TestProxyPassesUpgrades(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ws := newBackend(t, "ws", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "want an upgrade", http.StatusBadRequest)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprint(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Backend: ws\r\n\r\n")
		brw.Flush()
		io.Copy(conn, brw) // echo until the client closes
	}))
	s := startServe(t, ctx, proxyEnv(), ws.srv.URL)

	conn, err := net.Dial("tcp", strings.TrimPrefix(s.main, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprint(conn, "GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("X-Backend") != "ws" || resp.Header.Get("Upgrade") != "websocket" {
		t.Fatalf("got %d, X-Backend %q, Upgrade %q; want 101, ws, websocket", resp.StatusCode, resp.Header.Get("X-Backend"), resp.Header.Get("Upgrade"))
	}
	for _, msg := range []string{"hello", "again"} {
		if _, err := io.WriteString(conn, msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(br, got); err != nil || string(got) != msg {
			t.Errorf("echo: got (%q, %v), want %q", got, err, msg)
		}
	}
	conn.Close()
	// The request is counted once the handler returns, which is when the
	// tunnel closes.
	var got float64
	for deadline := time.Now().Add(10 * time.Second); got != 1 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		got, _ = sample(scrape(t, s.adm+"/metrics"), "spread_requests_total", proxied("proxy", ws.srv.URL, "101"))
	}
	if got != 1 {
		t.Errorf("spread_requests_total{status=\"101\"}: got %v, want 1", got)
	}
}

// A backend that switches protocols when it was not asked to, or to
// another protocol than the one asked for, is refused: the client gets 502,
// and that is the status counted, not the backend's 101.
func TestProxyRefusesAnUnaskedSwitch(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := newBackend(t, "b1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprint(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
	}))
	s := startServe(t, ctx, proxyEnv(), b.srv.URL)
	for _, upgrade := range []string{"", "websocket"} {
		req, _ := http.NewRequest("GET", s.main+"/switch", nil)
		if upgrade != "" {
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Upgrade", upgrade)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("Upgrade %q answered by a switch to h2c: got %d, want 502", upgrade, resp.StatusCode)
		}
	}
	fams := scrape(t, s.adm+"/metrics")
	if got, _ := sample(fams, "spread_requests_total", proxied("proxy", b.srv.URL, "502")); got != 2 {
		t.Errorf("spread_requests_total{status=\"502\"}: got %v, want 2", got)
	}
	if got, ok := sample(fams, "spread_requests_total", proxied("proxy", b.srv.URL, "101")); ok {
		t.Errorf("spread_requests_total{status=\"101\"}: got %v, want none: no client got a 101", got)
	}
}

// A backend's informational answers (1xx) reach the client before its
// final answer, and the final answer's status is the one the client gets
// and the one counted: 103 Early Hints (with its Link) before a 410, and
// the 100 Continue that an upload with "Expect: 100-continue" waits for,
// before the 201 that answers it.
func TestProxyPassesInformationalAnswers(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := newBackend(t, "b1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/hints":
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Del("Link")
			http.Error(w, "gone", http.StatusGone)
		case "/upload":
			body, _ := io.ReadAll(r.Body) // sends 100 Continue first
			w.WriteHeader(http.StatusCreated)
			fmt.Fprintf(w, "created %d bytes", len(body))
		}
	}))
	s := startServe(t, ctx, proxyEnv(), b.srv.URL)

	var hints []string // 1xx statuses with their Link, as the client got them
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		hints = append(hints, fmt.Sprint(code, " ", h.Get("Link")))
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), "GET", s.main+"/hints", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusGone || string(body) != "gone\n" || resp.Header.Get("X-Backend") != "b1" {
		t.Errorf("after 103: got %d %q from %q, want 410 %q from b1", resp.StatusCode, body, resp.Header.Get("X-Backend"), "gone\n")
	}
	if want := "103 </style.css>; rel=preload"; len(hints) != 1 || hints[0] != want {
		t.Errorf("informational answers: got %q, want [%q]", hints, want)
	}

	upload := strings.Repeat("x", 5000)
	req, _ = http.NewRequest("POST", s.main+"/upload", strings.NewReader(upload))
	req.Header.Set("Expect", "100-continue")
	client := &http.Client{Transport: &http.Transport{ExpectContinueTimeout: time.Minute}}
	defer client.CloseIdleConnections()
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "created 5000 bytes"; resp.StatusCode != http.StatusCreated || string(body) != want {
		t.Errorf("upload after 100 Continue: got %d %q, want 201 %q", resp.StatusCode, body, want)
	}

	fams := scrape(t, s.adm+"/metrics")
	for _, status := range []string{"410", "201"} {
		if got, _ := sample(fams, "spread_requests_total", proxied("proxy", b.srv.URL, status)); got != 1 {
			t.Errorf("spread_requests_total{status=%q}: got %v, want 1", status, got)
		}
	}
	for _, status := range []string{"100", "103", "200"} {
		if got, ok := sample(fams, "spread_requests_total", proxied("proxy", b.srv.URL, status)); ok {
			t.Errorf("spread_requests_total{status=%q}: got %v, want none: no answer ended with it", status, got)
		}
	}
}

// Requests that find no backend get the same 503 as in redirect mode.
func TestProxyWithoutBackends(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := startServe(t, ctx, proxyEnv())
	resp, err := http.Get(s.main + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" || !strings.Contains(string(body), "no backends") {
		t.Errorf("got %d Retry-After %q %q, want 503, 1, no backends", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
}

// 300 requests, 30 at a time, through the proxy: each of three backends
// gets exactly 100, as with redirects.
func TestProxyConcurrentRequestsSpreadExactly(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bs := []*upstream{newBackend(t, "b1", nil), newBackend(t, "b2", nil), newBackend(t, "b3", nil)}
	s := startServe(t, ctx, proxyEnv(), bs[0].srv.URL, bs[1].srv.URL, bs[2].srv.URL)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 30}}
	counts := concurrentGets(t, client, s.main+"/", "X-Backend")
	for _, b := range bs {
		if counts[b.name] != 100 || b.hits.Load() != 100 {
			t.Errorf("%s: got %d answers and %d requests, want 100 and 100 (all: %v)", b.name, counts[b.name], b.hits.Load(), counts)
		}
	}
}

// A failed connection counts toward the shared health checks: the
// dispatcher reports the backend's origin in Redis, where the lease holder
// counts it as a failed check (here nobody holds it: HEALTH_INTERVAL=0).
// Failures to one backend are reported at most once a second.
func TestProxyReportsFailedConnections(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dead := deadURL(t)
	live := newBackend(t, "live", nil)
	s := startServe(t, ctx, proxyEnv("HEALTH_INTERVAL", "0"), live.srv.URL, dead)
	for i := range 3 { // each takes two steps: dead (refused), then live
		resp, err := http.Get(s.main + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: got %d, want 200 after moving on", i, resp.StatusCode)
		}
	}
	var got map[string]string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		var err error
		if got, err = s.redis.Client.HGetAll(ctx, "{servers}:reports").Result(); err != nil {
			t.Fatal(err)
		}
		if len(got) > 0 {
			break
		}
	}
	if want := map[string]string{dead: "1"}; !maps.Equal(got, want) {
		t.Errorf("reports in Redis: got %v, want %v (two failures within a second, reported once)", got, want)
	}
}

// In both modes a request's path is cleaned of dot segments and joined to
// the entry's path the same way: the backend a proxy forwards to receives
// exactly the path that a redirect sends the client to, always under the
// entry's "/app/", and a path that hides a dot segment behind "%2F" is
// refused in both (400), never forwarded.
func TestProxyAndRedirectGiveTheSamePath(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan string, 1)
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.RequestURI
		io.WriteString(w, "ok")
	}))
	defer b.Close()
	entry := b.URL + "/app/"
	p := startServe(t, ctx, proxyEnv(), entry)
	r := newStack(t, http.StatusFound)
	r.seed(t, entry)

	for _, tc := range []struct{ path, want string }{
		{"/x", "/app/x"},
		{"/../x", "/app/x"},
		{"/../../etc/passwd", "/app/etc/passwd"},
		{"/%2e%2e/%2E./x", "/app/x"},
		{"/a/./b/../c", "/app/a/c"},
		{"/a/..", "/app/"},
		{"//evil.example/../x", "/app//x"},
		{"/a%2Fb/../c%20d", "/app/c%20d"},
		{"/..%2F..%2Fetc", ""}, // refused
		{"/..;/x", ""},         // refused: ";" parameters
		{"/%252e%252e/x", ""},  // refused: escaped twice
		{"/shop;id=1/a.b", "/app/shop;id=1/a.b"},
	} {
		rec := r.do("GET", tc.path)
		redirected := ""
		if loc := rec.Header().Get("Location"); loc != "" {
			u, err := url.Parse(loc)
			if err != nil {
				t.Fatal(err)
			}
			redirected = u.EscapedPath()
		}
		status := rawRequest(t, p.ln.Addr().String(), "GET "+tc.path+" HTTP/1.1")
		forwarded := ""
		select {
		case forwarded = <-got:
		default:
		}
		if redirected != tc.want || forwarded != tc.want {
			t.Errorf("GET %s: redirect to %q (%d), proxied as %q (%s); want both %q", tc.path, redirected, rec.Code, forwarded, status, tc.want)
		}
		if tc.want == "" && (rec.Code != http.StatusBadRequest || status != "HTTP/1.1 400 Bad Request") {
			t.Errorf("GET %s: got %d redirecting and %q proxying, want 400 in both", tc.path, rec.Code, status)
		}
	}
}

// CONNECT asks for a tunnel to the host it names, which the dispatcher is
// not: both modes answer 405 with an Allow header, before the pick (no
// rotation step), and nothing reaches a backend. Before, proxy mode forwarded
// it as "CONNECT /app/", and redirect mode spent a step on a redirect that
// no client follows for CONNECT.
func TestConnectIsRefusedInBothModes(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := newBackend(t, "b1", nil)
	p := startServe(t, ctx, proxyEnv(), b.srv.URL+"/app/")
	r := newStack(t, http.StatusFound)
	r.seed(t, b.srv.URL+"/app/")

	for _, target := range []string{"example.com:443", strings.TrimPrefix(b.srv.URL, "http://"), "/app/"} {
		rec := r.do(http.MethodConnect, target)
		if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Location") != "" || !strings.Contains(rec.Header().Get("Allow"), "GET") {
			t.Errorf("redirect mode, CONNECT %s: got %d, Location %q, Allow %q; want 405, no Location, an Allow listing GET",
				target, rec.Code, rec.Header().Get("Location"), rec.Header().Get("Allow"))
		}

		conn, err := net.Dial("tcp", p.ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: x\r\n\r\n", target)
		resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: http.MethodConnect})
		if err != nil {
			t.Fatalf("proxy mode, CONNECT %s: %v", target, err)
		}
		resp.Body.Close()
		conn.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || !strings.Contains(resp.Header.Get("Allow"), "GET") {
			t.Errorf("proxy mode, CONNECT %s: got %s, Allow %q; want 405 and an Allow listing GET", target, resp.Status, resp.Header.Get("Allow"))
		}
	}
	if n := b.hits.Load(); n != 0 {
		t.Errorf("the backend got %d requests, want none", n)
	}
	for mode, st := range map[string]*store.Store{"redirect": r.store, "proxy": p.store} {
		if tally, _ := st.Tally(ctx); len(tally) != 0 {
			t.Errorf("%s mode: CONNECT took rotation steps: tally %v, want none", mode, tally)
		}
	}
}

// The client's Accept-Encoding reaches the backend as the client sent it,
// and the answer comes back as the backend encoded it: the proxy neither
// asks for gzip on the client's behalf nor unpacks what it gets.
func TestProxyPassesEncodingThrough(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const plain = "the same words, packed or not"
	var packed bytes.Buffer
	zw := gzip.NewWriter(&packed)
	io.WriteString(zw, plain)
	zw.Close()
	b := newBackend(t, "b1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Accept-Encoding", r.Header.Get("Accept-Encoding"))
		if r.Header.Get("Accept-Encoding") == "gzip" {
			w.Header().Set("Content-Encoding", "gzip")
			w.Write(packed.Bytes())
			return
		}
		io.WriteString(w, plain)
	}))
	s := startServe(t, ctx, proxyEnv(), b.srv.URL)
	// A client that sends Accept-Encoding only when told, and unpacks
	// nothing.
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	defer client.CloseIdleConnections()
	for _, c := range []struct{ accept, wantEncoding, wantBody string }{
		{"", "", plain},
		{"gzip", "gzip", packed.String()},
	} {
		req, _ := http.NewRequest(http.MethodGet, s.main+"/packed", nil)
		if c.accept != "" {
			req.Header.Set("Accept-Encoding", c.accept)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.Header.Get("X-Accept-Encoding"); got != c.accept {
			t.Errorf("client sent Accept-Encoding %q: the backend got %q, want %q", c.accept, got, c.accept)
		}
		if got := resp.Header.Get("Content-Encoding"); got != c.wantEncoding {
			t.Errorf("client sent Accept-Encoding %q: got Content-Encoding %q, want %q", c.accept, got, c.wantEncoding)
		}
		if string(body) != c.wantBody {
			t.Errorf("client sent Accept-Encoding %q: got body %q, want %q", c.accept, body, c.wantBody)
		}
	}
}

// cutShort answers 200 with Content-Length 1000, sends 10 bytes and drops
// the connection: an answer cut short, on which the ReverseProxy aborts
// the handler (panic(http.ErrAbortHandler)). Once whole is set, it answers
// in full.
type cutShort struct{ whole atomic.Bool }

func (h *cutShort) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.whole.Load() {
		io.WriteString(w, "whole")
		return
	}
	w.Header().Set("Content-Length", "1000")
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, "0123456789")
	w.(http.Flusher).Flush()
	conn, _, err := http.NewResponseController(w).Hijack()
	if err == nil {
		conn.Close()
	}
}

// getAll GETs url n times, reading each answer to its end (or its cut),
// and returns the statuses.
func getAll(t *testing.T, url string, n int) []int {
	t.Helper()
	var statuses []int
	for range n {
		resp, err := http.Get(url)
		if err != nil {
			statuses = append(statuses, 0)
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		statuses = append(statuses, resp.StatusCode)
	}
	return statuses
}

// An answer cut short still ends its request everywhere the dispatcher
// counts it: least-conn's count in Redis is released (the backend is not
// left looking busy for ever), and the retry budget's counts go back down
// (they would otherwise fill the budget, and every later retry would be
// refused).
func TestCutAnswersEndTheirRequests(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	t.Run("least-conn", func(t *testing.T) {
		cut := newBackend(t, "cut", &cutShort{})
		s := startServe(t, ctx, proxyEnv("STRATEGY", "least-conn", "EJECT_AFTER", "0"), cut.srv.URL)
		waitFor(t, "the snapshot is read", func() bool { code, _ := s.readyz(t); return code == 200 })
		getAll(t, s.main+"/cut", 5)
		if n := cut.hits.Load(); n != 5 {
			t.Fatalf("the backend got %d requests, want 5", n)
		}
		waitFor(t, "least-conn's counts are released in Redis", func() bool {
			n, err := s.store.InFlight(ctx)
			return err == nil && len(n) == 0
		})
	})

	// The request log and spread_requests_total see them too, with the
	// status the client got before the cut.
	t.Run("counted and logged", func(t *testing.T) {
		cut := newBackend(t, "cut", &cutShort{})
		s := startServe(t, ctx, proxyEnv("EJECT_AFTER", "0"), cut.srv.URL)
		waitFor(t, "the snapshot is read", func() bool { code, _ := s.readyz(t); return code == 200 })
		getAll(t, s.main+"/cut", 3)
		if n := cut.hits.Load(); n != 3 {
			t.Fatalf("the backend got %d requests, want 3", n)
		}
		waitFor(t, "3 cut answers in spread_requests_total{status=\"200\"}", func() bool {
			got, _ := sample(scrape(t, s.adm+"/metrics"), "spread_requests_total", proxied("proxy", cut.srv.URL, "200"))
			return got == 3
		})
		line := "msg=request method=GET path=/cut status=200 backend=" + cut.srv.URL
		waitFor(t, "3 request lines for /cut in the log", func() bool { return strings.Count(s.logs.String(), line) == 3 })
		// The ReverseProxy's own account of each cut, in the dispatcher's
		// log and format, not on stderr through the standard logger.
		complaint := `level=WARN msg="httputil: ReverseProxy read error during body copy`
		waitFor(t, "3 of the ReverseProxy's complaints in the log", func() bool { return strings.Count(s.logs.String(), complaint) == 3 })
	})

	t.Run("retry budget", func(t *testing.T) {
		bad := newBackend(t, "bad", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "broken", 500)
		}))
		h := &cutShort{}
		cut := newBackend(t, "cut", h)
		// Round robin alternates: a request that starts at bad gets 500
		// and is retried at cut, where its answer is cut short.
		s := startServe(t, ctx, proxyEnv("PROXY_RETRY_ON", "5xx", "RETRY_BUDGET", "20%", "EJECT_AFTER", "0"),
			cut.srv.URL, bad.srv.URL)
		waitFor(t, "the snapshot is read", func() bool { code, _ := s.readyz(t); return code == 200 })
		getAll(t, s.main+"/cut", 8)
		if n := bad.hits.Load(); n < 4 {
			t.Fatalf("bad got %d requests, want at least 4 (retried at cut)", n)
		}
		h.whole.Store(true)
		for i, st := range getAll(t, s.main+"/cut", 6) {
			if st != 200 {
				t.Errorf("request %d after the cut answers: got %d, want 200 (a 500 retried at cut)", i+1, st)
			}
		}
		fams := scrape(t, s.adm+"/metrics")
		if got, _ := sample(fams, "spread_proxy_retries_refused_total", nil); got != 0 {
			t.Errorf("spread_proxy_retries_refused_total: got %v, want 0: nothing else was in flight", got)
		}
	})
}

// A client that gives up before it is answered is recorded as 499, nginx's
// Client Closed Request, in spread_requests_total and the request log: not
// as a failure of the backend (502) while the proxy waits for the answer,
// nor of the backend or Redis (502, 503) while the pick waits on a hung
// Redis (the pick sees its round trip through, then takes the snapshot's
// backend, and the proxy finds the client gone).
func TestClientThatLeavesIsRecordedAs499(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	release := make(chan struct{})
	b := newBackend(t, "b1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer close(release)
	s := startServe(t, ctx, proxyEnv("REDIS_TIMEOUT", "1s"), b.srv.URL)
	if code, name := s.get(t); code != http.StatusOK || name != "b1" {
		t.Fatalf("first request: got %d from %q, want 200 from b1", code, name)
	}
	byStatus := func() (map[string]float64, float64) {
		counts, total := map[string]float64{}, 0.0
		if f := scrape(t, s.adm+"/metrics")["spread_requests_total"]; f != nil {
			for _, m := range f.Metric {
				for _, l := range m.Label {
					if l.GetName() == "status" {
						counts[l.GetValue()] += m.Counter.GetValue()
						total += m.Counter.GetValue()
					}
				}
			}
		}
		return counts, total
	}
	impatient := &http.Client{Timeout: 300 * time.Millisecond}
	leave := func(what string, want float64) map[string]float64 {
		t.Helper()
		if resp, err := impatient.Get(s.main + "/slow"); err == nil {
			resp.Body.Close()
			t.Fatalf("%s: the client got %s, want it to give up first", what, resp.Status)
		}
		waitFor(t, what+": the request counted", func() bool { _, n := byStatus(); return n >= want })
		got, _ := byStatus()
		return got
	}

	if got := leave("a slow backend", 2); got["499"] != 1 || got["502"] != 0 || got["200"] != 1 {
		t.Errorf("a client that left a slow backend: spread_requests_total by status %v, want 200: 1, 499: 1 and no 502", got)
	}
	s.redis.Pause()
	defer s.redis.Resume()
	if got := leave("a hung Redis", 3); got["499"] != 2 || got["503"] != 0 || got["502"] != 0 {
		t.Errorf("a client that left while Redis hung: spread_requests_total by status %v, want 499: 2 and no 502 or 503", got)
	}
	if n := strings.Count(s.logs.String(), "status=499"); n != 2 {
		t.Errorf("the request log has %d lines with status=499, want 2:\n%s", n, s.logs.String())
	}
}
