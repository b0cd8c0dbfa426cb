package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// Output of `wrk -t2 -c64 -d10s --latency` (wrk 4.1.0).
const wrkOutput = `Running 10s test @ http://127.0.0.1:41237/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.61ms    2.34ms  40.12ms   87.13%
    Req/Sec    12.95k     1.02k   15.21k    71.50%
  Latency Distribution
     50%    1.93ms
     75%    3.12ms
     90%    5.37ms
     99%   11.84ms
  257803 requests in 10.00s, 36.13MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  25774.02
Transfer/sec:      3.61MB
`

func TestParseWrk(t *testing.T) {
	got, err := parseWrk(wrkOutput)
	if err != nil {
		t.Fatal(err)
	}
	want := result{requests: 257803, errors: 7, rps: 25774.02, p50: 1930 * time.Microsecond, p99: 11840 * time.Microsecond}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if d, err := parseWrkDuration("812.00us"); err != nil || d != 812*time.Microsecond {
		t.Errorf("812.00us: got (%v, %v), want 812µs", d, err)
	}
	if _, err := parseWrk("Running 10s test\n  0 requests in 10.00s\n"); err == nil {
		t.Error("output without a latency distribution: got no error")
	}
}

// The Go load generator counts every answer it gets, and counts a non-3xx
// answer as an error.
func TestGoLoadCountsRequests(t *testing.T) {
	var served atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := served.Add(1)
		if n%100 == 0 {
			http.Error(w, "no", http.StatusServiceUnavailable)
			return
		}
		http.Redirect(w, r, "http://127.0.0.1:1/", http.StatusFound)
	}))
	defer srv.Close()
	got, err := goLoad{}.run(context.Background(), srv.URL+"/", 4, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	total := served.Load()
	if got.requests+got.errors != total || got.errors != total/100 {
		t.Errorf("got %d redirects and %d errors, want %d and %d (the server answered %d)",
			got.requests, got.errors, total-total/100, total/100, total)
	}
	if got.rps <= 0 || got.p50 <= 0 || got.p99 < got.p50 {
		t.Errorf("got rps %v, p50 %v, p99 %v: want positive, p99 ≥ p50", got.rps, got.p50, got.p99)
	}
}

func TestMedianAndPercentile(t *testing.T) {
	if got := median([]float64{3, 1, 2}); got != 2 {
		t.Errorf("median of 3 1 2: got %v, want 2", got)
	}
	if got := median([]time.Duration{4, 1, 3, 2}); got != 2 {
		t.Errorf("median of 4 1 3 2: got %v, want 2 (integer mean of 2 and 3)", got)
	}
	sorted := make([]time.Duration, 100)
	for i := range sorted {
		sorted[i] = time.Duration(i + 1)
	}
	if p50, p99 := percentile(sorted, 50), percentile(sorted, 99); p50 != 50 || p99 != 99 {
		t.Errorf("1..100: got p50 %v, p99 %v, want 50 and 99", p50, p99)
	}
}

// A round's figure for a mode adds up its slices: requests/s over the time
// they all took (not the mean of their rates), LMOVE calls and bytes Redis
// received per request over all of them, and the median of their p50 and
// p99.
func TestAccumAddsSlices(t *testing.T) {
	var a accum
	a.add(result{requests: 30000, errors: 1, rps: 15000, p50: 2 * time.Millisecond, p99: 9 * time.Millisecond}, 30000, 3000000)
	a.add(result{requests: 10000, rps: 10000, p50: 3 * time.Millisecond, p99: 7 * time.Millisecond}, 10002, 1200000)
	a.add(result{requests: 20000, errors: 2, rps: 10000, p50: 1 * time.Millisecond, p99: 8 * time.Millisecond}, 20000, 1800000)
	got := a.measurement(2, "redis")
	want := measurement{round: 2, key: "redis", lmovePerRequest: 60002.0 / 60000, redisBytesPerRequest: 100,
		result: result{requests: 60000, errors: 3, rps: 12000, p50: 2 * time.Millisecond, p99: 8 * time.Millisecond}}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if got := (&accum{}).measurement(1, "local"); got.rps != 0 || got.lmovePerRequest != 0 {
		t.Errorf("no slices: got rps %v, LMOVE/request %v, want 0 and 0", got.rps, got.lmovePerRequest)
	}
}
