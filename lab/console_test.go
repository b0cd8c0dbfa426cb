package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

// consoleClient drives a console's API as the page and a script do.
type consoleClient struct {
	t    *testing.T
	base string
}

// post sends body as JSON to path and returns the status and the decoded
// answer.
func (c consoleClient) post(path string, body any) (int, map[string]any) {
	c.t.Helper()
	b, _ := json.Marshal(body)
	resp, err := http.Post(c.base+path, "application/json", bytes.NewReader(b))
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &out); err != nil {
		c.t.Fatalf("POST %s %s: %s: not JSON: %q", path, b, resp.Status, raw)
	}
	return resp.StatusCode, out
}

func (c consoleClient) state() consoleState {
	c.t.Helper()
	var s consoleState
	c.get("/api/state", &s)
	return s
}

func (c consoleClient) get(path string, v any) {
	c.t.Helper()
	resp, err := http.Get(c.base + path)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		c.t.Fatalf("GET %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		c.t.Fatalf("GET %s: %v", path, err)
	}
}

// within polls the console's state every 250 ms until cond holds, for at
// most d; it returns the last state and whether cond held.
func (c consoleClient) within(d time.Duration, cond func(consoleState) bool) (consoleState, bool) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for {
		s := c.state()
		if cond(s) {
			return s, true
		}
		if time.Now().After(deadline) {
			return s, false
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// backendNamed returns the backend of s whose BACKEND_NAME is name.
func backendNamed(t *testing.T, s consoleState, name string) backendState {
	t.Helper()
	for _, b := range s.Backends {
		if b.Name == name {
			return b
		}
	}
	t.Fatalf("no backend named %s in the state: %+v", name, s.Backends)
	return backendState{}
}

func p99(s consoleState) float64 {
	if s.LatencyMS.P99 == nil {
		return math.NaN()
	}
	return *s.LatencyMS.P99
}

// The lesson, driven through the console's API with local processes (the
// console's own stack: redis-server, the lab's three backends with
// CONTROL=1, two proxying dispatchers on one list). At 75% of the pool's
// capacity, round robin piles a queue on the slow backend and the tail
// reaches the timeout; stored least-conn drains it, and both dispatchers
// say they run least-conn. A bad control value is refused by name and
// changes nothing.
func TestConsoleLesson(t *testing.T) {
	ctx := t.Context()
	cfg, err := loadServeConfig(envOf(map[string]string{"LAB_ADDR": "127.0.0.1:0"}))
	if err != nil {
		t.Fatal(err)
	}
	if load := float64(cfg.lab.rate) / capacityRPS(cfg.lab.backends); math.Abs(load-0.75) > 0.01 {
		t.Fatalf("the default rate is %d req/s, %.0f%% of the pool's capacity; want 75%%", cfg.lab.rate, 100*load)
	}
	own, err := startOwnStack(ctx, cfg.lab, io.Discard)
	if own != nil {
		defer own.stop()
	}
	if err != nil {
		t.Fatal(err)
	}
	defer own.pool.close()
	rate := cfg.lab.rate
	cfg.lab.rate = 0 // the test starts the load itself
	con, err := newConsole(ctx, cfg, own.pool, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer con.stop()
	srv := httptest.NewServer(con.handler())
	defer srv.Close()
	c := consoleClient{t, srv.URL}

	if s := c.state(); s.Strategy != "round-robin" || len(s.Backends) != 3 || len(s.Dispatchers) != 2 {
		t.Fatalf("at start: got strategy %q, %d backends, %d dispatchers; want round-robin, 3, 2", s.Strategy, len(s.Backends), len(s.Dispatchers))
	}
	if status, body := c.post("/api/scenario", map[string]any{"name": "one-slow"}); status != http.StatusOK {
		t.Fatalf("POST /api/scenario one-slow: %d %v", status, body)
	}
	slow := backendNamed(t, c.state(), slowName)
	if slow.LatencyMS != 200 || slow.Capacity != 4 || slow.Down {
		t.Fatalf("after one-slow: the slow backend has latency %v ms, capacity %d, down %v; want 200, 4, false", slow.LatencyMS, slow.Capacity, slow.Down)
	}
	if status, body := c.post("/api/load", map[string]any{"rate": rate}); status != http.StatusOK || body["rate"] != float64(rate) {
		t.Fatalf("POST /api/load %d: %d %v", rate, status, body)
	}

	// Round robin: a third of 315 req/s to a backend that serves 20.
	s, ok := c.within(15*time.Second, func(s consoleState) bool {
		return backendNamed(t, s, slowName).Queue > 3*4 && p99(s) > 1000
	})
	if !ok {
		t.Fatalf("within 15 s of round robin at %d req/s: the slow backend's queue is %d and p99 %v ms; want more than 12 and more than 1 s",
			rate, backendNamed(t, s, slowName).Queue, p99(s))
	}
	t.Logf("round robin: slow queue %d, p99 %.0f ms, %.1f errors/s", backendNamed(t, s, slowName).Queue, p99(s), s.ErrorsPerS)

	if status, body := c.post("/api/strategy", map[string]any{"name": "least-conn"}); status != http.StatusOK || body["name"] != "least-conn" {
		t.Fatalf("POST /api/strategy least-conn: %d %v", status, body)
	}
	s, ok = c.within(20*time.Second, func(s consoleState) bool {
		return backendNamed(t, s, slowName).Queue <= 4 && p99(s) < 1000
	})
	if !ok {
		t.Fatalf("within 20 s of least-conn: the slow backend's queue is %d and p99 of the last 5 s %v ms; want at most 4 and under 1 s",
			backendNamed(t, s, slowName).Queue, p99(s))
	}
	t.Logf("least-conn: slow queue %d, p99 %.0f ms, share %.3f", backendNamed(t, s, slowName).Queue, p99(s), *backendNamed(t, s, slowName).Share)
	if s.Strategy != "least-conn" || s.Stored == nil || s.Stored.Name != "least-conn" {
		t.Errorf("the state says strategy %q, stored %+v; want least-conn, stored", s.Strategy, s.Stored)
	}
	for _, d := range own.pool.dispatchers {
		m, err := own.pool.metrics(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		if m.strategy != "least-conn" {
			t.Errorf("dispatcher %s: spread_strategy_info says %q, want least-conn", d.url, m.strategy)
		}
	}

	// Bad values: 400 naming the field, and nothing changes.
	before := c.state()
	slowURL := backendNamed(t, before, slowName).URL
	for _, tc := range []struct {
		path  string
		body  any
		field string
	}{
		{"/api/backend", map[string]any{"url": slowURL, "latency": "fast"}, "latency"},
		{"/api/backend", map[string]any{"url": slowURL, "latency": "10ms", "capacity": -1}, "capacity"},
		{"/api/backend", map[string]any{"url": slowURL, "fail_rate": 2}, "fail_rate"},
		{"/api/backend", map[string]any{"url": slowURL, "down": "yes"}, "down"},
		{"/api/backend", map[string]any{"url": slowURL, "speed": 3}, "speed"},
		{"/api/backend", map[string]any{"url": "http://127.0.0.1:1", "latency": "1s"}, "url"},
		{"/api/load", map[string]any{"rate": -5}, "rate"},
		{"/api/load", map[string]any{"rate": "lots"}, "rate"},
		{"/api/load", map[string]any{"rps": 10}, "rps"},
		{"/api/strategy", map[string]any{"name": "fastest"}, "name"},
		{"/api/strategy", map[string]any{"name": "hash", "settings": map[string]string{"HASH_KEY": "header:"}}, "settings.HASH_KEY"},
		{"/api/strategy", map[string]any{"name": "random", "settings": map[string]string{"HASH_KEY": "ip"}}, "settings.HASH_KEY"},
		{"/api/scenario", map[string]any{"name": "meteor"}, "name"},
		{"/api/scenario", "one-slow", "body"},
	} {
		status, body := c.post(tc.path, tc.body)
		if status != http.StatusBadRequest || body["field"] != tc.field || fmt.Sprint(body["error"]) == "" {
			t.Errorf("POST %s %v: got %d %v, want 400 naming %s, and what is wrong", tc.path, tc.body, status, body, tc.field)
		}
	}
	after := c.state()
	if after.Rate != before.Rate || after.Stored == nil || fmt.Sprint(*after.Stored) != fmt.Sprint(*before.Stored) {
		t.Errorf("after the bad writes: rate %v, stored %+v; want %v and %+v unchanged", after.Rate, after.Stored, before.Rate, before.Stored)
	}
	knobs := func(s consoleState) string {
		var out []string
		for _, b := range s.Backends {
			out = append(out, fmt.Sprintf("%s %vms+%v ×%d fail %v down %v", b.Name, b.LatencyMS, b.JitterMS, b.Capacity, b.FailRate, b.Down))
		}
		return strings.Join(out, "; ")
	}
	if knobs(after) != knobs(before) {
		t.Errorf("after the bad writes the backends are %s; want %s unchanged", knobs(after), knobs(before))
	}
}

// newBareConsole is a console over no stack, its load aimed at a server
// that answers 200, at rate 0: enough for the page, the strategies and
// POST /api/load.
func newBareConsole(t *testing.T, token string) *console {
	t.Helper()
	target := newFakeDispatcher(t, "ok")
	l, err := startLiveLoad(liveOptions{targets: []string{target.URL}, users: 1, timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.stop)
	return &console{load: l, watch: newWatcher(&pool{}, time.Now), token: token, log: slog.New(slog.DiscardHandler)}
}

// Writes: loopback clients that reached the console by an IP address or
// localhost may write; others need the token; a body that is not JSON, or a
// browser's write from another site's page, is refused whoever sends it.
func TestConsoleWriteRules(t *testing.T) {
	for _, tc := range []struct {
		name, token, remote, host, origin, contentType, sent string
		want                                                 int
	}{
		{"loopback, by IP", "", "127.0.0.1:5555", "127.0.0.1:8099", "", "application/json", "", 200},
		{"loopback IPv6, by localhost", "", "[::1]:5555", "localhost:8099", "", "application/json", "", 200},
		{"loopback, the page's own origin", "", "127.0.0.1:5555", "127.0.0.1:8099", "http://127.0.0.1:8099", "application/json; charset=utf-8", "", 200},
		{"another host, no token set", "", "10.1.2.3:5555", "10.0.0.7:8099", "", "application/json", "", 403},
		{"another host, no token sent", "s3cret", "10.1.2.3:5555", "10.0.0.7:8099", "", "application/json", "", 403},
		{"another host, wrong token", "s3cret", "10.1.2.3:5555", "10.0.0.7:8099", "", "application/json", "guess", 403},
		{"another host, the token", "s3cret", "10.1.2.3:5555", "10.0.0.7:8099", "", "application/json", "s3cret", 200},
		{"loopback by another name (DNS rebinding)", "", "127.0.0.1:5555", "evil.example:8099", "http://evil.example:8099", "application/json", "", 403},
		{"another site's page", "", "127.0.0.1:5555", "127.0.0.1:8099", "http://evil.example", "application/json", "", 403},
		{"a form, not JSON", "", "127.0.0.1:5555", "127.0.0.1:8099", "", "text/plain", "", 415},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newBareConsole(t, tc.token)
			req := httptest.NewRequest(http.MethodPost, "/api/load", strings.NewReader(`{"rate":7}`))
			req.RemoteAddr, req.Host = tc.remote, tc.host
			req.Header.Set("Content-Type", tc.contentType)
			if tc.origin != "" {
				req.Header.Set("Origin", tc.origin)
			}
			if tc.sent != "" {
				req.Header.Set(tokenHeader, tc.sent)
			}
			rec := httptest.NewRecorder()
			c.handler().ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Fatalf("got %d %s, want %d", rec.Code, rec.Body, tc.want)
			}
			wantRate := 0.0
			if tc.want == 200 {
				wantRate = 7
			}
			if c.load.rate() != wantRate {
				t.Errorf("rate after the write: got %v, want %v", c.load.rate(), wantRate)
			}
		})
	}
	// The token also works as ?token=, as in the URL lab serve prints.
	c := newBareConsole(t, "s3cret")
	req := httptest.NewRequest(http.MethodPost, "/api/load?token=s3cret", strings.NewReader(`{"rate":9}`))
	req.RemoteAddr, req.Host = "10.1.2.3:5555", "10.0.0.7:8099"
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	c.handler().ServeHTTP(rec, req)
	if rec.Code != 200 || c.load.rate() != 9 {
		t.Errorf("?token=: got %d %s, rate %v; want 200, rate 9", rec.Code, rec.Body, c.load.rate())
	}
}

// The page, Chart.js and its licence are served from the binary, so the
// console works with no network; the strategies come from the registry.
func TestConsolePage(t *testing.T) {
	srv := httptest.NewServer(newBareConsole(t, "").handler())
	defer srv.Close()
	for _, tc := range []struct{ path, contentType, contains string }{
		{"/", "text/html", `<canvas id="chart-latency">`},
		{"/static/chart.min.js", "javascript", "Chart.js v3.9.1"},
		{"/static/chart.js.LICENSE", "", "Permission is hereby granted"},
		{"/healthz", "", "ok"},
	} {
		resp, err := http.Get(srv.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), tc.contentType) || !bytes.Contains(body, []byte(tc.contains)) {
			t.Errorf("GET %s: got %s, %q, %d bytes; want 200, %s, holding %q", tc.path, resp.Status, resp.Header.Get("Content-Type"), len(body), tc.contentType, tc.contains)
		}
		if bytes.Contains(body, []byte(`src="http`)) || bytes.Contains(body, []byte(`href="http`)) {
			t.Errorf("GET %s: it loads something from elsewhere; the page must work with no network", tc.path)
		}
	}
	var choices []strategyChoice
	consoleClient{t, srv.URL}.get("/api/strategies", &choices)
	var got []string
	for _, c := range choices {
		got = append(got, c.Label)
	}
	if !slices.Equal(got, strategyLabels()) {
		t.Errorf("GET /api/strategies: got %q, want the registry's %q", got, strategyLabels())
	}
}

// The settings of a running stack: all three or none, each checked, the
// slow backend last; a console reachable from other hosts makes up a token.
func TestServeConfig(t *testing.T) {
	running := map[string]string{
		"LAB_BACKENDS":    "http://fast1:5010=http://fast1:9000, http://fast2:5011=http://fast2:9000,http://slow:5012=http://slow:9000",
		"LAB_DISPATCHERS": "http://d1:80=http://d1:8080,http://d2:80/=http://d2:8080",
		"REDIS_URL":       "redis://redis:6379/0",
		"REDIS_KEY":       "lab",
	}
	cfg, err := loadServeConfig(envOf(running))
	if err != nil {
		t.Fatal(err)
	}
	if r := cfg.running; r == nil || len(r.backends) != 3 || r.backends[2].entry != "http://slow:5012" || r.backends[2].control != "http://slow:9000" ||
		len(r.dispatchers) != 2 || r.dispatchers[1].url != "http://d2:80" || r.redisKey != "lab" {
		t.Errorf("got running stack %+v", cfg.running)
	}
	if cfg.addr != "127.0.0.1:8099" || cfg.token != "" || cfg.tokenMade {
		t.Errorf("got addr %q, token %q (made %v); want 127.0.0.1:8099 and none", cfg.addr, cfg.token, cfg.tokenMade)
	}
	with := func(k, v string) map[string]string {
		m := maps.Clone(running)
		m[k] = v
		return m
	}
	for _, tc := range []struct {
		env  map[string]string
		want string // the start of the message
	}{
		{with("REDIS_URL", ""), "REDIS_URL is empty"},
		{map[string]string{"LAB_DISPATCHERS": "http://d1:80=http://d1:8080"}, "LAB_BACKENDS is empty"},
		{with("LAB_BACKENDS", "http://fast1:5010"), `LAB_BACKENDS: "http://fast1:5010": no =`},
		{with("LAB_BACKENDS", "http://a:1=http://a:9,ftp://b=http://b:9"), `LAB_BACKENDS: "ftp://b=http://b:9"`},
		{with("LAB_BACKENDS", "http://a:1=http://a:9,http://a:1=http://b:9"), `LAB_BACKENDS: "http://a:1=http://b:9": named twice`},
		{with("LAB_BACKENDS", "http://a:1=http://a:9"), "LAB_BACKENDS=\"http://a:1=http://a:9\": want two backends or more"},
		{with("LAB_DISPATCHERS", "http://d1:80=d1:8080"), `LAB_DISPATCHERS: "http://d1:80=d1:8080"`},
		{with("REDIS_KEY", "my list"), "REDIS_KEY="},
		{with("LAB_ADDR", "8099"), `LAB_ADDR="8099": want host:port`},
		{with("LAB_TOKEN", "two words"), "LAB_TOKEN: want a token without spaces"},
		{with("LAB_RATE", "many"), "LAB_RATE="},
	} {
		_, err := loadServeConfig(envOf(tc.env))
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want an error starting %q", tc.env, err, tc.want)
		}
	}

	cfg, err = loadServeConfig(envOf(map[string]string{"LAB_ADDR": "0.0.0.0:8099"}))
	if err != nil || !cfg.tokenMade || len(cfg.token) != 48 || cfg.running != nil {
		t.Errorf("LAB_ADDR=0.0.0.0:8099: got token %q (made %v), running %v, %v; want a 48-digit token made up, its own stack", cfg.token, cfg.tokenMade, cfg.running, err)
	}
	if got, want := consoleURL(cfg, fakeAddr("0.0.0.0:8099")), "http://localhost:8099/?token="+cfg.token; got != want {
		t.Errorf("the URL printed: got %q, want %q", got, want)
	}
	cfg, _ = loadServeConfig(envOf(map[string]string{"LAB_ADDR": "0.0.0.0:8099", "LAB_TOKEN": "mine"}))
	if cfg.token != "mine" || cfg.tokenMade {
		t.Errorf("LAB_TOKEN=mine: got token %q (made %v)", cfg.token, cfg.tokenMade)
	}
}

type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }
