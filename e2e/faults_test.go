package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	dockernet "github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
)

// The faults stack's health check settings: shorter than the defaults (2s,
// 1s, 2, 2) so that the test runs fast; the bounds below follow from them.
const (
	healthInterval = time.Second
	healthTimeout  = 500 * time.Millisecond
	healthFalls    = 2
)

// TestFaults breaks the running stack under steady load, the way things
// break, and counts what clients see: requests sent, failed, and redirected
// per backend.
//
// Its subtests share one stack and run in order; each leaves it whole.
func TestFaults(t *testing.T) {
	s := startStackWith(t, stackOptions{
		// Keep the data when Redis is stopped and started again, as a
		// real deployment would (the stand-in image does not persist).
		redisCmd:   []string{"redis-server", "--appendonly", "yes"},
		fixedPorts: true,
		dispatcherEnv: map[string]string{
			"HEALTH_INTERVAL": healthInterval.String(),
			"HEALTH_TIMEOUT":  healthTimeout.String(),
			"HEALTH_FALLS":    strconv.Itoa(healthFalls),
		},
	})
	waitReady(t, s.admin, "ready: ")

	t.Run("a poisoned list: no redirect to a poisoned entry", func(t *testing.T) {
		s.reseed(t)
		poison := []string{
			"javascript:alert(1)", "//evil.example", "http://evil.example\r\nSet-Cookie: x=1",
			"http://user:pass@evil.example", "ftp://evil.example", "", "http://evil.example/?q=1",
			"http://evil.example#frag", "http://ev\u200bil.example", strings.Repeat("x", 10000),
		}
		for _, p := range poison {
			if err := s.redis.LPush(t.Context(), "servers", p).Err(); err != nil {
				t.Fatal(err)
			}
		}
		l := startLoad(s.dispatcher, 4)
		time.Sleep(2 * time.Second)
		r := l.stop()
		t.Logf("poisoned list: %s", r.summary(s))
		r.expectNoFailures(t)
		r.expectOnly(t, s, s.backends...)
		// Each pass over the list gives each valid entry one turn.
		counts := r.counts(time.Time{}, time.Time{})
		lo, hi := counts[s.backends[0]], counts[s.backends[0]]
		for _, b := range s.backends {
			lo, hi = min(lo, counts[b]), max(hi, counts[b])
		}
		if hi-lo > 1 || lo == 0 {
			t.Errorf("redirects per backend: got %v, want the same count ±1 for each", counts)
		}

		// A key of the wrong type: 503, a clear body, never a redirect.
		if err := s.redis.Del(t.Context(), "servers").Err(); err != nil {
			t.Fatal(err)
		}
		if err := s.redis.Set(t.Context(), "servers", "not a list", 0).Err(); err != nil {
			t.Fatal(err)
		}
		status, loc, body := get(t, s.dispatcher+"/")
		if status != http.StatusServiceUnavailable || loc != "" || !strings.Contains(body, "not a list") {
			t.Errorf("wrong type: got %d Location=%q %q, want 503 saying not a list", status, loc, body)
		}
		if err := s.redis.Del(t.Context(), "servers").Err(); err != nil {
			t.Fatal(err)
		}
		s.reseed(t)
	})

	t.Run("a stopped backend is skipped within HEALTH_INTERVAL×HEALTH_FALLS+1s and back after a restart", func(t *testing.T) {
		s.reseed(t)
		stopped, bc := s.backends[1], s.backendCs[1]
		l := startLoad(s.dispatcher, 4)
		time.Sleep(time.Second)
		t0 := time.Now()
		timeout := 10 * time.Second
		if err := bc.Stop(t.Context(), &timeout); err != nil {
			t.Fatal(err)
		}
		bound := t0.Add(healthInterval*healthFalls + time.Second)
		time.Sleep(time.Until(bound) + 3*time.Second)
		if err := bc.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		t1 := time.Now()
		back := waitFor(t, "redirects go to the restarted backend again", func() bool {
			return l.last(stopped).After(t1)
		})
		time.Sleep(2 * time.Second)
		r := l.stop()
		t.Logf("backend stopped at +0s, restarted at +%.1fs, back at +%.1fs: %s",
			t1.Sub(t0).Seconds(), back.Sub(t0).Seconds(), r.summary(s))

		var lastBefore time.Time
		for _, x := range r.results {
			if x.backend == stopped && x.start.Before(t1) && x.start.After(lastBefore) {
				lastBefore = x.start
			}
		}
		t.Logf("the last request redirected to the stopped backend was sent at +%.2fs (bound: +%.2fs)",
			lastBefore.Sub(t0).Seconds(), bound.Sub(t0).Seconds())
		r.expectNoFailures(t)
		r.expectOnly(t, s, s.backends...)
		if n := r.counts(bound, t1)[stopped]; n != 0 {
			t.Errorf("%d requests sent more than HEALTH_INTERVAL×HEALTH_FALLS+1s after the stop went to the stopped %s", n, s.names[stopped])
		}
		while := r.counts(bound, t1)
		if while[s.backends[0]] == 0 || while[s.backends[2]] == 0 {
			t.Errorf("while %s was down the others got %v, want both some", s.names[stopped], while)
		}
		after := r.counts(back.Add(time.Second), time.Time{})
		for _, b := range s.backends {
			if after[b] == 0 {
				t.Errorf("after the restart %s got no redirect (all: %v)", s.names[b], after)
			}
		}
		// The restarted backend answers where the redirect sends a client.
		resp, err := noFollow.Get(stopped + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("X-Backend"); resp.StatusCode != 200 || got != s.names[stopped] {
			t.Errorf("GET %s after the restart: got %d from %q, want 200 from %s", stopped, resp.StatusCode, got, s.names[stopped])
		}
	})

	t.Run("SIGTERM: the dispatcher drains, no request it accepted fails, and it exits 0", func(t *testing.T) {
		s.reseed(t)
		dc := s.startDispatcher(t, map[string]string{"SHUTDOWN_TIMEOUT": "10s"})
		url := endpoint(t, dc, "80/tcp")
		picks := func() int64 {
			var n int64
			for _, v := range s.redis.HGetAll(t.Context(), "{servers}:picks").Val() {
				c, _ := strconv.ParseInt(v, 10, 64)
				n += c
			}
			return n
		}
		before := picks()
		l := startLoad(url, 8)
		time.Sleep(time.Second)
		sigterm := time.Now()
		timeout := 15 * time.Second
		if err := dc.Stop(t.Context(), &timeout); err != nil { // docker stop: SIGTERM, SIGKILL after 15s
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
		r := l.stop()
		handled := picks() - before
		t.Logf("SIGTERM at +1s: %s; the dispatcher took %d rotation steps", r.summary(s), handled)

		state, err := dc.State(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if state.ExitCode != 0 || state.OOMKilled {
			t.Errorf("the dispatcher exited %d after SIGTERM, want 0", state.ExitCode)
		}
		// Every request the dispatcher took a step for was answered: the
		// clients got as many redirects as Redis counted steps.
		if got := int64(r.redirects()); got != handled {
			t.Errorf("clients got %d redirects, the dispatcher took %d steps: %d accepted requests were lost",
				got, handled, handled-got)
		}
		// Failures are only refused connections after the SIGTERM, never an
		// error status.
		for _, x := range r.results {
			if x.err == nil && x.status != http.StatusFound {
				t.Errorf("a request got %d, want 302 or no connection", x.status)
			}
			if x.err != nil && x.start.Before(sigterm) && x.end.Before(sigterm) {
				t.Errorf("a request failed before the SIGTERM: %v", x.err)
			}
		}
		if r.redirects() == 0 {
			t.Error("no request was redirected; the test measured nothing")
		}
	})

	cli, err := testcontainers.NewDockerClientWithOpts(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })

	t.Run("Redis paused for 10s: no 5xx, degraded, then the shared rotation resumes", func(t *testing.T) {
		s.reseed(t)
		l := startLoad(s.dispatcher, 4)
		time.Sleep(time.Second)
		pausedAt := time.Now()
		if _, err := cli.ContainerPause(t.Context(), s.redisC.GetContainerID(), client.ContainerPauseOptions{}); err != nil {
			t.Fatal(err)
		}
		unpaused := false
		unpause := func() {
			if !unpaused {
				unpaused = true
				cli.ContainerUnpause(context.Background(), s.redisC.GetContainerID(), client.ContainerUnpauseOptions{})
			}
		}
		defer unpause()
		time.Sleep(5 * time.Second)
		status, body := readyz(t, s.admin)
		time.Sleep(5 * time.Second)
		unpause()
		resumedAt := time.Now()
		waitReady(t, s.admin, "ready: ")
		before := s.lmoveCalls(t)
		time.Sleep(time.Second)
		r := l.stop()
		t.Logf("Redis paused for 10s: %s", r.summary(s))

		if status != 200 || !strings.HasPrefix(body, "degraded: ") {
			t.Errorf("/readyz while Redis is paused: got %d %q, want 200 degraded: ...", status, body)
		}
		r.expectNoFailures(t)
		r.expectOnly(t, s, s.backends...)
		if n := s.lmoveCalls(t) - before; n == 0 {
			t.Error("no LMOVE in Redis after it came back: the shared rotation did not resume")
		}
		// Only the requests waiting on Redis when it stopped answering
		// waited REDIS_TIMEOUT (at most one per client); every later one
		// was answered from the snapshot without waiting.
		slow := 0
		for _, x := range r.results {
			if x.start.After(pausedAt.Add(-time.Second)) && x.start.Before(resumedAt) && x.end.Sub(x.start) >= time.Second {
				slow++
			}
		}
		during := r.redirectsBetween(pausedAt.Add(2*time.Second), resumedAt)
		t.Logf("while Redis was paused: %d requests took 1s or more, %d were redirected from +2s to the unpause", slow, during)
		if slow > 4 || during == 0 {
			t.Errorf("while Redis was paused: %d requests waited 1s or more (want at most 4, one per client), %d were answered", slow, during)
		}
	})

	t.Run("Redis stopped for 10s: no 5xx, degraded, then the shared rotation resumes", func(t *testing.T) {
		s.reseed(t)
		l := startLoad(s.dispatcher, 4)
		time.Sleep(time.Second)
		timeout := 10 * time.Second
		if err := s.redisC.Stop(t.Context(), &timeout); err != nil {
			t.Fatal(err)
		}
		stoppedAt := time.Now()
		time.Sleep(5 * time.Second)
		status, body := readyz(t, s.admin)
		time.Sleep(time.Until(stoppedAt.Add(10 * time.Second)))
		if err := s.redisC.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		startedAt := time.Now()
		waitReady(t, s.admin, "ready: ")
		before := s.lmoveCalls(t)
		time.Sleep(time.Second)
		r := l.stop()
		t.Logf("Redis stopped for 10s: %s", r.summary(s))

		if status != 200 || !strings.HasPrefix(body, "degraded: ") {
			t.Errorf("/readyz while Redis is stopped: got %d %q, want 200 degraded: ...", status, body)
		}
		r.expectNoFailures(t)
		r.expectOnly(t, s, s.backends...)
		if during := r.redirectsBetween(stoppedAt, startedAt); during == 0 {
			t.Error("no request was redirected while Redis was stopped")
		}
		if n := s.lmoveCalls(t) - before; n == 0 {
			t.Error("no LMOVE in Redis after it came back: the shared rotation did not resume")
		}
		if got := s.list(t); len(got) != 3 {
			t.Errorf("the list after Redis restarted: got %q, want the three backends", got)
		}
	})
}

// fixedPort, when fixed, publishes port on a loopback host port chosen now,
// which the container keeps across a stop and start.
func fixedPort(t *testing.T, fixed bool, port string) func(*container.HostConfig) {
	t.Helper()
	if !fixed {
		return nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hostPort := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	p := dockernet.MustParsePort(port)
	return func(hc *container.HostConfig) {
		if hc.PortBindings == nil {
			hc.PortBindings = dockernet.PortMap{}
		}
		hc.PortBindings[p] = []dockernet.PortBinding{{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: hostPort}}
	}
}

// waitReady waits until url's /readyz answers a body that starts with want.
func waitReady(t *testing.T, admin, want string) {
	t.Helper()
	waitFor(t, "/readyz says "+want, func() bool {
		_, body := readyz(t, admin)
		return strings.HasPrefix(body, want)
	})
}

func readyz(t *testing.T, admin string) (int, string) {
	t.Helper()
	resp, err := noFollow.Get(admin + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitFor polls cond until it holds and returns when it did; it fails the
// test after a minute. It waits; it measures nothing.
func waitFor(t *testing.T, what string, cond func() bool) time.Time {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting until %s", what)
		}
	}
	return time.Now()
}

// load is steady traffic: clients that each send a request, wait for its
// answer and 10ms more, and again, until stopped.
type load struct {
	stopc chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	res   []result
	lastT map[string]time.Time // backend -> when the latest request served there was sent
}

// result is what one request got.
type result struct {
	start, end time.Time
	status     int    // 0 when err is set
	backend    string // the Location without its path, for a redirect; X-Backend, proxied
	ok         bool   // a redirect; proxied, a 200
	err        error
}

// startLoad is steady traffic to a redirecting dispatcher.
func startLoad(url string, clients int) *load { return startLoadOf(url, clients, false) }

// startLoadOf is steady traffic to the dispatcher at url, which redirects
// (a request succeeds with a 302, to the backend its Location names) or,
// proxied, forwards (a 200, from the backend its X-Backend names).
func startLoadOf(url string, clients int, proxied bool) *load {
	l := &load{stopc: make(chan struct{}), lastT: map[string]time.Time{}}
	hc := &http.Client{
		Timeout:       10 * time.Second,
		Transport:     &http.Transport{MaxIdleConnsPerHost: clients},
		CheckRedirect: noFollow.CheckRedirect,
	}
	for range clients {
		l.wg.Go(func() {
			for {
				select {
				case <-l.stopc:
					return
				default:
				}
				r := result{start: time.Now()}
				resp, err := hc.Get(url + "/")
				r.end = time.Now()
				if err != nil {
					r.err = err
				} else {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					r.status = resp.StatusCode
					r.backend, r.ok = strings.TrimSuffix(resp.Header.Get("Location"), "/"), r.status == http.StatusFound
					if proxied {
						r.backend, r.ok = resp.Header.Get("X-Backend"), r.status == http.StatusOK
					}
				}
				l.mu.Lock()
				l.res = append(l.res, r)
				if r.ok && r.start.After(l.lastT[r.backend]) {
					l.lastT[r.backend] = r.start
				}
				l.mu.Unlock()
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
	return l
}

// last is when the latest request served by backend was sent.
func (l *load) last(backend string) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastT[backend]
}

// stop ends the load and returns every result, in the order they ended.
func (l *load) stop() *report {
	close(l.stopc)
	l.wg.Wait()
	return &report{results: l.res}
}

type report struct{ results []result }

// counts is the redirects per backend among the requests sent in [from,
// to); a zero time leaves that side open.
func (r *report) counts(from, to time.Time) map[string]int {
	c := map[string]int{}
	for _, x := range r.results {
		if x.ok && !x.start.Before(from) && (to.IsZero() || x.start.Before(to)) {
			c[x.backend]++
		}
	}
	return c
}

func (r *report) redirects() int { return r.redirectsBetween(time.Time{}, time.Time{}) }

func (r *report) redirectsBetween(from, to time.Time) int {
	n := 0
	for _, v := range r.counts(from, to) {
		n += v
	}
	return n
}

// failures are the requests that got no answer or an answer other than a
// redirect (proxied: a 200).
func (r *report) failures() []result {
	var f []result
	for _, x := range r.results {
		if !x.ok {
			f = append(f, x)
		}
	}
	return f
}

func (r *report) summary(s *stack) string {
	c := r.counts(time.Time{}, time.Time{})
	var parts []string
	for _, b := range s.backends {
		parts = append(parts, fmt.Sprintf("%s=%d", s.names[b], c[b]))
	}
	for b, n := range c {
		if !slices.Contains(s.backends, b) {
			parts = append(parts, fmt.Sprintf("%q=%d", b, n))
		}
	}
	return fmt.Sprintf("%d requests sent, %d failed, redirected: %s", len(r.results), len(r.failures()), strings.Join(parts, " "))
}

func (r *report) expectNoFailures(t *testing.T) {
	t.Helper()
	f := r.failures()
	if len(f) == 0 {
		return
	}
	statuses := map[string]int{}
	for _, x := range f {
		k := strconv.Itoa(x.status)
		if x.err != nil {
			var ne net.Error
			k = "error"
			if errors.As(x.err, &ne) && ne.Timeout() {
				k = "timeout"
			}
		}
		statuses[k]++
	}
	t.Errorf("%d of %d requests failed (%v); the first: %+v", len(f), len(r.results), statuses, f[0])
}

// expectOnly checks that every redirect went to one of backends.
func (r *report) expectOnly(t *testing.T, s *stack, backends ...string) {
	t.Helper()
	for b, n := range r.counts(time.Time{}, time.Time{}) {
		if !slices.Contains(backends, b) {
			t.Errorf("%d redirects went to %q, which is not a seeded backend", n, b)
		}
	}
	if r.redirects() == 0 {
		t.Error("no request was redirected; the test measured nothing")
	}
}
