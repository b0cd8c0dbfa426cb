package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/redis/go-redis/v9"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"
)

// The members stack's ejection settings: EJECT_AFTER as by default, a
// shorter EJECT_TIME so that the test sees a backend come back, yet longer
// than a killed backend takes to leave the list (3×HEARTBEAT and a round).
const (
	ejectAfter = 5
	ejectTime  = 8 * time.Second
)

// members is a stack whose backends register themselves (REGISTER=1, the
// compose file's "scale" profile) with one proxying dispatcher.
type members struct {
	t        *testing.T // the test whose end removes the containers
	network  string
	redis    *redis.Client
	front    string // the dispatcher's main port
	admin    string // its admin port
	dispatch testcontainers.Container
	backends map[string]testcontainers.Container // BACKEND_NAME -> its container
}

// startBackend starts a backend named name that registers itself under
// its container's host name (ADVERTISE_URL's default), with extra env; it
// returns at once, before the backend has registered. It lives until the
// whole test ends, whichever subtest starts it.
func (m *members) startBackend(name string, env map[string]string) {
	t := m.t
	t.Helper()
	e := map[string]string{"PORT": "5000", "BACKEND_NAME": name, "REGISTER": "1", "REDIS_URL": redisURL}
	for k, v := range env {
		e[k] = v
	}
	m.backends[name] = start(t, testcontainers.ContainerRequest{
		Image:    images["backend"],
		Env:      e,
		Networks: []string{m.network},
	})
}

// url is the URL backend name registered: http://HOSTNAME:5000.
func (m *members) url(t *testing.T, name string) string {
	t.Helper()
	info, err := m.backends[name].Inspect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return "http://" + info.Config.Hostname + ":5000"
}

func (m *members) list(t *testing.T) []string {
	t.Helper()
	l, err := m.redis.LRange(t.Context(), "servers", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// metric is the value of the admin port's /metrics line that starts with
// prefix (0 if there is none).
func (m *members) metric(t *testing.T, prefix string) float64 {
	t.Helper()
	resp, err := http.Get(m.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(line, prefix+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return 0
}

// dispatcherLog is the dispatcher's log so far.
func (m *members) dispatcherLog(t *testing.T) string {
	t.Helper()
	rc, err := m.dispatch.Logs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return string(b)
}

// watchList records, every 50 ms, when each entry was last seen in the
// list and when it first was, until the test ends.
type listWatch struct {
	mu          sync.Mutex
	first, last map[string]time.Time
}

func (m *members) watchList(t *testing.T) *listWatch {
	w := &listWatch{first: map[string]time.Time{}, last: map[string]time.Time{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			entries, err := m.redis.LRange(ctx, "servers", 0, -1).Result()
			now := time.Now()
			if err == nil {
				w.mu.Lock()
				for _, e := range entries {
					if _, ok := w.first[e]; !ok {
						w.first[e] = now
					}
					w.last[e] = now
				}
				w.mu.Unlock()
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return w
}

// appeared is when entry was first seen in the list.
func (w *listWatch) appeared(entry string) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.first[entry]
}

// gone is when entry was last seen in the list.
func (w *listWatch) gone(entry string) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last[entry]
}

// TestBackendsComeAndGo is the scaling story of issue 20 with the real
// images, in proxy mode, under constant load from 20 clients: backends that
// register themselves join within 5 s, three stopped with SIGTERM leave
// without failing a request, a killed one leaves within 15 s and is
// ejected after EJECT_AFTER failures, and one that fails every request
// (FAIL_RATE=1.0) is ejected and comes back after EJECT_TIME.
func TestBackendsComeAndGo(t *testing.T) {
	ctx := t.Context()
	nw, err := network.New(ctx)
	testcontainers.CleanupNetwork(t, nw)
	if err != nil {
		t.Fatal(err)
	}
	m := &members{t: t, network: nw.Name, backends: map[string]testcontainers.Container{}}
	rc := start(t, testcontainers.ContainerRequest{
		Image:          redisImage(),
		ExposedPorts:   []string{"6379/tcp"},
		Networks:       []string{nw.Name},
		NetworkAliases: map[string][]string{nw.Name: {"redis"}},
		WaitingFor:     wait.ForLog("Ready to accept connections").WithStartupTimeout(time.Minute),
	})
	addr, err := rc.PortEndpoint(ctx, "6379/tcp", "")
	if err != nil {
		t.Fatal(err)
	}
	m.redis = redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { m.redis.Close() })

	m.dispatch = start(t, testcontainers.ContainerRequest{
		Image: images["dispatcher"],
		Env: map[string]string{"REDIS_URL": redisURL, "MODE": "proxy",
			"EJECT_AFTER": strconv.Itoa(ejectAfter), "EJECT_TIME": ejectTime.String()},
		ExposedPorts: []string{"80/tcp", "8080/tcp"},
		Networks:     []string{nw.Name},
		WaitingFor:   wait.ForHTTP("/healthz").WithPort("8080/tcp").WithStartupTimeout(time.Minute),
	})
	m.front, m.admin = endpoint(t, m.dispatch, "80/tcp"), endpoint(t, m.dispatch, "8080/tcp")
	for _, name := range []string{"b1", "b2", "b3"} {
		m.startBackend(name, nil)
	}
	waitFor(t, "three registered backends in the list", func() bool { return len(m.list(t)) == 3 })
	waitReady(t, m.admin, "ready: ")
	watch := m.watchList(t)

	l := startLoadOf(m.front, 20, true)
	t.Cleanup(func() { l.stop() })
	time.Sleep(2 * time.Second)

	t.Run("3 to 5: the two new backends serve within 5 s of starting", func(t *testing.T) {
		for _, name := range []string{"b4", "b5"} {
			started := time.Now()
			m.startBackend(name, nil)
			first := waitFor(t, name+" to serve", func() bool { return l.last(name).After(started) })
			joined := first.Sub(started)
			waitFor(t, name+" seen in the list", func() bool { return !watch.appeared(m.url(t, name)).IsZero() })
			t.Logf("%s: started, in the list after %v, first answer after %v", name,
				watch.appeared(m.url(t, name)).Sub(started).Round(10*time.Millisecond), joined.Round(10*time.Millisecond))
			if joined > 5*time.Second {
				t.Errorf("%s: first answer %v after it started, want within 5 s", name, joined)
			}
		}
		if got := m.list(t); len(got) != 5 {
			t.Errorf("list: got %q, want five registered backends", got)
		}
	})

	t.Run("5 to 2 by docker stop: no request fails", func(t *testing.T) {
		from := time.Now()
		var wg sync.WaitGroup
		urls := map[string]string{}
		for _, name := range []string{"b1", "b2", "b3"} {
			urls[name] = m.url(t, name)
			wg.Go(func() {
				timeout := 15 * time.Second
				if err := m.backends[name].Stop(context.Background(), &timeout); err != nil {
					t.Errorf("docker stop %s: %v", name, err)
				}
			})
		}
		wg.Wait()
		exited := time.Now()
		time.Sleep(2 * time.Second)
		r := l.snapshot()

		var failed []result
		for _, x := range r.results {
			if !x.ok && !x.start.Before(from) {
				failed = append(failed, x)
			}
		}
		after := r.counts(from, time.Time{})
		t.Logf("docker stop of three at +0s, all exited after %v; from then on: %d requests, %d failed, answered by %v",
			exited.Sub(from).Round(10*time.Millisecond), r.redirectsBetween(from, time.Time{})+len(failed), len(failed), after)
		if len(failed) > 0 {
			t.Errorf("%d requests failed while three backends stopped; the first: %+v", len(failed), failed[0])
		}
		for name, u := range urls {
			left := watch.gone(u).Sub(from)
			t.Logf("%s: out of the list %v after docker stop", name, left.Round(10*time.Millisecond))
			if left > 2*time.Second {
				t.Errorf("%s: left the list %v after docker stop, want within 2 s", name, left)
			}
			if n := r.counts(exited, time.Time{})[name]; n > 0 {
				t.Errorf("%s: %d answers after it exited", name, n)
			}
		}
		if got := m.list(t); !slices.Equal(sortedCopy(got), sortedCopy([]string{m.url(t, "b4"), m.url(t, "b5")})) {
			t.Errorf("list: got %q, want b4 and b5", got)
		}
	})

	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })

	t.Run("docker kill: out of the list within 15 s, no request sent after EJECT_AFTER failures", func(t *testing.T) {
		killed := m.url(t, "b4")
		errorsBefore := m.metric(t, fmt.Sprintf(`spread_proxy_connect_errors_total{backend=%q}`, killed))
		killedAt := time.Now()
		if _, err := cli.ContainerKill(ctx, m.backends["b4"].GetContainerID(), client.ContainerKillOptions{Signal: "KILL"}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the killed backend out of the list", func() bool { return !slices.Contains(m.list(t), killed) })
		left := watch.gone(killed).Sub(killedAt)
		waitFor(t, "the ejection in the log", func() bool { return strings.Contains(m.dispatcherLog(t), "backend ejected for every dispatcher") })
		time.Sleep(time.Second)
		r := l.snapshot()

		line := lineWith(m.dispatcherLog(t), "backend ejected for every dispatcher")
		inFlight := intField(line, "in_flight")
		// Every request sent to the killed backend failed: a refused or
		// timed-out connection (retried on b5), or an answer that never
		// came (502/504 to the client).
		connectErrors := m.metric(t, fmt.Sprintf(`spread_proxy_connect_errors_total{backend=%q}`, killed)) - errorsBefore
		lost := 0
		for _, x := range r.results {
			if !x.ok && !x.start.Before(killedAt) {
				lost++
			}
		}
		attempts := int(connectErrors) + lost
		t.Logf("docker kill at +0s: out of the list after %v; %d requests to it failed (%v connect errors, %d answers lost), %d of them already on their way when the dispatcher ejected it: %s",
			left.Round(10*time.Millisecond), attempts, connectErrors, lost, inFlight, strings.TrimSpace(line))
		if left > 15*time.Second {
			t.Errorf("left the list %v after docker kill, want within 15 s", left)
		}
		if !strings.Contains(line, "failures="+strconv.Itoa(ejectAfter)) || !strings.Contains(line, killed) {
			t.Errorf("ejection log line: got %q, want %s after %d failures", line, killed, ejectAfter)
		}
		if attempts != ejectAfter+inFlight {
			t.Errorf("%d requests went to the killed backend, want EJECT_AFTER (%d) and the %d already on their way at the ejection, and none after",
				attempts, ejectAfter, inFlight)
		}
	})

	t.Run("FAIL_RATE=1.0: ejected within EJECT_AFTER failures, back after EJECT_TIME", func(t *testing.T) {
		m.startBackend("b6", map[string]string{"FAIL_RATE": "1.0"})
		failing := m.url(t, "b6")
		waitFor(t, "b6 in the list", func() bool { return slices.Contains(m.list(t), failing) })
		var line string
		waitFor(t, "b6 ejected", func() bool {
			// The log is written in batches: b6 may not be in it yet.
			log := m.dispatcherLog(t)
			i := strings.Index(log, failing)
			if i < 0 {
				return false
			}
			line = lineWith(log[i:], "backend ejected for every dispatcher")
			return line != ""
		})
		// The dispatcher's clock is this host's: the log's time is when
		// it ejected b6 (after its decision, before any request it sent
		// after that).
		ejected, err := time.Parse(time.RFC3339Nano, strings.TrimPrefix(strings.Fields(line)[0], "time="))
		if err != nil {
			t.Fatalf("the ejection's time in %q: %v", line, err)
		}
		var back time.Time
		waitFor(t, "b6 back after its ejection", func() bool {
			for _, x := range l.snapshot().results {
				if x.status == http.StatusInternalServerError && x.start.After(ejected.Add(ejectTime/2)) {
					back = x.start
					return true
				}
			}
			return false
		})
		first := 0
		for _, x := range l.snapshot().results {
			if x.status == http.StatusInternalServerError && x.start.Before(ejected.Add(ejectTime/2)) {
				first++
			}
		}
		inFlight := intField(line, "in_flight")
		t.Logf("FAIL_RATE=1.0: %d failed answers before the ejection ended: %d failures and %d already on their way (%s); back %v after the ejection",
			first, ejectAfter, inFlight, strings.TrimSpace(line), back.Sub(ejected).Round(10*time.Millisecond))
		if !strings.Contains(line, "failures="+strconv.Itoa(ejectAfter)) || !strings.Contains(line, "for="+ejectTime.String()) {
			t.Errorf("ejection log line: got %q, want failures=%d for=%s", line, ejectAfter, ejectTime)
		}
		if first != ejectAfter+inFlight {
			t.Errorf("%d answers were 500 before the ejection ended, want EJECT_AFTER (%d) and the %d already on their way, and none after", first, ejectAfter, inFlight)
		}
		if d := back.Sub(ejected); d < ejectTime-500*time.Millisecond || d > ejectTime+2*time.Second {
			t.Errorf("back %v after the ejection, want EJECT_TIME (%v), give or take the time a request takes", d, ejectTime)
		}
		if v := m.metric(t, fmt.Sprintf(`spread_ejections_total{backend=%q}`, failing)); v < 1 {
			t.Errorf("spread_ejections_total for b6: got %v, want 1 or more", v)
		}
	})
}

// snapshot is the results so far, while the load goes on.
func (l *load) snapshot() *report {
	l.mu.Lock()
	defer l.mu.Unlock()
	return &report{results: slices.Clone(l.res)}
}

// lineWith is the first line of log that holds s.
func lineWith(log, s string) string {
	for line := range strings.Lines(log) {
		if strings.Contains(line, s) {
			return line
		}
	}
	return ""
}

// intField is the value of key=N in a log line, 0 if it has none.
func intField(line, key string) int {
	_, v, ok := strings.Cut(line, " "+key+"=")
	if !ok {
		return 0
	}
	v, _, _ = strings.Cut(v, " ")
	n, _ := strconv.Atoi(v)
	return n
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}
