package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startBackend runs a backend with CONTROL=1 on free loopback ports until
// the test ends, and returns it with the URLs of PORT and CONTROL_PORT.
func startBackend(t *testing.T, k knobs) (b *server, traffic, control string) {
	t.Helper()
	b, err := listen(config{port: "0", name: "b1", knobs: k, control: true, controlHost: "127.0.0.1", controlPort: "0"}, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- b.serve(ctx, 10*time.Second, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return b, "http://" + b.port.Addr().String(), "http://" + b.controlLn.Addr().String()
}

// postControl sends body to POST /control and returns the status and the
// decoded answer: the new stats, or the error naming the field.
func postControl(t *testing.T, control, body string) (int, stats, controlError) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, control+"/control", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST /control %s: %v", body, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var s stats
	var e controlError
	if resp.StatusCode == http.StatusOK {
		err = json.Unmarshal(raw, &s)
	} else {
		err = json.Unmarshal(raw, &e)
	}
	if err != nil {
		t.Fatalf("POST /control %s: %d %q: %v", body, resp.StatusCode, raw, err)
	}
	return resp.StatusCode, s, e
}

// TestControlRefusesBadValues: each bad body gets 400 with the field it
// names, and changes nothing, not even the good fields beside the bad one.
func TestControlRefusesBadValues(t *testing.T) {
	_, traffic, control := startBackend(t, knobs{latency: time.Millisecond, capacity: 3})
	before := getStats(t, control)
	tests := []struct{ body, field string }{
		{`{"latency":"fast"}`, "latency"},
		{`{"latency":200}`, "latency"}, // a duration is a string with a unit
		{`{"latency":"-1s"}`, "latency"},
		{`{"latency":null}`, "latency"},
		{`{"jitter":"5"}`, "jitter"},
		{`{"capacity":-1}`, "capacity"},
		{`{"capacity":1.5}`, "capacity"},
		{`{"capacity":"4"}`, "capacity"},
		{`{"fail_rate":1.5}`, "fail_rate"},
		{`{"fail_rate":-0.1}`, "fail_rate"},
		{`{"fail_rate":"0.2"}`, "fail_rate"},
		{`{"down":"yes"}`, "down"},
		{`{"down":1}`, "down"},
		{`{"latncy":"1s"}`, "latncy"},
		{`{"latency":"1s","capacity":-1}`, "capacity"},
		{`{"capacity":8,"down":true,"fail_rate":2}`, "fail_rate"},
		{`{"latency":"1s","Down":true}`, "Down"},
		{`[{"latency":"1s"}]`, "body"},
		{`null`, "body"},
		{`latency=1s`, "body"},
		{``, "body"},
	}
	for _, tc := range tests {
		status, _, e := postControl(t, control, tc.body)
		if status != http.StatusBadRequest || e.Field != tc.field || !strings.HasPrefix(e.Error, tc.field+": ") || !strings.Contains(e.Error, "want") {
			t.Errorf("POST /control %s: got %d %+v, want 400 naming %q and what it accepts", tc.body, status, e, tc.field)
		}
	}
	if after := getStats(t, control); after != before {
		t.Errorf("after bad bodies: got /stats %+v, want it unchanged: %+v", after, before)
	}
	if a := <-getAsync(t.Context(), traffic+"/"); a.status != http.StatusOK {
		t.Errorf("GET / after bad bodies: got %d %v, want 200 (still up)", a.status, a.err)
	}
}

// TestControlChangesKnobs: every field may come alone, the others stay, and
// both ports' /stats show the knobs at once.
func TestControlChangesKnobs(t *testing.T) {
	b, traffic, control := startBackend(t, knobs{latency: 40 * time.Millisecond, capacity: 8})
	status, s, _ := postControl(t, control, `{"latency":"200ms","capacity":4,"jitter":"20ms","fail_rate":0.2,"down":false}`)
	want := stats{Backend: "b1", Capacity: 4, LatencyMS: 200, LatencyJitterMS: 20, FailRate: 0.2}
	if status != http.StatusOK || s != want {
		t.Errorf("got %d %+v, want 200 %+v", status, s, want)
	}
	status, s, _ = postControl(t, control, `{"capacity":0}`)
	want.Capacity = 0
	if status != http.StatusOK || s != want {
		t.Errorf("capacity alone: got %d %+v, want 200 %+v", status, s, want)
	}
	if status, s, _ = postControl(t, control, `{}`); status != http.StatusOK || s != want {
		t.Errorf("no field: got %d %+v, want 200 %+v", status, s, want)
	}
	if got := getStats(t, traffic); got != want {
		t.Errorf("PORT's /stats: got %+v, want %+v", got, want)
	}
	// The next request into service draws from the new latency and jitter.
	for range 100 {
		if d := b.svc.serviceTime(); d < 200*time.Millisecond || d > 220*time.Millisecond {
			t.Fatalf("service time after the change: got %v, want 200ms..220ms", d)
		}
	}
}

// TestControlOnlyOnItsPort: PORT never serves /control, with CONTROL=1 or
// without, so that no client of the pool can turn the knobs.
func TestControlOnlyOnItsPort(t *testing.T) {
	_, withControl, _ := startBackend(t, knobs{})
	without := serve(t, newService(knobs{}))
	for _, url := range []string{withControl, without} {
		resp, err := http.Post(url+"/control", "application/json", strings.NewReader(`{"down":true}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("POST %s/control: got %d, want 404 or 405", url, resp.StatusCode)
		}
		if a := <-getAsync(t.Context(), url+"/healthz"); a.status != http.StatusOK {
			t.Errorf("GET %s/healthz after POST /control: got %d, want 200", url, a.status)
		}
	}
	b, err := listen(config{port: "0", name: "b1"}, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer b.port.Close()
	if b.controlLn != nil {
		t.Errorf("CONTROL=0: got a control port %s, want none", b.controlLn.Addr())
	}
}

// dialRefused says whether a TCP dial of the URL's host is refused, as it is
// when no process listens there.
func dialRefused(t *testing.T, url string) bool {
	t.Helper()
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(url, "http://"), 5*time.Second)
	if err == nil {
		c.Close()
		return false
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial %s: got %v, want a connection or ECONNREFUSED", url, err)
	}
	return true
}

// rawGet writes GET path on conn and reads the answer.
func rawGet(conn net.Conn, br *bufio.Reader, path string) (*http.Response, string, error) {
	if _, err := io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: b\r\n\r\n"); err != nil {
		return nil, "", err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, string(body), err
}

// TestDownRefusesDials, on real sockets: down refuses new connections, as
// a stopped process does, closes the idle keep-alive ones, and answers 503
// on a connection that was open before; /stats on CONTROL_PORT still
// answers. Up again, the same port serves.
func TestDownRefusesDials(t *testing.T) {
	_, traffic, control := startBackend(t, knobs{})
	addr := strings.TrimPrefix(traffic, "http://")

	idle, err := net.Dial("tcp", addr) // will be idle after one answer
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idleR := bufio.NewReader(idle)
	if resp, body, err := rawGet(idle, idleR, "/"); err != nil || resp.StatusCode != http.StatusOK || body != "Hello, World!" {
		t.Fatalf("GET / before down: got %v %q %v", resp, body, err)
	}
	open, err := net.Dial("tcp", addr) // open, no request yet
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()

	if status, s, _ := postControl(t, control, `{"down":true}`); status != http.StatusOK || !s.Down {
		t.Fatalf("down: got %d %+v, want 200 and down", status, s)
	}
	if !dialRefused(t, traffic) {
		t.Errorf("dial %s while down: connected, want refused", addr)
	}
	// The idle connection is closed by the backend: a read ends at once.
	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := idleR.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("idle keep-alive connection while down: read %d bytes, %v; want EOF (closed)", n, err)
	}
	// The connection opened before may still ask: /healthz says down, and
	// the connection closes after the answer.
	openR := bufio.NewReader(open)
	resp, body, err := rawGet(open, openR, "/healthz")
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable || body != "down" || !resp.Close {
		t.Errorf("GET /healthz on an open connection while down: got %v %q %v, want 503 down and Connection: close", resp, body, err)
	}
	if s := getStats(t, control); !s.Down {
		t.Errorf("CONTROL_PORT's /stats while down: got %+v, want down", s)
	}

	if status, s, _ := postControl(t, control, `{"down":false}`); status != http.StatusOK || s.Down {
		t.Fatalf("up: got %d %+v, want 200 and not down", status, s)
	}
	for _, path := range []string{"/", "/healthz"} {
		if a := <-getAsync(t.Context(), traffic+path); a.status != http.StatusOK {
			t.Errorf("GET %s after up: got %d %v, want 200", path, a.status, a.err)
		}
	}
}

// TestUpFailsWhenPortTaken: if another process took PORT while the backend
// was down, going up fails with 500 and changes nothing, not even the
// other fields of the same body.
func TestUpFailsWhenPortTaken(t *testing.T) {
	_, traffic, control := startBackend(t, knobs{capacity: 2})
	postControl(t, control, `{"down":true}`)
	squatter, err := net.Listen("tcp", strings.TrimPrefix(traffic, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	status, _, e := postControl(t, control, `{"down":false,"capacity":7}`)
	if status != http.StatusInternalServerError || e.Field != "down" || !strings.Contains(e.Error, "listening on") {
		t.Errorf("up with the port taken: got %d %+v, want 500 naming down", status, e)
	}
	if s := getStats(t, control); !s.Down || s.Capacity != 2 {
		t.Errorf("after the failed up: got %+v, want still down, capacity 2", s)
	}
	squatter.Close()
	if status, s, _ := postControl(t, control, `{"down":false,"capacity":7}`); status != http.StatusOK || s.Down || s.Capacity != 7 {
		t.Errorf("up with the port free: got %d %+v, want 200, up, capacity 7", status, s)
	}
	if a := <-getAsync(t.Context(), traffic+"/"); a.status != http.StatusOK {
		t.Errorf("GET / after up: got %d %v, want 200", a.status, a.err)
	}
}

// TestDownEndsQueuedRequests: requests in service and queued when the
// backend goes down are answered 503 at once and counted as failed.
func TestDownEndsQueuedRequests(t *testing.T) {
	b, traffic, control := startBackend(t, knobs{latency: forever, capacity: 1})
	release := gate(b.svc)
	inService := getAsync(t.Context(), traffic+"/")
	waitStats(t, traffic, 1, 0, 0)
	queued := getAsync(t.Context(), traffic+"/")
	waitStats(t, traffic, 1, 1, 0)

	postControl(t, control, `{"down":true}`)
	for name, c := range map[string]<-chan answer{"in service": inService, "queued": queued} {
		if a := <-c; a.status != http.StatusServiceUnavailable || a.body != "down" {
			t.Errorf("%s when it went down: got %d %q %v, want 503 down", name, a.status, a.body, a.err)
		}
	}
	if s := getStats(t, control); s.InService != 0 || s.Queued != 0 || s.Served != 0 || s.Failed != 2 {
		t.Errorf("after down: got %+v, want none in service or queued, 0 served, 2 failed", s)
	}
	postControl(t, control, `{"down":false}`)
	a := getAsync(t.Context(), traffic+"/")
	release <- struct{}{}
	if got := <-a; got.status != http.StatusOK {
		t.Errorf("GET / after up: got %d %v, want 200", got.status, got.err)
	}
	if s := getStats(t, control); s.Served != 1 || s.Failed != 2 {
		t.Errorf("after up: got %+v, want 1 served, 2 failed", s)
	}
}

// TestCapacityChangeWhileQueued: raising CAPACITY lets the queue in at once;
// lowering it lets the requests in service finish, and lets the queue in
// only once fewer than the new capacity are in service.
func TestCapacityChangeWhileQueued(t *testing.T) {
	b, traffic, control := startBackend(t, knobs{latency: forever, capacity: 1})
	release := gate(b.svc)
	var answers []<-chan answer
	for i := range 3 {
		answers = append(answers, getAsync(t.Context(), traffic+"/"))
		waitStats(t, traffic, 1, int64(i), 0)
	}
	postControl(t, control, `{"capacity":3}`)
	waitStats(t, traffic, 3, 0, 0)
	for i := range 2 {
		answers = append(answers, getAsync(t.Context(), traffic+"/"))
		waitStats(t, traffic, 3, int64(i+1), 0)
	}

	postControl(t, control, `{"capacity":1}`)
	waitStats(t, traffic, 3, 2, 0) // nobody is sent away
	release <- struct{}{}
	waitStats(t, traffic, 2, 2, 1) // 2 in service is not below 1: the queue waits
	release <- struct{}{}
	waitStats(t, traffic, 1, 2, 2)
	release <- struct{}{}
	waitStats(t, traffic, 1, 1, 3) // the first of the queue goes in

	postControl(t, control, `{"capacity":0}`) // no limit: the rest goes in
	waitStats(t, traffic, 2, 0, 3)
	release <- struct{}{}
	release <- struct{}{}
	waitStats(t, traffic, 0, 0, 5)
	for i, c := range answers {
		if a := <-c; a.status != http.StatusOK {
			t.Errorf("request %d: got %d %v, want 200", i, a.status, a.err)
		}
	}
}

// TestFailRate: with a seeded random source, FAIL_RATE fails a fraction of
// GET / near the rate, each answered 500 and counted, /healthz never; the
// rate changed by POST /control applies to the next request.
func TestFailRate(t *testing.T) {
	const n = 1000
	tests := []struct {
		rate     float64
		min, max int // failures out of n; the seed fixes the count, the bounds are ±4 standard deviations
	}{{0, 0, 0}, {0.2, 150, 250}, {0.5, 437, 563}, {1, n, n}}
	for _, tc := range tests {
		svc := newService(knobs{failRate: tc.rate})
		svc.rng = rand.New(rand.NewPCG(1, 2))
		e := newServer("b1", svc)
		counts := map[int]int{}
		for range n {
			rec := httptest.NewRecorder()
			e.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
			counts[rec.Code]++
			if rec.Code == http.StatusInternalServerError && rec.Header().Get("X-Backend") != "b1" {
				t.Fatalf("a 500 without X-Backend: %v", rec.Header())
			}
		}
		s := svc.stats("b1")
		if counts[200]+counts[500] != n || counts[500] < tc.min || counts[500] > tc.max {
			t.Errorf("fail rate %v: got %v over %d requests, want %d..%d answered 500, the rest 200", tc.rate, counts, n, tc.min, tc.max)
		}
		if s.Failed != int64(counts[500]) || s.Served != int64(counts[200]) {
			t.Errorf("fail rate %v: /stats counts served %d, failed %d; the client got %v", tc.rate, s.Served, s.Failed, counts)
		}
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
		if rec.Code != http.StatusOK {
			t.Errorf("fail rate %v: GET /healthz got %d, want 200", tc.rate, rec.Code)
		}
	}

	_, traffic, control := startBackend(t, knobs{})
	for _, rate := range []string{"1", "0"} {
		postControl(t, control, `{"fail_rate":`+rate+`}`)
		want := map[string]int{"1": http.StatusInternalServerError, "0": http.StatusOK}[rate]
		for range 20 {
			if a := <-getAsync(t.Context(), traffic+"/"); a.status != want {
				t.Fatalf("fail_rate %s: got %d, want %d", rate, a.status, want)
			}
		}
	}
	if s := getStats(t, control); s.Failed != 20 || s.Served != 20 {
		t.Errorf("got served %d, failed %d; want 20 and 20", s.Served, s.Failed)
	}
}

// TestShutdownWhileDown: a backend stopped while PORT is down shuts down
// cleanly (startBackend's cleanup checks that serve returns nil).
func TestShutdownWhileDown(t *testing.T) {
	_, traffic, control := startBackend(t, knobs{})
	if status, _, _ := postControl(t, control, `{"down":true}`); status != http.StatusOK {
		t.Fatalf("down: got %d, want 200", status)
	}
	if !dialRefused(t, traffic) {
		t.Errorf("dial %s while down: connected, want refused", traffic)
	}
}
