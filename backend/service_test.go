package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// forever is a LATENCY that no test waits out: a GET / in service with it
// ends only when its client leaves.
const forever = time.Hour

// serve starts the backend's routes with svc on a real listener on
// 127.0.0.1 and returns its URL. Requests made with t.Context() end before
// the server closes.
func serve(t *testing.T, svc *service) string {
	t.Helper()
	srv := httptest.NewServer(newServer("b1", svc))
	t.Cleanup(srv.Close)
	return srv.URL
}

// answer is what a client got: a status and body, or an error.
type answer struct {
	status int
	body   string
	err    error
}

// getAsync sends GET url with ctx and delivers the answer on the returned
// channel.
func getAsync(ctx context.Context, url string) <-chan answer {
	c := make(chan answer, 1)
	go func() {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			c <- answer{err: err}
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			c <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		c <- answer{resp.StatusCode, string(body), err}
	}()
	return c
}

func getStats(t *testing.T, url string) stats {
	t.Helper()
	a := <-getAsync(t.Context(), url+"/stats")
	if a.err != nil || a.status != http.StatusOK {
		t.Fatalf("GET /stats: got %d %v, want 200", a.status, a.err)
	}
	var s stats
	if err := json.Unmarshal([]byte(a.body), &s); err != nil {
		t.Fatalf("GET /stats: body %q: %v", a.body, err)
	}
	return s
}

// waitStats polls /stats until its counts are in service, queued, served,
// and fails with the last counts seen if the test's deadline comes first.
func waitStats(t *testing.T, url string, inService, queued, served int64) {
	t.Helper()
	deadline, ok := t.Deadline()
	for {
		s := getStats(t, url)
		if s.InService == inService && s.Queued == queued && s.Served == served {
			return
		}
		if ok && time.Until(deadline) < 5*time.Second {
			t.Fatalf("/stats: got in_service %d, queued %d, served %d; want %d, %d, %d",
				s.InService, s.Queued, s.Served, inService, queued, served)
		}
		time.Sleep(time.Millisecond)
	}
}

// gate replaces svc's service time: each one ends when the test sends on
// the returned channel, or when its client leaves.
func gate(svc *service) chan<- struct{} {
	release := make(chan struct{})
	svc.sleep = func(ctx context.Context, _ time.Duration) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return release
}

func TestStatsBody(t *testing.T) {
	rec := httptest.NewRecorder()
	newServer("b1", newService(knobs{latency: 1500 * time.Millisecond, jitter: 250 * time.Millisecond, capacity: 3, failRate: 0.5})).
		ServeHTTP(rec, httptest.NewRequest("GET", "/stats", nil))
	want := `{"backend":"b1","in_service":0,"queued":0,"served":0,"failed":0,"capacity":3,"latency_ms":1500,"latency_jitter_ms":250,"fail_rate":0.5,"down":false}`
	if got := strings.TrimSpace(rec.Body.String()); rec.Code != http.StatusOK || got != want {
		t.Errorf("got %d %s, want 200 %s", rec.Code, got, want)
	}
}

// TestCapacityQueues sends 3 GET / at once to a backend of CAPACITY=1: one
// is in service and two wait; each service time the test ends answers one.
func TestCapacityQueues(t *testing.T) {
	svc := newService(knobs{latency: forever, capacity: 1})
	release := gate(svc)
	url := serve(t, svc)

	var answers []<-chan answer
	for range 3 {
		answers = append(answers, getAsync(t.Context(), url+"/"))
	}
	waitStats(t, url, 1, 2, 0)
	for i := range 3 {
		release <- struct{}{}
		waitStats(t, url, min(1, int64(2-i)), max(0, int64(1-i)), int64(i+1))
	}
	for i, c := range answers {
		if a := <-c; a.err != nil || a.status != http.StatusOK || a.body != "Hello, World!" {
			t.Errorf("request %d: got %d %q %v, want 200 %q", i, a.status, a.body, a.err, "Hello, World!")
		}
	}
	if s := getStats(t, url); s.Served != 3 || s.InService != 0 || s.Queued != 0 {
		t.Errorf("after 3 answers: got %+v, want served 3, none in service or queued", s)
	}
}

// TestQueueIsFIFO queues B then C behind A at CAPACITY=1: each time the
// test ends one service time, exactly one request is answered, and they
// are answered in the order they came.
func TestQueueIsFIFO(t *testing.T) {
	svc := newService(knobs{latency: forever, capacity: 1})
	release := gate(svc)
	url := serve(t, svc)

	answered := make(chan string, 3)
	for i, name := range []string{"A", "B", "C"} {
		go func() {
			a := <-getAsync(t.Context(), url+"/")
			answered <- fmt.Sprintf("%s %d", name, a.status)
		}()
		waitStats(t, url, 1, int64(i), 0) // arrived, before the next is sent
	}
	for _, want := range []string{"A 200", "B 200", "C 200"} {
		release <- struct{}{} // ends the one service time under way
		if got := <-answered; got != want {
			t.Errorf("got %q answered, want %q", got, want)
		}
	}
}

// TestClientLeaves: with a LATENCY no test waits out, a client that leaves
// the queue frees its place, and one that leaves in service frees its slot
// for the next in line.
func TestClientLeaves(t *testing.T) {
	url := serve(t, newService(knobs{latency: forever, capacity: 1}))

	ctxA, cancelA := context.WithCancel(t.Context())
	a := getAsync(ctxA, url+"/")
	waitStats(t, url, 1, 0, 0)
	ctxB, cancelB := context.WithCancel(t.Context())
	b := getAsync(ctxB, url+"/")
	waitStats(t, url, 1, 1, 0)
	ctxC, cancelC := context.WithCancel(t.Context())
	c := getAsync(ctxC, url+"/")
	waitStats(t, url, 1, 2, 0)

	cancelB() // leaves the queue
	waitStats(t, url, 1, 1, 0)
	cancelA() // leaves service: C takes the slot
	waitStats(t, url, 1, 0, 0)
	cancelC()
	waitStats(t, url, 0, 0, 0)
	for name, ch := range map[string]<-chan answer{"A": a, "B": b, "C": c} {
		if got := <-ch; got.err == nil {
			t.Errorf("%s left: got %d %q, want a canceled request", name, got.status, got.body)
		}
	}
}

// TestOnlyRootWaits: while GET / is in service and another queued behind a
// LATENCY no test waits out, /healthz, /whoami and /stats answer.
func TestOnlyRootWaits(t *testing.T) {
	for _, capacity := range []int{0, 1} {
		url := serve(t, newService(knobs{latency: forever, capacity: capacity}))
		a := getAsync(t.Context(), url+"/")
		waitStats(t, url, 1, 0, 0)
		if capacity == 1 {
			getAsync(t.Context(), url+"/")
			waitStats(t, url, 1, 1, 0)
		}
		for _, path := range []string{"/healthz", "/whoami"} {
			if got := <-getAsync(t.Context(), url+path); got.status != http.StatusOK {
				t.Errorf("CAPACITY=%d, GET %s while GET / waits: got %d %v, want 200", capacity, path, got.status, got.err)
			}
		}
		select {
		case got := <-a:
			t.Errorf("CAPACITY=%d: GET / answered %d %v before its LATENCY", capacity, got.status, got.err)
		default:
		}
		if s := getStats(t, url); s.Served != 0 {
			t.Errorf("CAPACITY=%d: got served %d, want 0", capacity, s.Served)
		}
	}
}

// TestLatencyServes: with a real (short) LATENCY and jitter, every GET /
// is answered and counted.
func TestLatencyServes(t *testing.T) {
	url := serve(t, newService(knobs{latency: time.Millisecond, jitter: time.Millisecond, capacity: 2}))
	var answers []<-chan answer
	for range 5 {
		answers = append(answers, getAsync(t.Context(), url+"/"))
	}
	for i, c := range answers {
		if a := <-c; a.status != http.StatusOK || a.body != "Hello, World!" {
			t.Errorf("request %d: got %d %q %v, want 200 %q", i, a.status, a.body, a.err, "Hello, World!")
		}
	}
	if s := getStats(t, url); s.Served != 5 || s.InService != 0 || s.Queued != 0 {
		t.Errorf("got %+v, want served 5, none in service or queued", s)
	}
}

func TestServiceTime(t *testing.T) {
	tests := []struct {
		latency, jitter time.Duration
	}{
		{0, 0},
		{10 * time.Millisecond, 0},
		{10 * time.Millisecond, 5 * time.Millisecond},
		{0, time.Second},
	}
	for _, tc := range tests {
		s := newService(knobs{latency: tc.latency, jitter: tc.jitter})
		seen := map[time.Duration]bool{}
		for range 1000 {
			d := s.serviceTime()
			if d < tc.latency || d > tc.latency+tc.jitter {
				t.Fatalf("latency %v, jitter %v: got %v, want %v..%v", tc.latency, tc.jitter, d, tc.latency, tc.latency+tc.jitter)
			}
			seen[d] = true
		}
		// 1000 draws from millions of values: one value alone means no jitter.
		if varied := len(seen) > 1; varied != (tc.jitter > 0) {
			t.Errorf("latency %v, jitter %v: got %d distinct service times in 1000", tc.latency, tc.jitter, len(seen))
		}
	}
}
