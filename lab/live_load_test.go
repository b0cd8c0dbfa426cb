package main

import (
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// fakeClock is a recorder's clock that the test moves.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// The recorder puts each request in the second it was sent, each answer in
// the second it ended, and sums up a window.
func TestRecorder(t *testing.T) {
	clock := &fakeClock{time.Unix(1000, 500e6)} // starts half way into second 1000
	r := newRecorder(clock.now)
	answer := func(code uint16, backend string, latency time.Duration, err string) *vegeta.Result {
		res := &vegeta.Result{Code: code, Latency: latency, Error: err}
		if backend != "" {
			res.Headers = http.Header{"X-Backend": {backend}}
		}
		return res
	}
	clock.t = time.Unix(1000, 600e6)
	r.sent()
	r.sent()
	r.sent()
	r.late(3 * time.Millisecond)
	clock.t = time.Unix(1000, 900e6)
	r.record(answer(200, "fast1", 10*time.Millisecond, ""))
	r.record(answer(500, "slow", 5*time.Millisecond, "500 Internal Server Error"))
	r.record(answer(0, "", 5*time.Second, `Get "http://x/": context deadline exceeded (Client.Timeout exceeded while awaiting headers)`))
	clock.t = time.Unix(1001, 200e6)
	r.sent()
	r.record(answer(200, "fast1", 20*time.Millisecond, ""))
	r.record(answer(0, "", time.Millisecond, "dial tcp 127.0.0.1:1: connect: connection refused"))
	clock.t = time.Unix(1001, 500e6)

	got := r.seconds()
	if len(got) != 2 {
		t.Fatalf("got %d seconds, want 2 (1000 from the start, and 1001): %+v", len(got), got)
	}
	ms := func(v float64) *float64 { return &v }
	want := []liveSecond{
		{T: 1000, SpanS: 0.5, Offered: 3, OK: 1, Errors: 1, Timeouts: 1, P50MS: ms(10), P90MS: ms(5000), P99MS: ms(5000),
			Backends: map[string]int{"fast1": 1, "slow": 1}, LateMS: 3},
		{T: 1001, SpanS: 0.5, Offered: 1, OK: 1, Errors: 1, P50MS: ms(1), P90MS: ms(20), P99MS: ms(20),
			Backends: map[string]int{"fast1": 1}},
	}
	for i := range want {
		if g, w := fmt.Sprintf("%+v", second(got[i])), fmt.Sprintf("%+v", second(want[i])); g != w {
			t.Errorf("second %d: got %s, want %s", i, g, w)
		}
	}

	w := r.window(5)
	if w.SpanS != 1 || w.OfferedPerS != 4 || w.OKPerS != 2 || w.ErrorsPerS != 2 || w.TimeoutsPerS != 1 || w.MaxLateMS != 3 {
		t.Errorf("window: got %+v, want span 1 s, 4 offered, 2 ok, 2 errors, 1 timeout per second, late 3 ms", w)
	}
	if *w.P50MS != 10 || *w.P99MS != 5000 || w.AnswersNamed != 3 {
		t.Errorf("window: got p50 %v, p99 %v, %d answers naming a backend; want 10, 5000, 3", *w.P50MS, *w.P99MS, w.AnswersNamed)
	}
	if math.Abs(w.Share["fast1"]-0.6667) > 1e-9 || math.Abs(w.Share["slow"]-0.3333) > 1e-9 || len(w.Share) != 2 {
		t.Errorf("window share: got %v, want fast1 2/3, slow 1/3", w.Share)
	}

	// Ten minutes later the history is liveHistory whole seconds and the
	// current one, all empty: the buckets of old seconds are reused, not
	// added to.
	clock.t = time.Unix(1600, 250e6)
	r.sent()
	got = r.seconds()
	if len(got) != liveHistory+1 || got[0].T != 1600-liveHistory || got[len(got)-1].T != 1600 || got[len(got)-1].SpanS != 0.25 {
		t.Fatalf("after 10 minutes: got %d seconds from %d to %d, want %d from %d to 1600 (span 0.25)",
			len(got), got[0].T, got[len(got)-1].T, liveHistory+1, 1600-liveHistory)
	}
	total := 0
	for _, s := range got {
		total += s.Offered + s.OK + s.Errors + s.Timeouts + len(s.Backends)
		if s.P50MS != nil && s.T != 1600 {
			t.Errorf("second %d: p50 %v, want null (no answers)", s.T, *s.P50MS)
		}
	}
	if total != 1 {
		t.Errorf("after 10 minutes: got %d requests and answers counted, want the 1 sent now", total)
	}
	if w := r.window(10); w.P50MS != nil || w.OfferedPerS != 0.1 || len(w.Share) != 0 {
		t.Errorf("window after 10 minutes: got %+v, want no latency, 1 request in 10 s, no share", w)
	}
}

// second prints a liveSecond's pointers as their values.
func second(s liveSecond) string {
	v := func(p *float64) string {
		if p == nil {
			return "null"
		}
		return fmt.Sprint(*p)
	}
	return fmt.Sprintf("t %d span %v offered %d ok %d errors %d timeouts %d p50 %s p90 %s p99 %s backends %v late %v",
		s.T, s.SpanS, s.Offered, s.OK, s.Errors, s.Timeouts, v(s.P50MS), v(s.P90MS), v(s.P99MS), s.Backends, s.LateMS)
}

// fakeDispatcher is an HTTP server that counts what it receives and
// answers as a proxying dispatcher would, in one of three ways.
type fakeDispatcher struct {
	*httptest.Server
	mu    sync.Mutex
	hits  int
	fails int
	users map[string]int
}

func newFakeDispatcher(t *testing.T, kind string) *fakeDispatcher {
	d := &fakeDispatcher{users: map[string]int{}}
	d.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		d.hits++
		n := d.hits
		d.users[r.Header.Get(userHeader)]++
		d.mu.Unlock()
		switch kind {
		case "ok": // a backend named a answers
			w.Header().Set("X-Backend", "a")
		case "flaky": // backend b fails every other request
			w.Header().Set("X-Backend", "b")
			if n%2 == 0 {
				d.mu.Lock()
				d.fails++
				d.mu.Unlock()
				w.WriteHeader(http.StatusInternalServerError)
			}
		case "hang": // never answers: the client times out
			<-r.Context().Done()
			return
		}
		w.Write([]byte("Hello, World!"))
	}))
	t.Cleanup(d.Close)
	return d
}

func (d *fakeDispatcher) count() (hits, fails int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.hits, d.fails
}

func received(ds ...*fakeDispatcher) int {
	n := 0
	for _, d := range ds {
		h, _ := d.count()
		n += h
	}
	return n
}

// waitFor polls cond until it holds, failing the test after 20 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after 20 s: %s", what)
		}
	}
}

// The live load against real local servers: requests go to the targets in
// turn, as users 0..N-1; every request sent is counted once, as ok, error or
// timeout, matching what the servers saw; rate 0 stops sending and a new
// rate starts again.
func TestLiveLoad(t *testing.T) {
	a, b, hang := newFakeDispatcher(t, "ok"), newFakeDispatcher(t, "flaky"), newFakeDispatcher(t, "hang")
	l, err := startLiveLoad(liveOptions{targets: []string{a.URL + "/", b.URL + "/", hang.URL + "/"}, users: 20,
		timeout: 300 * time.Millisecond, seed: 1, rate: 200})
	if err != nil {
		t.Fatal(err)
	}
	defer l.stop()
	waitFor(t, "fewer than 150 requests received at 200 req/s", func() bool { return received(a, b, hang) >= 150 })

	if err := l.setRate(0); err != nil || l.rate() != 0 {
		t.Fatalf("setRate(0): %v, rate %v", err, l.rate())
	}
	time.Sleep(time.Second) // what was paced before the change has gone out
	stopped := received(a, b, hang)
	time.Sleep(500 * time.Millisecond)
	if n := received(a, b, hang); n != stopped {
		t.Errorf("at rate 0: %d requests received, then %d half a second later; want none sent", stopped, n)
	}
	if err := l.setRate(200); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "no requests after the rate went from 0 to 200", func() bool { return received(a, b, hang) >= stopped+30 })
	l.stop()

	var offered, ok, errs, timeouts int
	byBackend := map[string]int{}
	for _, s := range l.seconds() {
		offered, ok, errs, timeouts = offered+s.Offered, ok+s.OK, errs+s.Errors, timeouts+s.Timeouts
		for k, v := range s.Backends {
			byBackend[k] += v
		}
	}
	ha, _ := a.count()
	hb, fb := b.count()
	hh, _ := hang.count()
	if total := ha + hb + hh; offered != total || ok+errs+timeouts != total {
		t.Errorf("servers received %d; the load counted %d sent and %d answers (%d ok, %d errors, %d timeouts)",
			total, offered, ok+errs+timeouts, ok, errs, timeouts)
	}
	if hb-ha > 0 || ha-hh > 1 || hb < hh {
		t.Errorf("in turn: got %d, %d, %d requests to the three targets, want equal ±1 in that order", ha, hb, hh)
	}
	if ok != ha+hb-fb || errs != fb || timeouts != hh {
		t.Errorf("got %d ok, %d errors, %d timeouts; the servers answered %d ok, %d 500, and %d never", ok, errs, timeouts, ha+hb-fb, fb, hh)
	}
	if byBackend["a"] != ha || byBackend["b"] != hb || len(byBackend) != 2 {
		t.Errorf("answers by X-Backend: got %v, want a %d, b %d", byBackend, ha, hb)
	}
	// The whole run, as one window: the shares of the answers that named a
	// backend (the timeouts name none).
	w := l.window(liveHistory)
	if wantA := round(float64(ha)/float64(ha+hb), 4); w.AnswersNamed != ha+hb || w.Share["a"] != wantA || len(w.Share) != 2 {
		t.Errorf("window: got %d answers naming a backend, shares %v; want %d, a %v", w.AnswersNamed, w.Share, ha+hb, wantA)
	}
	for _, d := range []*fakeDispatcher{a, b, hang} {
		d.mu.Lock()
		for u := range d.users {
			var n int
			if _, err := fmt.Sscanf(u, "user-%d", &n); err != nil || n < 0 || n >= 20 {
				t.Errorf("got %s %q, want user-0 to user-19", userHeader, u)
			}
		}
		if len(d.users) < 2 {
			t.Errorf("got users %v at one target, want several", d.users)
		}
		d.mu.Unlock()
	}
}

// A rate is a number of requests per second from 0 to maxLiveRate; a bad
// one is refused, naming the field, and changes nothing.
func TestLiveLoadRefusesBadRates(t *testing.T) {
	a := newFakeDispatcher(t, "ok")
	l, err := startLiveLoad(liveOptions{targets: []string{a.URL}, users: 1, timeout: time.Second, rate: 0})
	if err != nil {
		t.Fatal(err)
	}
	defer l.stop()
	for _, r := range []float64{-1, math.NaN(), math.Inf(1), maxLiveRate + 1} {
		if err := l.setRate(r); err == nil || !strings.HasPrefix(err.Error(), "rate: want") {
			t.Errorf("setRate(%v): got %v, want an error naming rate", r, err)
		}
		if l.rate() != 0 {
			t.Errorf("after setRate(%v): got rate %v, want 0 unchanged", r, l.rate())
		}
	}
	for _, o := range []liveOptions{
		{users: 1, timeout: time.Second},
		{targets: []string{a.URL}, users: 0, timeout: time.Second},
		{targets: []string{a.URL}, users: 1},
		{targets: []string{a.URL}, users: 1, timeout: time.Second, rate: -5},
	} {
		if l, err := startLiveLoad(o); err == nil {
			l.stop()
			t.Errorf("startLiveLoad(%+v): got no error", o)
		}
	}
}

// A pacer at rate 0 waits without sending until the rate changes; close
// ends the wait with stop.
func TestLivePacerWaitsAtRateZero(t *testing.T) {
	hits := 0
	p := newLivePacer(0, 1, func(time.Duration) { hits++ })
	type paced struct {
		wait time.Duration
		stop bool
	}
	c := make(chan paced, 1)
	pace := func() {
		go func() {
			w, s := p.Pace(0, 0)
			c <- paced{w, s}
		}()
	}
	pace()
	select {
	case got := <-c:
		t.Fatalf("at rate 0, Pace returned %+v", got)
	case <-time.After(200 * time.Millisecond):
	}
	p.setRate(1000)
	if got := <-c; got.stop || got.wait != 0 || hits != 1 {
		t.Errorf("after setRate(1000): got %+v with %d hits, want wait 0, no stop, 1 hit", got, hits)
	}
	p.setRate(0)
	pace()
	p.close()
	if got := <-c; !got.stop {
		t.Errorf("after close: got %+v, want stop", got)
	}
}
