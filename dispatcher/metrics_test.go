package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/spreadlb/spread/internal/pick"
	"github.com/spreadlb/spread/internal/pool"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/spreadlb/spread/internal/balance"
	"github.com/spreadlb/spread/internal/redistest"
	"github.com/spreadlb/spread/internal/store"
)

// scrape GETs url and parses the Prometheus text it answers.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: got %s, want 200", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: the answer does not parse as Prometheus text: %v", url, err)
	}
	return fams
}

// sample is the value of the series of family name with exactly these
// labels (a counter, gauge, or a histogram's count), and whether it exists.
func sample(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.Metric {
		if len(m.Label) != len(labels) {
			continue
		}
		match := true
		for _, l := range m.Label {
			if v, ok := labels[l.GetName()]; !ok || v != l.GetValue() {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func requests(backend, status string) map[string]string {
	return map[string]string{"backend": backend, "mode": "redirect", "status": status}
}

// TestMetricsCountExactly runs the dispatcher as main does, sends 30
// requests over three backends, then two with no backend, and reads
// /metrics from the admin port as Prometheus would.
func TestMetricsCountExactly(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := startServe(t, ctx, nil)
	store, ln, admin := s.store, s.ln, s.admin
	mainURL, metricsURL := "http://"+ln.Addr().String(), "http://"+admin.Addr().String()+"/metrics"

	fams := scrape(t, metricsURL)
	if f := fams["spread_requests_total"]; f != nil && len(f.Metric) > 0 {
		t.Errorf("before any request: got %d spread_requests_total series, want none", len(f.Metric))
	}

	if err := store.Replace(ctx, three); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	send := func(n int, want int) {
		t.Helper()
		for i := range n {
			resp, err := client.Get(mainURL + "/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Fatalf("request %d: got %d, want %d", i, resp.StatusCode, want)
			}
		}
	}
	send(30, http.StatusFound)
	for _, b := range three { // Redis deletes the list with its last entry: 503s follow
		if _, err := store.Remove(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	send(2, http.StatusServiceUnavailable)

	fams = scrape(t, metricsURL)
	want := []struct {
		name   string
		labels map[string]string
		value  float64
	}{
		{"spread_requests_total", requests(three[0], "302"), 10},
		{"spread_requests_total", requests(three[1], "302"), 10},
		{"spread_requests_total", requests(three[2], "302"), 10},
		{"spread_requests_total", requests("", "503"), 2},
		{"spread_pick_duration_seconds", nil, 32},
		// An empty list is an answer from Redis, not a Redis error.
		{"spread_redis_errors_total", nil, 0},
		{"spread_degraded", nil, 0},
	}
	for _, w := range want {
		got, ok := sample(fams, w.name, w.labels)
		if !ok || got != w.value {
			t.Errorf("%s%v: got %v (present: %v), want %v", w.name, w.labels, got, ok, w.value)
		}
	}
	if n := len(fams["spread_requests_total"].GetMetric()); n != 4 {
		t.Errorf("got %d spread_requests_total series, want 4", n)
	}
	if fams["go_goroutines"] == nil {
		t.Error("go_goroutines is missing: the Go collector is not registered")
	}
}

// TestRedisErrors counts exactly the picks that failed because Redis did
// not answer.
func TestRedisErrors(t *testing.T) {
	tests := []struct {
		err   error
		count bool
	}{
		{nil, false},
		{pick.ErrNoBackends, false},
		{fmt.Errorf("%w: %q", pick.ErrWrongType, "servers"), false},
		{pick.ErrNoValidBackend, false},
		{context.Canceled, false},
		{fmt.Errorf("%w: dial unix: connection refused", pick.ErrUnavailable), true},
		{fmt.Errorf("%w: %w", pick.ErrUnavailable, context.DeadlineExceeded), true},
		{context.DeadlineExceeded, true},
	}
	for _, tc := range tests {
		m := newMetrics("redirect", "round-robin")
		m.redisError(tc.err)
		srv := httptest.NewServer(m.handler())
		got, _ := sample(scrape(t, srv.URL), "spread_redis_errors_total", nil)
		srv.Close()
		if want := map[bool]float64{false: 0, true: 1}[tc.count]; got != want {
			t.Errorf("a pick failing with %v: got spread_redis_errors_total %v, want %v", tc.err, got, want)
		}
	}

	// The same through a real Redis that has gone away: the shared
	// rotation's Failover reports it.
	redis := redistest.Start(t)
	m := newMetrics("redirect", "round-robin")
	st := store.NewStore(redis.Client, "servers", nil)
	pl := pool.New(st, 0, nil)
	p := timedPicker{balance.NewFailover(balance.NewShared(store.NewRotation(st)), balance.NewLocal(pl),
		balance.Env{Pool: pl, Redis: st, OnRedisError: m.redisError}), m}
	redis.Stop()
	if _, err := p.Pick(context.Background(), nil); !errors.Is(err, pick.ErrUnavailable) {
		t.Fatalf("Pick with Redis stopped: got %v, want ErrUnavailable", err)
	}
	srv := httptest.NewServer(m.handler())
	defer srv.Close()
	fams := scrape(t, srv.URL)
	if got, _ := sample(fams, "spread_redis_errors_total", nil); got != 1 {
		t.Errorf("Redis stopped: got spread_redis_errors_total %v, want 1", got)
	}
	if got, _ := sample(fams, "spread_pick_duration_seconds", nil); got != 1 {
		t.Errorf("Redis stopped: got %v picks timed, want 1", got)
	}
}

func TestDegradedAndBackendUp(t *testing.T) {
	m := newMetrics("redirect", "round-robin")
	srv := httptest.NewServer(m.handler())
	defer srv.Close()
	m.SetDegraded(true)
	m.SetBackendUp(three[0], true)
	m.SetBackendUp(three[1], false)
	fams := scrape(t, srv.URL)
	for _, w := range []struct {
		name   string
		labels map[string]string
		value  float64
	}{
		{"spread_degraded", nil, 1},
		{"spread_backend_up", map[string]string{"backend": three[0]}, 1},
		{"spread_backend_up", map[string]string{"backend": three[1]}, 0},
	} {
		if got, ok := sample(fams, w.name, w.labels); !ok || got != w.value {
			t.Errorf("%s%v: got %v (present: %v), want %v", w.name, w.labels, got, ok, w.value)
		}
	}
	if n := len(fams["spread_backend_up"].GetMetric()); n != 2 {
		t.Errorf("got %d spread_backend_up series, want 2: only the backends set", n)
	}
	m.SetDegraded(false)
	if got, _ := sample(scrape(t, srv.URL), "spread_degraded", nil); got != 0 {
		t.Errorf("after SetDegraded(false): got spread_degraded %v, want 0", got)
	}
}

// TestRequestLog: one line per request at info level, with what was chosen.
func TestRequestLog(t *testing.T) {
	s := newStack(t, http.StatusFound)
	s.seed(t, three[0])
	var buf bytes.Buffer
	m := newMetrics("redirect", "round-robin")
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	h := newFront(&front{picker: balance.NewShared(store.NewRotation(s.store)), timeout: time.Second, log: slog.New(slog.DiscardHandler), deliver: redirector{status: http.StatusFound}},
		observeRequests(m, log))

	type line struct {
		Level, Msg, Method, Path, Backend string
		Status                            int
		Duration                          *int64
	}
	do := func(method, target string) line {
		t.Helper()
		buf.Reset()
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(method, target, nil))
		lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
		if len(lines) != 1 {
			t.Fatalf("%s %s: got %d log lines, want 1: %q", method, target, len(lines), buf.String())
		}
		var l line
		if err := json.Unmarshal([]byte(lines[0]), &l); err != nil {
			t.Fatalf("%s %s: %v in %q", method, target, err, lines[0])
		}
		if l.Duration == nil || *l.Duration < 0 {
			t.Errorf("%s %s: got duration %v, want one", method, target, l.Duration)
		}
		l.Duration = nil
		return l
	}
	if got, want := do("POST", "/a/b?c=d"), (line{"INFO", "request", "POST", "/a/b", three[0], 302, nil}); got != want {
		t.Errorf("a redirect: got %+v, want %+v", got, want)
	}
	s.store.Remove(context.Background(), three[0])
	if got, want := do("GET", "/"), (line{"INFO", "request", "GET", "/", "", 503, nil}); got != want {
		t.Errorf("no backend: got %+v, want %+v", got, want)
	}

	// At LOG_LEVEL=warn, requests are not logged.
	buf.Reset()
	quiet := newFront(&front{picker: balance.NewShared(store.NewRotation(s.store)), timeout: time.Second, log: slog.New(slog.DiscardHandler), deliver: redirector{status: http.StatusFound}},
		observeRequests(m, slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	quiet.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	if buf.Len() != 0 {
		t.Errorf("LOG_LEVEL=warn: got %q, want no request line", buf.String())
	}
}

func TestLogLevel(t *testing.T) {
	tests := []struct {
		value string
		want  slog.Level
		ok    bool
	}{
		{"", slog.LevelInfo, true},
		{"debug", slog.LevelDebug, true},
		{"info", slog.LevelInfo, true},
		{"warn", slog.LevelWarn, true},
		{"error", slog.LevelError, true},
		{"WARN", slog.LevelWarn, true},
		{"warning", 0, false},
		{"verbose", 0, false},
		{"0", 0, false},
	}
	for _, tc := range tests {
		cfg, err := loadConfig(func(k string) string { return map[string]string{"LOG_LEVEL": tc.value}[k] })
		switch {
		case tc.ok && (err != nil || cfg.logLevel != tc.want):
			t.Errorf("LOG_LEVEL=%q: got (%v, %v), want %v", tc.value, cfg.logLevel, err, tc.want)
		case !tc.ok && (err == nil || !strings.Contains(err.Error(), "LOG_LEVEL")):
			t.Errorf("LOG_LEVEL=%q: got error %v, want one naming LOG_LEVEL", tc.value, err)
		}
	}
	// run stops at start on a bad value, before touching Redis.
	err := run(context.Background(), nil, func(k string) string { return map[string]string{"LOG_LEVEL": "loud"}[k] }, io.Discard)
	if err == nil || !strings.Contains(err.Error(), `LOG_LEVEL="loud"`) {
		t.Errorf("run with LOG_LEVEL=loud: got %v, want an error naming LOG_LEVEL", err)
	}
}

// spread_backend_up follows the shared down set, as the dispatcher's
// snapshot reads it (every second): here another dispatcher's health checks
// are played by an SADD, and this one's are off.
func TestBackendUpFollowsTheDownSet(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := startServe(t, ctx, map[string]string{"HEALTH_INTERVAL": "0"}, three...)
	metricsURL := "http://" + s.admin.Addr().String() + "/metrics"
	if err := s.redis.Client.SAdd(ctx, "{servers}:down", three[1]).Err(); err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{three[0]: 1, three[1]: 0, three[2]: 1}
	var got map[string]float64
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		got = map[string]float64{}
		for _, m := range scrape(t, metricsURL)["spread_backend_up"].GetMetric() {
			got[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
		}
		if maps.Equal(got, want) {
			return
		}
	}
	t.Errorf("spread_backend_up: got %v, want %v", got, want)
}
