package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/spreadlb/spread/internal/balance"
	"github.com/spreadlb/spread/internal/pool"
	"github.com/spreadlb/spread/internal/redistest"
	"github.com/spreadlb/spread/internal/store"
)

// stream is an open GET /events, read as the page reads it: the whole
// state first, then changes applied to it.
type stream struct {
	resp  *http.Response
	sc    *bufio.Scanner
	state map[string]any // as the last event left it
	kinds []string       // the kinds of the events read so far
	bytes int            // bytes read so far
}

func openEvents(t *testing.T, url string) *stream {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
		t.Fatalf("GET %s: got %s %q, want 200 text/event-stream", url, resp.Status, ct)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 64<<20)
	return &stream{resp: resp, sc: sc}
}

// next returns the state after the next event; ok is false when the stream
// ended.
func (s *stream) next(t *testing.T) (snap snapshot, ok bool) {
	t.Helper()
	kind := ""
	for s.sc.Scan() {
		line := s.sc.Text()
		s.bytes += len(line) + 1
		if k, found := strings.CutPrefix(line, "event: "); found {
			kind = k
			continue
		}
		data, found := strings.CutPrefix(line, "data: ")
		if !found {
			continue // the blank line between events, a keep-alive comment
		}
		var ev map[string]any
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			t.Fatalf("event %.200q: %v", data, err)
		}
		s.kinds = append(s.kinds, kind)
		switch kind {
		case "state":
			s.state = ev
		case "delta":
			if s.state == nil {
				t.Fatalf("a delta before the state: %.200q", data)
			}
			apply(s.state, ev)
		default:
			t.Fatalf("an event of kind %q, want state or delta", kind)
		}
		b, _ := json.Marshal(s.state)
		if err := json.Unmarshal(b, &snap); err != nil {
			t.Fatal(err)
		}
		return snap, true
	}
	return snap, false
}

// apply changes state as the page does with a delta: bars by URL, gone
// bars removed, every other field replaced.
func apply(state, delta map[string]any) {
	for k, v := range delta {
		switch k {
		case "backends":
			bars := map[string]any{}
			for _, b := range state["backends"].([]any) {
				bars[b.(map[string]any)["url"].(string)] = b
			}
			for _, b := range v.([]any) {
				bars[b.(map[string]any)["url"].(string)] = b
			}
			state["backends"] = sortedBars(bars)
		case "gone":
			bars := map[string]any{}
			for _, b := range state["backends"].([]any) {
				bars[b.(map[string]any)["url"].(string)] = b
			}
			for _, u := range v.([]any) {
				delete(bars, u.(string))
			}
			state["backends"] = sortedBars(bars)
		default:
			if v == nil {
				delete(state, k)
			} else {
				state[k] = v
			}
		}
	}
}

func sortedBars(bars map[string]any) []any {
	out := []any{}
	for _, u := range slices.Sorted(maps.Keys(bars)) {
		out = append(out, bars[u])
	}
	return out
}

func ptr[T any](v T) *T { return &v }

// TestDashboardEvents: the snapshot shows the counts, the rotation in order
// with the next pick marked, health only where something set it, and the
// stream ends when the server shuts down.
func TestDashboardEvents(t *testing.T) {
	redis := redistest.Start(t)
	ctx := context.Background()
	gone := "http://127.0.0.1:6000" // sent requests, then removed from the list
	if err := redis.Client.RPush(ctx, "servers", three[0], "javascript:alert(1)", three[1], three[2]).Err(); err != nil {
		t.Fatal(err)
	}
	m := newMetrics("redirect", "round-robin")
	m.request(three[2], 302)
	m.request(three[2], 302)
	m.request(gone, 302)
	m.request("", 503)
	m.SetBackendUp(three[1], true)

	done := make(chan struct{})
	st := store.NewStore(redis.Client, "servers", nil)
	pl := pool.New(st, 0, nil)
	if err := pl.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	d := &dashboard{m: m, pool: pl, picker: balance.NewShared(store.NewRotation(st)), key: "servers",
		every: time.Millisecond, done: done, log: slog.New(slog.DiscardHandler)}
	e := echo.New()
	d.mount(e)
	srv := httptest.NewServer(e)
	defer srv.Close()

	events := openEvents(t, srv.URL+"/events")
	got, ok := events.next(t)
	if !ok {
		t.Fatal("the stream ended before its first event")
	}
	want := snapshot{Strategy: "round-robin", NextPick: true,
		Mode: "redirect", Source: `Redis list "servers"`, Unserved: 1, RotationLength: 4,
		Backends: []bar{
			{URL: three[0], Requests: 0},
			{URL: three[1], Requests: 0, Up: ptr(true)},
			{URL: three[2], Requests: 2},
			{URL: gone, Requests: 1},
		},
		Rotation: []entry{
			{URL: three[0], Valid: true},
			{URL: "javascript:alert(1)"},
			{URL: three[1], Valid: true, Up: ptr(true)},
			{URL: three[2], Valid: true, Next: true},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("first snapshot:\ngot  %+v\nwant %+v", got, want)
	}

	// Later events follow the counts.
	m.request(three[0], 302)
	m.SetDegraded(true)
	for {
		got, ok = events.next(t)
		if !ok {
			t.Fatal("the stream ended while the server runs")
		}
		if got.Backends[0].Requests == 1 {
			break
		}
	}
	if !got.Degraded {
		t.Errorf("after SetDegraded(true): got degraded false in the same snapshot as the new count")
	}

	close(done) // what serve's context does at shutdown
	for {
		if _, ok := events.next(t); !ok {
			break
		}
	}
	if err := events.sc.Err(); err != nil {
		t.Errorf("the stream ended with %v, want a clean end", err)
	}
}

// TestDashboardWithoutRedis: the page still gets the counts, and the reason
// it cannot show the rotation.
func TestDashboardWithoutRedis(t *testing.T) {
	redis := redistest.Start(t)
	m := newMetrics("redirect", "round-robin")
	m.request(three[0], 302)
	st := store.NewStore(redis.Client, "servers", nil)
	d := &dashboard{m: m, picker: balance.NewShared(store.NewRotation(st)), key: "servers", every: time.Second,
		done: make(chan struct{}), log: slog.New(slog.DiscardHandler)}
	redis.Stop()
	got := d.snapshot(context.Background())
	if !strings.Contains(got.RotationError, "redis unavailable") || len(got.Rotation) != 0 {
		t.Errorf("Redis stopped: got rotation %v, error %q; want none, and an error saying redis unavailable", got.Rotation, got.RotationError)
	}
	if want := []bar{{URL: three[0], Requests: 1}}; !reflect.DeepEqual(got.Backends, want) {
		t.Errorf("Redis stopped: got bars %+v, want %+v", got.Backends, want)
	}
}

// TestDashboardOnTheAdminPort runs the dispatcher as main does: the page and
// the stream are on the admin port, and an open stream does not hold up
// shutdown (if it did, shutdown would wait out SHUTDOWN_TIMEOUT and serve
// would return its error).
func TestDashboardOnTheAdminPort(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := startServe(t, ctx, nil)
	store, ln, admin, errc := s.store, s.ln, s.admin, s.errc
	adminURL := "http://" + admin.Addr().String()
	if err := store.Replace(ctx, three); err != nil {
		t.Fatal(err)
	}

	resp, err := http.Get(adminURL + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || !strings.HasPrefix(ct, "text/html") {
		t.Errorf("GET /: got %d %q, want 200 text/html", resp.StatusCode, ct)
	}
	for _, want := range []string{`<meta name="viewport"`, `new EventSource("events")`} {
		if !strings.Contains(string(page), want) {
			t.Errorf("GET /: the page lacks %q", want)
		}
	}
	// Nothing from elsewhere: the page works offline, and its policy says so.
	if strings.Contains(string(page), "://") {
		t.Error("GET /: the page refers to another site (it contains \"://\")")
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("GET /: got Content-Security-Policy %q, want default-src 'none'", csp)
	}

	events := openEvents(t, adminURL+"/events")
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if resp, err := noFollow.Get("http://" + ln.Addr().String() + "/"); err != nil || resp.StatusCode != http.StatusFound {
		t.Fatalf("one request: got %v, %v; want a 302", resp, err)
	} else {
		resp.Body.Close()
	}
	for {
		snap, ok := events.next(t)
		if !ok {
			t.Fatal("the stream ended while the dispatcher runs")
		}
		if len(snap.Rotation) != 3 || !snap.Rotation[2].Next {
			t.Fatalf("got rotation %+v, want three entries, the last one next", snap.Rotation)
		}
		if snap.Backends[2].Requests == 1 {
			break // the request went to the last entry, three[2]
		}
	}

	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("serve with a dashboard open: got %v, want a clean shutdown", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not return after its context was cancelled")
	}
	for {
		if _, ok := events.next(t); !ok {
			break
		}
	}
}

// TestLongEntryStaysOutOfLogsAndEvents: with a 1 MB entry in the list,
// /events shows at most ShowLen bytes of it, marked with its length;
// requests are redirected to the valid entries, the first rotation step
// that meets it moves it to the quarantine (the dashboard's rotation then
// shows the valid entries alone), and no log line carries more of it than
// ShowLen.
func TestLongEntryStaysOutOfLogsAndEvents(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := startServe(t, ctx, nil)
	long := "http://a.example/" + strings.Repeat("x", 1<<20)
	if err := s.redis.Client.RPush(ctx, "servers", three[0], long, three[1]).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the snapshot holds the list", func() bool { code, _ := s.readyz(t); return code == 200 })

	resp, err := http.Get(s.adm + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	var line string
	for !strings.HasPrefix(line, "data: ") {
		if line, err = r.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	if len(line) > 2000 {
		t.Errorf("an /events message of %d bytes, want at most 2000", len(line))
	}
	var snap snapshot
	if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &snap); err != nil {
		t.Fatal(err)
	}
	want := []string{three[0], long[:200] + "…(1048593 bytes)", three[1]}
	if len(snap.Rotation) != len(want) {
		t.Fatalf("rotation: got %d entries, want %d", len(snap.Rotation), len(want))
	}
	for i, e := range snap.Rotation {
		if e.URL != want[i] || e.Valid != (i != 1) {
			t.Errorf("rotation entry %d: got %.300q (valid %v), want %.300q (valid %v)", i, e.URL, e.Valid, want[i], i != 1)
		}
	}
	resp.Body.Close()

	for i := range 12 {
		resp, err := s.noFollower.Get(s.main + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || (loc != three[0]+"/" && loc != three[1]+"/") {
			t.Errorf("request %d: got %d %q, want 302 to a valid entry", i, resp.StatusCode, loc)
		}
	}
	if n, _, err := s.store.Quarantine(ctx, 0); err != nil || n != 1 {
		t.Errorf("quarantine after 12 requests: got (%d, %v), want the long entry", n, err)
	}
	events := openEvents(t, s.adm+"/events")
	for snap, _ = events.next(t); len(snap.Rotation) != 2 || snap.RotationLength != 2; snap, _ = events.next(t) {
		if len(snap.Rotation) > 3 {
			t.Fatalf("rotation: got %+v", snap.Rotation)
		}
	}

	cancel()
	<-s.errc
	for _, l := range strings.Split(s.logs.String(), "\n") {
		if len(l) > 1000 || strings.Contains(l, strings.Repeat("x", 201)) {
			t.Errorf("a log line of %d bytes carries more than 200 bytes of the entry: %.200q...", len(l), l)
		}
	}
}
