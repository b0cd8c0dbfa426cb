package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spreadlb/spread/internal/balance"
	"github.com/spreadlb/spread/internal/redisconn"

	"github.com/spreadlb/spread/internal/app"
	"github.com/spreadlb/spread/internal/health"
	"github.com/spreadlb/spread/internal/redistest"
	"github.com/spreadlb/spread/internal/store"
)

func TestLoadConfig(t *testing.T) {
	cfg, err := loadConfig(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	want := config{port: "80", adminPort: "8080", idleTimeout: 60 * time.Second, redisURL: "redis://localhost:6379/0", key: "servers",
		strategy: "round-robin", status: 302, redisTimeout: time.Second, shutdownTimeout: 10 * time.Second, maxStreams: 16,
		health: health.Config{Interval: 2 * time.Second, Timeout: time.Second, Falls: 2, Rises: 2},
		mode:   "redirect", proxy: proxyConfig{retries: 2, dialTimeout: 2 * time.Second, responseTimeout: 30 * time.Second,
			retry: retryConfig{onConnect: true}, ejectAfter: 5, eject: store.EjectPolicy{Base: 30 * time.Second, MaxPercent: 50}},
		slowStartMin: 0.1}
	if !slices.Equal(cfg.plan.Needs, []balance.Need{balance.NeedRotation}) || cfg.plan.New == nil {
		t.Errorf("defaults: got the strategy's plan %+v, want the shared rotation's", cfg.plan)
	}
	cfg.plan, cfg.getenv = balance.Plan{}, nil
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("defaults: got %+v, want %+v", cfg, want)
	}

	bad := []struct{ name, value, mention string }{
		{"PORT", "eighty", "PORT"},
		{"PORT", "0", "PORT"},
		{"ADMIN_PORT", "080", "must differ"},
		{"ADMIN_PORT", "70000", "ADMIN_PORT"},
		{"ADMIN_PORT", "80", "must differ"},
		{"BIND_HOST", "127.0.0.1:80", "BIND_HOST"},
		{"BIND_HOST", "bad host", "BIND_HOST"},
		{"BIND_HOST", "[::1]", "want an IP address"},
		{"ADMIN_BIND_HOST", "-admin", "ADMIN_BIND_HOST"},
		{"ADMIN_BIND_HOST", "redis_1", "ADMIN_BIND_HOST"}, // a backend URL may hold "_", a bind host not
		{"ADMIN_BIND_HOST", "http://127.0.0.1", "ADMIN_BIND_HOST"},
		{"ADMIN_MAX_STREAMS", "0", "ADMIN_MAX_STREAMS"},
		{"ADMIN_MAX_STREAMS", "lots", "want a whole number from 1"},
		{"IDLE_TIMEOUT", "0", "IDLE_TIMEOUT"},
		{"IDLE_TIMEOUT", "forever", "IDLE_TIMEOUT"},
		{"REDIRECT_STATUS", "200", "REDIRECT_STATUS"},
		{"REDIRECT_STATUS", "304", "REDIRECT_STATUS"},
		{"REDIS_TIMEOUT", "soon", "REDIS_TIMEOUT"},
		{"SHUTDOWN_TIMEOUT", "-1s", "SHUTDOWN_TIMEOUT"},
		{"ROTATION", "random", "ROTATION"},
		{"ROTATION", "Local", "ROTATION"},
		{"HEALTH_INTERVAL", "-1s", "HEALTH_INTERVAL"},
		{"HEALTH_INTERVAL", "often", "HEALTH_INTERVAL"},
		{"HEALTH_TIMEOUT", "0", "HEALTH_TIMEOUT"},
		{"HEALTH_FALLS", "0", "HEALTH_FALLS"},
		{"HEALTH_RISES", "two", "HEALTH_RISES"},
		{"MODE", "tunnel", "MODE"},
		{"STRATEGY", "fastest", "want one of round-robin, hash, least-conn, least-time, p2c, random"},
		{"STRATEGY", "least-time", "needs MODE=proxy"},
		{"LEAST_TIME_DECAY", "0s", "LEAST_TIME_DECAY"},
		{"LEAST_TIME_DECAY", "soon", "LEAST_TIME_DECAY"},
		{"HASH_BALANCE_FACTOR", "1.25", "needs MODE=proxy"},
		{"STRATEGY", "least-conn", "needs MODE=proxy"},
		{"STRATEGY", "p2c", "needs MODE=proxy"},
		{"STRATEGY", "Round-Robin", "STRATEGY"},
		{"HASH_KEY", "header", "HASH_KEY"},
		{"HASH_KEY", "header:", "HASH_KEY"},
		{"HASH_KEY", "header:X User", "HASH_KEY"},
		{"HASH_KEY", "body:x", "want ip, header:NAME, cookie:NAME or query:NAME"},
		{"HASH_KEY", "ip:x", "HASH_KEY"},
		{"PROXY_RETRIES", "-1", "PROXY_RETRIES"},
		{"PROXY_RETRIES", "11", "PROXY_RETRIES"},
		{"PROXY_RETRIES", "two", "PROXY_RETRIES"},
		{"PROXY_DIAL_TIMEOUT", "0s", "PROXY_DIAL_TIMEOUT"},
		{"PROXY_RETRY_ON", "timeout", `PROXY_RETRY_ON="timeout": want a comma-separated list of connect-failure, per-try-timeout, 5xx`},
		{"PROXY_RETRY_ON", "5xx,,", "PROXY_RETRY_ON"},
		{"PROXY_RETRY_ON", "per-try-timeout", "needs PROXY_TRY_TIMEOUT"},
		{"PROXY_TRY_TIMEOUT", "-1s", `PROXY_TRY_TIMEOUT="-1s": want 0 or a positive duration`},
		{"PROXY_TRY_TIMEOUT", "soon", "PROXY_TRY_TIMEOUT"},
		{"RETRY_BUDGET", "120%", `RETRY_BUDGET="120%": want a percentage from 0 (no budget) to 100`},
		{"RETRY_BUDGET", "a fifth", "RETRY_BUDGET"},
		{"PROXY_RESPONSE_TIMEOUT", "forever", "PROXY_RESPONSE_TIMEOUT"},
		{"EJECT_AFTER", "-1", `EJECT_AFTER="-1": want a whole number, 0 (no ejection) or more`},
		{"EJECT_AFTER", "five", "EJECT_AFTER"},
		{"EJECT_TIME", "0", `EJECT_TIME="0": want a positive duration`},
		{"EJECT_TIME", "10m", "at most 5m0s"},
		{"EJECT_MAX_PERCENT", "101", `EJECT_MAX_PERCENT="101": want a whole number of percent, 0 to 100`},
		{"EJECT_MAX_PERCENT", "half", "EJECT_MAX_PERCENT"},
		{"SLOW_START", "-30s", `SLOW_START="-30s": want a duration such as 30s, or 0`},
		{"SLOW_START", "30", "SLOW_START"},
		{"SLOW_START_MIN", "0", `SLOW_START_MIN="0": want a percentage above 0 and at most 100`},
		{"SLOW_START_MIN", "150%", "SLOW_START_MIN"},
		{"REDIS_KEY", " ", "REDIS_KEY"},
		{"REDIS_KEY", "my servers", "REDIS_KEY"},
		{"REDIS_KEY", "servers\r", "REDIS_KEY"},
		{"REDIS_TLS_CA", "/nonexistent/ca.crt", "REDIS_TLS_CA"},
		{"REDIS_TLS_CERT", "/nonexistent/client.crt", "REDIS_TLS_KEY is not"},
		{"REDIS_TLS_KEY", "/nonexistent/client.key", "REDIS_TLS_CERT is not"},
	}
	for _, tc := range bad {
		_, err := loadConfig(func(k string) string {
			if k == tc.name {
				return tc.value
			}
			return ""
		})
		if err == nil || !strings.Contains(err.Error(), tc.mention) {
			t.Errorf("%s=%q: got error %v, want one naming %s", tc.name, tc.value, err, tc.mention)
		}
	}
	for _, env := range []map[string]string{
		{"MODE": "proxy", "STRATEGY": "least-conn"},
		{"MODE": "proxy", "STRATEGY": "p2c"},
		{"STRATEGY": "random"},
		{"STRATEGY": "hash", "HASH_KEY": "cookie:session"},
		{"MODE": "proxy", "STRATEGY": "hash", "HASH_KEY": "header:X-User"},
		{"STRATEGY": "hash", "HASH_KEY": "query:user"},
	} {
		cfg, err := loadConfig(func(k string) string { return env[k] })
		if err != nil || cfg.strategy != env["STRATEGY"] {
			t.Errorf("%v: got (%q, %v), want that strategy", env, cfg.strategy, err)
		}
	}
	for _, h := range []string{"127.0.0.1", "::1", "localhost", "10.0.0.7", "admin-net.internal"} {
		env := map[string]string{"BIND_HOST": h, "ADMIN_BIND_HOST": h}
		cfg, err := loadConfig(func(k string) string { return env[k] })
		if err != nil || cfg.bindHost != h || cfg.adminBindHost != h {
			t.Errorf("BIND_HOST=ADMIN_BIND_HOST=%s: got (%q, %q, %v), want both set", h, cfg.bindHost, cfg.adminBindHost, err)
		}
	}
	cfg, err = loadConfig(func(k string) string { return map[string]string{"REDIRECT_STATUS": "307"}[k] })
	if err != nil || cfg.status != 307 {
		t.Errorf("REDIRECT_STATUS=307: got (%d, %v), want 307", cfg.status, err)
	}
	for _, v := range []string{"0", "0s"} {
		cfg, err = loadConfig(func(k string) string { return map[string]string{"HEALTH_INTERVAL": v}[k] })
		if err != nil || cfg.health.Interval != 0 {
			t.Errorf("HEALTH_INTERVAL=%s: got (%v, %v), want 0, probes off", v, cfg.health.Interval, err)
		}
	}
}

// served is a dispatcher that startServe runs.
type served struct {
	redis      *redistest.Server
	store      *store.Store
	ln, admin  net.Listener
	errc       chan error // serve's result
	main, adm  string     // http://host:port of each listener
	noFollower *http.Client
	logs       *syncBuffer // what serve logged
}

// syncBuffer is a bytes.Buffer that serve's goroutines may write while a
// test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// startServe runs serve, as run does, over a real Redis holding seed, on
// two listeners bound to free loopback ports, with the configuration env
// gives over the defaults.
func startServe(t *testing.T, ctx context.Context, env map[string]string, seed ...string) *served {
	t.Helper()
	srv := redistest.Start(t)
	return startServeOn(t, ctx, srv, srv.URL, env, seed...)
}

// startServeOn is startServe on srv, reached at url (as a user of its ACL,
// say); seed is written through srv's own client.
func startServeOn(t *testing.T, ctx context.Context, srv *redistest.Server, url string, env map[string]string, seed ...string) *served {
	t.Helper()
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	// A client made as run makes it (redisconn.Connect: context deadlines
	// bound every command, no retries), not the test server's own.
	rdb, err := redisconn.Connect(url, "dispatcher")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	s := &served{redis: srv, store: store.NewStore(rdb, "servers", log), errc: make(chan error, 1), logs: logs}
	if len(seed) > 0 {
		if err := store.NewStore(srv.Client, "servers", nil).Replace(ctx, seed); err != nil {
			t.Fatal(err)
		}
	}
	if s.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if s.admin, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	s.main, s.adm = "http://"+s.ln.Addr().String(), "http://"+s.admin.Addr().String()
	s.noFollower = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	cfg, err := loadConfig(func(k string) string {
		if v, ok := env[k]; ok || k != healthIntervalSetting.Name {
			return v
		}
		// No probes unless the test asks: the seeded addresses are not
		// served, or are served by whatever else runs on this machine.
		return "0"
	})
	if err != nil {
		t.Fatal(err)
	}
	go func() { s.errc <- serve(ctx, cfg, s.store, s.ln, s.admin, log) }()
	return s
}

// TestServe runs the dispatcher on real sockets, as main does, and stops it
// as SIGTERM does.
func TestServe(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	s := startServe(t, ctx, nil)
	store, ln, errc := s.store, s.ln, s.errc
	mainURL, adminURL := s.main, s.adm
	get := func(url string) (int, string, string) {
		t.Helper()
		resp, err := s.noFollower.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Location"), string(body)
	}

	if code, _, _ := get(adminURL + "/healthz"); code != 200 {
		t.Errorf("/healthz: got %d, want 200", code)
	}
	if code, _, body := get(adminURL + "/readyz"); code != 503 || !strings.Contains(body, "empty") {
		t.Errorf("/readyz with an empty list: got %d %q, want 503 saying empty", code, body)
	}
	if code, loc, _ := get(mainURL + "/healthz"); code != 503 || loc != "" {
		t.Errorf("main port with an empty list: got %d %q, want 503 and no Location", code, loc)
	}
	if err := store.Replace(ctx, []string{"http://127.0.0.1:5000"}); err != nil {
		t.Fatal(err)
	}
	if code, _, body := get(adminURL + "/readyz"); code != 200 || !strings.Contains(body, `"servers" holds 1 entry`) {
		t.Errorf("/readyz with a list: got %d %q, want 200", code, body)
	}
	// The main port passes /healthz on to the backend like any other path.
	if code, loc, _ := get(mainURL + "/healthz?probe=1"); code != 302 || loc != "http://127.0.0.1:5000/healthz?probe=1" {
		t.Errorf("main port: got %d %q, want 302 to the backend's /healthz", code, loc)
	}
	// Request lines whose path does not start with "/" are dispatched too.
	for _, line := range []string{"GET http://elsewhere.example HTTP/1.1", "GET * HTTP/1.1"} {
		if status := rawRequest(t, ln.Addr().String(), line); status != "HTTP/1.1 302 Found" {
			t.Errorf("%q: got %q, want a 302", line, status)
		}
	}
	if err := app.Healthcheck(ctx, adminURL+"/healthz"); err != nil {
		t.Errorf("healthcheck: %v", err)
	}

	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("serve after shutdown: got %v, want nil", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not return after its context was cancelled")
	}
	if resp, err := http.Get(adminURL + "/healthz"); err == nil {
		resp.Body.Close()
		t.Error("the admin listener still answers after shutdown")
	}
}

// freePort returns a loopback port that nothing listens on now.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

// TestListenBindsWhereTold: BIND_HOST and ADMIN_BIND_HOST choose the
// address each port listens on; empty, they listen on every interface.
func TestListenBindsWhereTold(t *testing.T) {
	for _, tc := range []struct {
		env             map[string]string
		main, adminHost string // the listeners' addresses
	}{
		{map[string]string{}, "::", "::"},
		{map[string]string{"ADMIN_BIND_HOST": "127.0.0.1"}, "::", "127.0.0.1"},
		{map[string]string{"BIND_HOST": "127.0.0.1", "ADMIN_BIND_HOST": "localhost"}, "127.0.0.1", "127.0.0.1"},
	} {
		tc.env["PORT"], tc.env["ADMIN_PORT"] = freePort(t), freePort(t)
		cfg, err := loadConfig(func(k string) string { return tc.env[k] })
		if err != nil {
			t.Fatal(err)
		}
		ln, admin, err := listen(cfg)
		if err != nil {
			t.Fatalf("%v: %v", tc.env, err)
		}
		for _, l := range []struct {
			ln         net.Listener
			host, port string
		}{{ln, tc.main, tc.env["PORT"]}, {admin, tc.adminHost, tc.env["ADMIN_PORT"]}} {
			host, port, _ := net.SplitHostPort(l.ln.Addr().String())
			if (host != l.host && !(l.host == "::" && host == "0.0.0.0")) || port != l.port {
				t.Errorf("%v: listens on %s, want %s", tc.env, l.ln.Addr(), net.JoinHostPort(l.host, l.port))
			}
		}
		ln.Close()
		admin.Close()
	}
}

// TestIdleConnectionsAreClosed: on both ports, a keep-alive connection
// that sends no second request is closed after IDLE_TIMEOUT.
func TestIdleConnectionsAreClosed(t *testing.T) {
	s := startServe(t, context.Background(), map[string]string{"IDLE_TIMEOUT": "200ms"}, "http://127.0.0.1:5000")
	for _, addr := range []string{s.ln.Addr().String(), s.admin.Addr().String()} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.Close {
			t.Fatalf("%s: the first answer closed the connection; want it kept alive", addr)
		}
		// A generous wait: the dispatcher closes it long before.
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := br.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Errorf("%s: idle keep-alive connection: got (%d bytes, %v), want EOF: closed by the dispatcher", addr, n, err)
		}
	}
}

// rawRequest sends one request line as written and returns the status line.
func rawRequest(t *testing.T, addr, line string) string {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte(line + "\r\nHost: x\r\nConnection: close\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	status, _, _ := strings.Cut(readAll(conn), "\r\n")
	return status
}

func readAll(r io.Reader) string {
	b, _ := io.ReadAll(r)
	return string(b)
}

// When one listener fails, serve stops the other and returns the error,
// rather than serving half a dispatcher.
func TestServeStopsWhenAListenerFails(t *testing.T) {
	s := startServe(t, context.Background(), nil)
	ln, admin, errc := s.ln, s.admin, s.errc
	if err := app.Healthcheck(context.Background(), "http://"+admin.Addr().String()+"/healthz"); err != nil {
		t.Fatal(err)
	}
	admin.Close()
	select {
	case err := <-errc:
		if err == nil {
			t.Error("serve returned nil after its admin listener failed, want the error")
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve kept running after its admin listener failed")
	}
	if resp, err := http.Get("http://" + ln.Addr().String() + "/"); err == nil {
		resp.Body.Close()
		t.Error("the main listener still answers after the admin listener failed")
	}
}

func TestRunRejectsBadConfigAndCommands(t *testing.T) {
	env := map[string]string{"REDIRECT_STATUS": "200"}
	if err := run(context.Background(), nil, func(k string) string { return env[k] }, io.Discard); err == nil || !strings.Contains(err.Error(), "REDIRECT_STATUS") {
		t.Errorf("REDIRECT_STATUS=200: got %v, want an error naming it", err)
	}
	if err := run(context.Background(), []string{"bogus"}, func(string) string { return "" }, io.Discard); err == nil || !strings.Contains(err.Error(), "unknown command") {
		t.Errorf("unknown command: got %v", err)
	}
	env = map[string]string{"REDIS_URL": "http://not-redis"}
	if err := run(context.Background(), nil, func(k string) string { return env[k] }, io.Discard); err == nil || !strings.Contains(err.Error(), "REDIS_URL") {
		t.Errorf("REDIS_URL of the wrong scheme: got %v, want an error naming REDIS_URL", err)
	}
}

func TestREADMEListsSettings(t *testing.T) {
	if err := app.CheckREADME("../README.md", "dispatcher", settings); err != nil {
		t.Error(err)
	}
}
