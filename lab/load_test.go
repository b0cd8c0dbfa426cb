package main

import (
	"fmt"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// The Poisson pacer's arrivals have the asked-for mean rate, the same seed
// gives the same arrivals, and a late request is sent at once: the load
// never waits for answers.
func TestPoissonPacer(t *testing.T) {
	const rate, n = 500.0, 20000
	p, q := newPoissonPacer(rate, 7), newPoissonPacer(rate, 7)
	var last time.Duration
	for i := range uint64(n) {
		wait, stop := p.Pace(0, i)
		if stop {
			t.Fatalf("hit %d: the pacer stopped", i)
		}
		if w2, _ := q.Pace(0, i); w2 != wait {
			t.Fatalf("hit %d: same seed, got waits %v and %v", i, wait, w2)
		}
		if wait < last {
			t.Fatalf("hit %d arrives at %v, before hit %d at %v", i, wait, i-1, last)
		}
		last = wait
	}
	mean := float64(n) / last.Seconds()
	if math.Abs(mean-rate)/rate > 0.03 {
		t.Errorf("got %.1f arrivals per second over %d, want %.0f ± 3%%", mean, n, rate)
	}
	if wait, _ := p.Pace(last+time.Second, n); wait != 0 {
		t.Errorf("a hit due a second ago: got wait %v, want 0", wait)
	}
	if got := p.Rate(time.Hour); got != rate {
		t.Errorf("got Rate %v, want %v", got, rate)
	}
}

// Every request names one of the users in X-User, the load uses many of
// them, and the URLs take turns.
func TestUserTargeter(t *testing.T) {
	sent := 0
	tr := userTargeter([]string{"http://127.0.0.1:1/", "http://127.0.0.1:2/"}, 50, 1, func() { sent++ })
	seen := map[string]int{}
	for i := range 1000 {
		var tgt vegeta.Target
		if err := tr(&tgt); err != nil {
			t.Fatal(err)
		}
		u := tgt.Header.Get(userHeader)
		if !strings.HasPrefix(u, "user-") {
			t.Fatalf("got %s %q, want user-N", userHeader, u)
		}
		if want := fmt.Sprintf("http://127.0.0.1:%d/?user=%s", 1+i%2, u); tgt.Method != http.MethodGet || tgt.URL != want {
			t.Fatalf("got %s %s, want GET %s (the user in the query too)", tgt.Method, tgt.URL, want)
		}
		seen[u]++
	}
	if len(seen) != 50 {
		t.Errorf("got %d distinct users in 1000 requests, want all 50", len(seen))
	}
	if sent != 1000 {
		t.Errorf("sent was called %d times for 1000 requests", sent)
	}
}

// An outcome counts every result, errors at the latency they took,
// successful answers by the backend that named itself, and which users
// always met the same backend.
func TestOutcome(t *testing.T) {
	o := newOutcome()
	ok := func(name string, ms int, user string) *vegeta.Result {
		return &vegeta.Result{Code: 200, Latency: time.Duration(ms) * time.Millisecond,
			URL: "http://127.0.0.1:1/?user=" + user, Headers: http.Header{"X-Backend": {name}}}
	}
	for _, r := range []*vegeta.Result{
		ok("fast1", 10, "user-1"), ok("fast1", 12, "user-1"), ok("slow", 90, "user-2"),
		ok("fast1", 11, "user-3"), ok("fast2", 11, "user-3"), ok("fast1", 9, "user-4"),
		{Code: 502, Error: "502 Bad Gateway", Latency: 3 * time.Millisecond},
		{Error: `Get "http://127.0.0.1:1/": context deadline exceeded (Client.Timeout exceeded while awaiting headers)`, Latency: 5 * time.Second},
	} {
		o.add(r)
	}
	if o.requests != 8 || o.errors != 2 {
		t.Errorf("got %d requests, %d errors; want 8, 2", o.requests, o.errors)
	}
	if o.answered["fast1"] != 4 || o.answered["fast2"] != 1 || o.answered["slow"] != 1 || len(o.answered) != 3 {
		t.Errorf("got answered %v, want fast1:4 fast2:1 slow:1", o.answered)
	}
	// user-1 stayed on fast1, user-3 moved; user-2 and user-4 had one answer.
	if got := o.sticky(); got != 0.5 {
		t.Errorf("got sticky %v, want 0.5", got)
	}
	if got := kindsString(o.errorKinds); got != "HTTP 502 1, timeout 1" {
		t.Errorf("got error kinds %q, want %q", got, "HTTP 502 1, timeout 1")
	}
	_, _, p99 := percentiles(o.latencies)
	if p99 != 5*time.Second {
		t.Errorf("got p99 %v, want the timeout, 5s", p99)
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- { // 100 ms .. 1 ms, unsorted
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	p50, p90, p99 := percentiles(d)
	if p50 != 50*time.Millisecond || p90 != 90*time.Millisecond || p99 != 99*time.Millisecond {
		t.Errorf("got p50 %v, p90 %v, p99 %v; want 50ms, 90ms, 99ms", p50, p90, p99)
	}
	if got := percentile([]time.Duration{7}, 0.99); got != 7 {
		t.Errorf("one value: got %v, want it", got)
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("no values: got %v, want 0", got)
	}
}

// Shares are what the dispatcher sent to each backend over all it sent,
// with every backend of the pool listed, 0 included.
func TestNewResult(t *testing.T) {
	o := outcome{requests: 8, errors: 2, latencies: []time.Duration{time.Millisecond}}
	r := newResult("round-robin", []string{"fast1", "fast2", "slow"}, o, map[string]int64{"fast1": 6, "slow": 2})
	want := map[string]float64{"fast1": 0.75, "fast2": 0, "slow": 0.25}
	if len(r.Share) != len(want) {
		t.Errorf("got share %v, want %v", r.Share, want)
	}
	for k, v := range want {
		if r.Share[k] != v {
			t.Errorf("share[%s]: got %v, want %v", k, r.Share[k], v)
		}
	}
	if r.Requests != 8 || r.Errors != 2 || r.P99MS != 1 {
		t.Errorf("got requests %d, errors %d, p99 %v ms; want 8, 2, 1", r.Requests, r.Errors, r.P99MS)
	}
}

// The dispatcher's counter of requests, summed by backend over modes and
// statuses; requests answered without a backend do not count.
func TestParsePicks(t *testing.T) {
	const exposition = `# HELP spread_requests_total Requests answered on the main port.
# TYPE spread_requests_total counter
spread_requests_total{backend="",mode="proxy",status="503"} 4
spread_requests_total{backend="http://127.0.0.1:5001",mode="proxy",status="200"} 120
spread_requests_total{backend="http://127.0.0.1:5001",mode="proxy",status="502"} 3
spread_requests_total{backend="http://127.0.0.1:5002",mode="proxy",status="200"} 7.0
spread_requests_total_created{backend="http://127.0.0.1:5002"} 1.7e+09
spread_pick_duration_seconds_count 131
`
	got, err := parsePicks(strings.NewReader(exposition))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["http://127.0.0.1:5001"] != 123 || got["http://127.0.0.1:5002"] != 7 {
		t.Errorf("got %v, want 5001:123, 5002:7", got)
	}
	if _, err := parsePicks(strings.NewReader("spread_pick_duration_seconds_count 1\n")); err == nil {
		t.Error("no spread_requests_total: got no error")
	}
	labels, v, err := parseSample(`a="x\"y",b="\\"} 2`)
	if err != nil || labels["a"] != `x"y` || labels["b"] != `\` || v != 2 {
		t.Errorf(`got %q, %v, %v; want a=x"y, b=\, 2`, labels, v, err)
	}
}
