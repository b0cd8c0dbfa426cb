package main

import (
	"cmp"
	"context"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spreadlb/spread/internal/members"
	"github.com/spreadlb/spread/internal/redistest"
	"github.com/spreadlb/spread/internal/store"
)

// freePort is a loopback port that nothing listens on now.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// lockedBuffer is a log the backend writes while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// registeredBackend runs the program with REGISTER=1 and env against a real
// Redis whose list a reconciler (holding the health lease as "d1") keeps,
// and returns the list's store, the backend's URL, its log, SIGTERM and
// the program's result.
func registeredBackend(t *testing.T, env map[string]string) (st *store.Store, url string, log *lockedBuffer, sigterm func(), result <-chan error) {
	t.Helper()
	return registeredBackendSeeded(t, env, "http://127.0.0.1:1")
}

// registeredBackendSeeded is registeredBackend with the list seeded with
// seed before the backend starts.
func registeredBackendSeeded(t *testing.T, env map[string]string, seed ...string) (st *store.Store, url string, log *lockedBuffer, sigterm func(), result <-chan error) {
	t.Helper()
	srv := redistest.Start(t)
	st = store.NewStore(srv.Client, "servers", nil)
	ctx := context.Background()
	if err := st.Replace(ctx, seed); err != nil {
		t.Fatal(err)
	}
	if held, _, err := st.ClaimLease(ctx, "d1", time.Hour); err != nil || !held {
		t.Fatalf("claim the lease: %v %v", held, err)
	}
	rctx, stopReconciling := context.WithCancel(ctx)
	t.Cleanup(stopReconciling)
	go members.NewReconciler(st, func() string { return "d1" }, nil).Run(rctx)

	port := cmp.Or(env["PORT"], freePort(t))
	url = "http://127.0.0.1:" + port
	all := map[string]string{"PORT": port, "BACKEND_NAME": "b4", "REGISTER": "1", "ADVERTISE_URL": url,
		"HEARTBEAT": "200ms", "REDIS_URL": srv.URL}
	for k, v := range env {
		all[k] = v
	}
	log = &lockedBuffer{}
	pctx, cancel := context.WithCancel(ctx)
	errc, finished := make(chan error, 1), make(chan struct{})
	go func() {
		errc <- run(pctx, nil, func(k string) string { return all[k] }, log)
		close(finished)
	}()
	t.Cleanup(func() { cancel(); <-finished })
	return st, url, log, cancel, errc
}

func waitUntil(t *testing.T, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("waited %v for %s", limit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// A backend with REGISTER=1 is in the list within a heartbeat and a
// reconciler round. On SIGTERM it leaves the list within 2 s, goes on
// answering meanwhile, answers the request in flight, and exits cleanly.
func TestRegisterThenDrain(t *testing.T) {
	st, url, log, sigterm, result := registeredBackend(t, map[string]string{"LATENCY": "1500ms"})
	inList := func() bool { in, _ := st.InList(context.Background(), url); return in }
	if took := waitUntil(t, 5*time.Second, "the backend in the list", inList); took > 5*time.Second {
		t.Errorf("in the list after %v, want within 5 s", took)
	}
	inFlight := getAsync(context.Background(), url+"/")
	time.Sleep(200 * time.Millisecond) // the request is in service
	sigterm()
	stopped := time.Now()
	// While it leaves the list, it still takes new requests.
	during := getAsync(context.Background(), url+"/")
	if took := waitUntil(t, 5*time.Second, "the entry to leave the list", func() bool { return !inList() }); took > 2*time.Second {
		t.Errorf("left the list %v after SIGTERM, want within 2 s", took)
	}
	if got := <-inFlight; got.status != http.StatusOK {
		t.Errorf("the request in flight at SIGTERM: got %d (%v), want 200", got.status, got.err)
	}
	if got := <-during; got.status != http.StatusOK {
		t.Errorf("a request sent just after SIGTERM: got %d (%v), want 200 (the backend serves until it is out of the list)", got.status, got.err)
	}
	if err := <-result; err != nil {
		t.Errorf("run after SIGTERM: %v", err)
	}
	if took := time.Since(stopped); took > 10*time.Second {
		t.Errorf("exited %v after SIGTERM, more than DRAIN_TIMEOUT (10s)", took)
	}
	for _, want := range []string{"registered:", "deregistered:", "out of the list"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("the log lacks %q:\n%s", want, log)
		}
	}
}

// DRAIN_TIMEOUT bounds leaving the list and the requests in flight
// together: a request that would take longer is cut, and the backend exits.
func TestDrainTimeoutBoundsShutdown(t *testing.T) {
	st, url, _, sigterm, result := registeredBackend(t, map[string]string{"LATENCY": "10s", "DRAIN_TIMEOUT": "2s"})
	waitUntil(t, 5*time.Second, "the backend in the list", func() bool { in, _ := st.InList(context.Background(), url); return in })
	slow := getAsync(context.Background(), url+"/")
	time.Sleep(100 * time.Millisecond)
	sigterm()
	start := time.Now()
	err := <-result
	if err == nil || !strings.Contains(err.Error(), "deadline") {
		t.Errorf("run with a request cut by DRAIN_TIMEOUT: got %v, want the shutdown's deadline error", err)
	}
	if took := time.Since(start); took < 1900*time.Millisecond || took > 4*time.Second {
		t.Errorf("exited %v after SIGTERM, want DRAIN_TIMEOUT (2s) with a request of 10s in flight", took)
	}
	if got := <-slow; got.status == http.StatusOK {
		t.Errorf("a 10 s request answered %d within a 2 s drain", got.status)
	}
}

// ADVERTISE_URL goes into the list as the seeder writes a URL, scheme and
// host in lower case (backend.Normalize): a backend that registers
// HTTP://LocalHost:PORT and one seeded as http://localhost:PORT are one
// entry, not two, to the strategies that count per entry, and its
// registration key matches an ACL pattern ~{servers}:member:http://*.
func TestAdvertiseURLNormalized(t *testing.T) {
	port := freePort(t)
	want := "http://localhost:" + port
	st, _, _, _, _ := registeredBackend(t, map[string]string{"PORT": port, "ADVERTISE_URL": "HTTP://LocalHost:" + port})
	waitUntil(t, 5*time.Second, "the backend in the list as "+want, func() bool {
		e, _ := st.Entries(context.Background())
		return len(e) == 2
	})
	if got, _ := st.Entries(context.Background()); got[1] != want {
		t.Errorf("list: got %q, want the seeded entry and %q", got, want)
	}
	if m, err := st.Members(context.Background()); err != nil || len(m) != 1 || m[0].URL != want || !m[0].Alive {
		t.Errorf("registrations: got %+v (%v), want %q alone, alive", m, err, want)
	}
}

// A backend whose URL is also seeded: that entry stays in the list when the
// backend leaves (registration never removes a seeded entry), so the
// backend must not wait for it to go. It stops as one whose entry left
// does: the request in flight answered, and a clean exit, long before
// DRAIN_TIMEOUT; not after waiting all of it for the entry, with the
// requests that came meanwhile cut and the exit status 1.
func TestLeaveWhenTheURLIsAlsoSeeded(t *testing.T) {
	port := freePort(t)
	seeded := "http://127.0.0.1:" + port
	st, url, log, sigterm, result := registeredBackendSeeded(t,
		map[string]string{"PORT": port, "LATENCY": "500ms", "DRAIN_TIMEOUT": "1m"}, "http://127.0.0.1:1", seeded)
	waitUntil(t, 5*time.Second, "the registration", func() bool {
		m, _ := st.Members(context.Background())
		return len(m) == 1 && m[0].URL == url && m[0].Alive
	})
	inFlight := getAsync(context.Background(), url+"/")
	waitUntil(t, 5*time.Second, "the request in service", func() bool { return getStats(t, url).InService == 1 })
	sigterm()
	select {
	case err := <-result:
		if err != nil {
			t.Errorf("run after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("still running 30 s after SIGTERM (DRAIN_TIMEOUT 1m), waiting for a seeded entry to leave the list:\n%s", log)
	}
	if got := <-inFlight; got.status != http.StatusOK {
		t.Errorf("the request in flight at SIGTERM: got %d (%v), want 200", got.status, got.err)
	}
	if got, want := mustEntries(t, st), []string{"http://127.0.0.1:1", seeded}; !slices.Equal(got, want) {
		t.Errorf("list: got %q, want %q: the seeded entry stays", got, want)
	}
	if !strings.Contains(log.String(), "seeded or added by hand") {
		t.Errorf("the log does not say why the entry stays:\n%s", log)
	}
}

func mustEntries(t *testing.T, st *store.Store) []string {
	t.Helper()
	e, err := st.Entries(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return e
}
