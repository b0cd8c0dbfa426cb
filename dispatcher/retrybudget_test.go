package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// PROXY_RETRY_ON decides which failures send a request to the next
// backend: a backend that does not send its headers within
// PROXY_TRY_TIMEOUT, or answers 5xx, is left for the next one only when
// PROXY_RETRY_ON names that failure; otherwise the client gets 504, or
// the backend's own 5xx.
func TestProxyRetryOn(t *testing.T) {
	hold := func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() } // until the dispatcher gives up
	tests := []struct {
		name    string
		env     map[string]string
		broken  http.HandlerFunc
		status  int
		live    int64
		retries float64
	}{
		{"a per-try timeout is retried", proxyEnv("PROXY_TRY_TIMEOUT", "100ms", "PROXY_RETRY_ON", "connect-failure,per-try-timeout"),
			hold, 200, 1, 1},
		{"a per-try timeout not named gives 504", proxyEnv("PROXY_TRY_TIMEOUT", "100ms"),
			hold, 504, 0, 0},
		{"a 5xx is retried", proxyEnv("PROXY_RETRY_ON", "5xx"),
			func(w http.ResponseWriter, r *http.Request) { http.Error(w, "broken", 500) }, 200, 1, 1},
		{"a 5xx not named is relayed", proxyEnv(),
			func(w http.ResponseWriter, r *http.Request) { http.Error(w, "broken", 500) }, 500, 0, 0},
		{"a 4xx is never retried", proxyEnv("PROXY_RETRY_ON", "5xx"),
			func(w http.ResponseWriter, r *http.Request) { http.Error(w, "nope", 404) }, 404, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			broken := newBackend(t, "broken", tc.broken)
			live := newBackend(t, "live", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
			tc.env["EJECT_AFTER"] = "0"
			// The last entry is tried first: broken, then live.
			s := startServe(t, ctx, tc.env, live.srv.URL, broken.srv.URL)
			resp, err := http.Get(s.main + "/broken")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Errorf("got %d, want %d", resp.StatusCode, tc.status)
			}
			if n := broken.hits.Load(); n != 1 {
				t.Errorf("the broken backend got %d requests, want 1", n)
			}
			if n := live.hits.Load(); n != tc.live {
				t.Errorf("the live backend got %d requests, want %d", n, tc.live)
			}
			if got, _ := sample(scrape(t, s.adm+"/metrics"), "spread_proxy_retries_total", nil); got != tc.retries {
				t.Errorf("spread_proxy_retries_total: got %v, want %v", got, tc.retries)
			}
		})
	}
}

// RETRY_BUDGET caps the retries in flight at a share of the requests in
// flight, but never below 3: with three retries held at a backend that
// does not answer yet, a fourth request's 5xx is relayed instead of
// retried, and counted as refused. Without a budget, it is retried too.
func TestRetryBudget(t *testing.T) {
	for _, tc := range []struct {
		budget  string
		status  int     // the fourth request's
		held    int64   // requests that reached the holding backend
		refused float64 // spread_proxy_retries_refused_total
	}{
		{"20%", 500, 3, 1},
		{"0", 200, 4, 0},
	} {
		t.Run("RETRY_BUDGET="+tc.budget, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			release := make(chan struct{})
			var once sync.Once
			free := func() { once.Do(func() { close(release) }) }
			bad := newBackend(t, "bad", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "broken", 500)
			}))
			hold := newBackend(t, "hold", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				<-release
				io.WriteString(w, "held")
			}))
			t.Cleanup(free) // before the backends close, which waits for their handlers
			// Round robin tries bad first, then hold, in turn: each
			// request fails at bad and is retried at hold, where it waits.
			s := startServe(t, ctx, proxyEnv("PROXY_RETRY_ON", "5xx", "RETRY_BUDGET", tc.budget, "EJECT_AFTER", "0"),
				hold.srv.URL, bad.srv.URL)
			var wg sync.WaitGroup
			var answered [4]atomic.Int64 // each request's status, read while others run
			for i := range 4 {
				wg.Go(func() {
					resp, err := http.Get(s.main + "/x")
					if err != nil {
						t.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					answered[i].Store(int64(resp.StatusCode))
				})
				// One at a time, so that the rotation alternates: wait
				// until this one has been retried (or answered).
				deadline := time.Now().Add(5 * time.Second)
				for bad.hits.Load() < int64(i+1) || (i < 3 && hold.hits.Load() < int64(i+1)) {
					if time.Now().After(deadline) {
						free()
						t.Fatalf("request %d: bad got %d, hold %d requests", i+1, bad.hits.Load(), hold.hits.Load())
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
			if tc.status == 500 {
				// The fourth is answered at once; the others still wait.
				deadline := time.Now().Add(5 * time.Second)
				for answered[3].Load() == 0 && time.Now().Before(deadline) {
					time.Sleep(5 * time.Millisecond)
				}
			} else {
				deadline := time.Now().Add(5 * time.Second)
				for hold.hits.Load() < 4 && time.Now().Before(deadline) {
					time.Sleep(5 * time.Millisecond)
				}
			}
			free()
			wg.Wait()
			statuses := make([]int, len(answered))
			for i := range answered {
				statuses[i] = int(answered[i].Load())
			}
			if statuses[3] != tc.status {
				t.Errorf("the fourth request got %d, want %d (all: %v)", statuses[3], tc.status, statuses)
			}
			for i, st := range statuses[:3] {
				if st != 200 {
					t.Errorf("request %d got %d, want 200 from the holding backend", i+1, st)
				}
			}
			if n := hold.hits.Load(); n != tc.held {
				t.Errorf("the holding backend got %d requests, want %d", n, tc.held)
			}
			fams := scrape(t, s.adm+"/metrics")
			if got, _ := sample(fams, "spread_proxy_retries_refused_total", nil); got != tc.refused {
				t.Errorf("spread_proxy_retries_refused_total: got %v, want %v", got, tc.refused)
			}
		})
	}
}

// An attempt whose PROXY_TRY_TIMEOUT fires just as its headers arrive
// counts as timed out (its context is cancelled, so its body would be cut
// short); one whose headers came first keeps its answer.
func TestTryTimeoutAtTheHeaders(t *testing.T) {
	rp := &retryPolicy{cfg: retryConfig{tryTimeout: time.Millisecond, onTimeout: true}}
	var late tryState
	ctx := rp.begin(context.Background(), 0, &late, true)
	<-ctx.Done() // the timer fired and cancelled the attempt
	if err := rp.answered(&late, true, 200); !errors.Is(err, errTryTimeout) {
		t.Errorf("headers after the timeout: got %v, want errTryTimeout", err)
	}
	req := httptest.NewRequest("GET", "/x", nil).WithContext(ctx)
	if !timedOut(req, errTryTimeout) {
		t.Error("the attempt is not reported as timed out")
	}
	rp.end(&late)

	rp = &retryPolicy{cfg: retryConfig{tryTimeout: time.Hour, onTimeout: true}}
	var early tryState
	ctx = rp.begin(context.Background(), 0, &early, true)
	if err := rp.answered(&early, true, 200); err != nil {
		t.Errorf("headers before the timeout: got %v, want nil", err)
	}
	if ctx.Err() != nil {
		t.Errorf("the answered attempt's context was cancelled: %v", context.Cause(ctx))
	}
	rp.end(&early)
	if n := rp.active.Load(); n != 0 {
		t.Errorf("%d attempts still counted in flight after both ended", n)
	}
}

// PROXY_TRY_TIMEOUT bounds the wait for the headers of a request without a
// body; a request whose body takes the client longer than that to send is
// not cut off mid-upload (it is never retried, and PROXY_RESPONSE_TIMEOUT
// bounds it).
func TestTryTimeoutLeavesUploadsAlone(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := newBackend(t, "b1", nil)
	s := startServe(t, ctx, proxyEnv("PROXY_TRY_TIMEOUT", "200ms", "PROXY_RETRY_ON", "per-try-timeout"), b.srv.URL)
	waitFor(t, "the snapshot is read", func() bool { code, _ := s.readyz(t); return code == 200 })

	body, w := io.Pipe()
	go func() {
		for range 5 { // 5000 bytes over about 500 ms
			w.Write(bytes.Repeat([]byte("x"), 1000))
			time.Sleep(100 * time.Millisecond)
		}
		w.Close()
	}()
	resp, err := http.Post(s.main+"/whoami", "text/plain", body)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got seen
	if err := json.NewDecoder(resp.Body).Decode(&got); resp.StatusCode != 200 || err != nil {
		t.Fatalf("a slow upload: got %d (%v), want 200 with the backend's echo", resp.StatusCode, err)
	}
	if len(got.Body) != 5000 {
		t.Errorf("the backend read %d bytes of the body, want 5000", len(got.Body))
	}
}
