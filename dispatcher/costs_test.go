package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spreadlb/spread/internal/balance"
	"github.com/spreadlb/spread/internal/redistest"
	"github.com/spreadlb/spread/internal/store"
)

// The costs of issue 21: what the dispatcher asks of Redis and sends its
// dashboards must not grow with the list, and it must say when it serves
// without Redis, whatever the strategy.

// proxyStrategies are the strategies a dispatcher can run in MODE=proxy: the
// issue's five, and any added since.
var proxyStrategies = balance.NamesFor(balance.Proxy)

// infoStat is the number INFO stats gives for name.
func infoStat(t *testing.T, rdb *redis.Client, name string) int64 {
	t.Helper()
	n, err := redistest.Stat(context.Background(), rdb, name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// served200 sends one request to the main port and reports whether a
// backend answered it 200.
func (s *served) served200() bool {
	resp, err := http.Get(s.main + "/")
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// okBackends are n backends that answer 200 on every path, named b1, b2...
func okBackends(t *testing.T, n int) []*upstream {
	t.Helper()
	any := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	var bs []*upstream
	for i := range n {
		bs = append(bs, newBackend(t, "b"+strconv.Itoa(i+1), any))
	}
	return bs
}

// longList is n distinct entries over bs: each backend's URL with a path
// of its own.
func longList(bs []*upstream, n int) []string {
	list := make([]string, n)
	for i := range list {
		list[i] = fmt.Sprintf("%s/e%d", bs[i%len(bs)].srv.URL, i)
	}
	return list
}

// get sends one request to the main port and returns its status and the
// backend that answered it.
func (s *served) get(t *testing.T) (int, string) {
	t.Helper()
	resp, err := s.noFollower.Get(s.main + "/")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("X-Backend")
}

// For each strategy, with Redis killed or hung: /readyz says degraded
// within 2 s, every /readyz answers within REDIS_TIMEOUT + 100 ms, requests
// are still served, spread_degraded is 1 and the dashboard says degraded.
// A hung Redis that answers again ends it.
func TestEveryStrategyReportsServingWithoutRedis(t *testing.T) {
	const timeout = 300 * time.Millisecond
	bs := okBackends(t, 3)
	urls := []string{bs[0].srv.URL, bs[1].srv.URL, bs[2].srv.URL}
	for _, strategy := range proxyStrategies {
		for _, fault := range []string{"killed", "hung"} {
			t.Run(strategy+"/"+fault, func(t *testing.T) {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				s := startServe(t, ctx, proxyEnv("STRATEGY", strategy, "REDIS_TIMEOUT", timeout.String()), urls...)
				waitFor(t, "ready", func() bool { _, body := s.readyz(t); return strings.HasPrefix(body, "ready: ") })
				events := openEvents(t, s.adm+"/events")
				if snap, _ := events.next(t); snap.Degraded {
					t.Fatalf("the dashboard says degraded before the fault")
				}

				if fault == "killed" {
					s.redis.Stop()
				} else {
					s.redis.Pause()
					defer s.redis.Resume()
				}
				start := time.Now()
				for {
					t0 := time.Now()
					code, body := s.readyz(t)
					if took := time.Since(t0); took > timeout+100*time.Millisecond {
						t.Errorf("a /readyz took %v, want at most REDIS_TIMEOUT + 100ms = %v", took, timeout+100*time.Millisecond)
					}
					if code == http.StatusOK && strings.HasPrefix(body, "degraded: ") {
						break
					}
					if time.Since(start) > 2*time.Second {
						t.Fatalf("2 s after Redis was %s, /readyz says %d %q, want 200 degraded", fault, code, body)
					}
					time.Sleep(20 * time.Millisecond)
				}
				for i := range 6 {
					if code, name := s.get(t); code != http.StatusOK || name == "" {
						t.Errorf("request %d without Redis: got %d from %q, want 200 from a backend", i, code, name)
					}
				}
				if got, _ := sample(scrape(t, s.adm+"/metrics"), "spread_degraded", nil); got != 1 {
					t.Errorf("spread_degraded without Redis: got %v, want 1", got)
				}
				for snap, ok := events.next(t); !snap.Degraded || snap.DegradedReason == ""; snap, ok = events.next(t) {
					if !ok {
						t.Fatal("the stream ended before the dashboard said degraded")
					}
				}

				if fault == "hung" {
					s.redis.Resume()
					waitFor(t, "ready again", func() bool { _, body := s.readyz(t); return strings.HasPrefix(body, "ready: ") })
					waitFor(t, "spread_degraded back to 0", func() bool {
						got, _ := sample(scrape(t, s.adm+"/metrics"), "spread_degraded", nil)
						return got == 0
					})
				}
			})
		}
	}
}

// /readyz asks Redis one LLEN on the dispatcher's own connections, and
// checks the user's permissions every few seconds: 2,000 calls open no
// connection of their own (at most 10, the issue allows), read nothing of
// a 10,000-entry list, and cost Redis under 1 KiB each.
func TestReadyzCostDoesNotGrowWithTheList(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bs := okBackends(t, 3)
	s := startServe(t, ctx, nil, longList(bs, 10000)...)
	waitFor(t, "ready", func() bool { _, body := s.readyz(t); return strings.HasPrefix(body, "ready: ") })
	rdb := s.redis.Client
	conns, sent := infoStat(t, rdb, "total_connections_received"), infoStat(t, rdb, "total_net_output_bytes")
	const calls = 2000
	for i := range calls {
		if code, body := s.readyz(t); code != 200 || body != "ready: \"servers\" holds 10000 entries\n" {
			t.Fatalf("/readyz %d: got %d %q", i, code, body)
		}
	}
	if n := infoStat(t, rdb, "total_connections_received") - conns; n > 10 {
		t.Errorf("%d /readyz calls opened %d Redis connections, want at most 10", calls, n)
	}
	perCall := float64(infoStat(t, rdb, "total_net_output_bytes")-sent) / calls
	t.Logf("Redis sent %.0f bytes per /readyz", perCall)
	if perCall > 1024 {
		t.Errorf("Redis sent %.0f bytes per /readyz, want under 1 KiB: the list was read", perCall)
	}
}

// With a 10,000-entry list over three backends, least-conn and round robin
// cost Redis at most 1 KiB received per proxied request, a dashboard open
// the whole time.
func TestRedisBytesPerRequestWithALongList(t *testing.T) {
	bs := okBackends(t, 3)
	list := longList(bs, 10000)
	for _, strategy := range []string{"least-conn", "round-robin"} {
		t.Run(strategy, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			s := startServe(t, ctx, proxyEnv("STRATEGY", strategy), list...)
			waitFor(t, "ready", func() bool { _, body := s.readyz(t); return strings.HasPrefix(body, "ready: ") })
			events := openEvents(t, s.adm+"/events")
			go io.Copy(io.Discard, events.resp.Body)
			for range 20 { // warm up: the candidates travel once
				s.get(t)
			}
			rdb := s.redis.Client
			before := infoStat(t, rdb, "total_net_input_bytes")
			const workers, each = 8, 250
			var failed atomic.Int64
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
					for range each {
						if !s.served200() {
							failed.Add(1)
						}
					}
				})
			}
			wg.Wait()
			if n := failed.Load(); n > 0 {
				t.Fatalf("%d of %d requests failed", n, workers*each)
			}
			perRequest := float64(infoStat(t, rdb, "total_net_input_bytes")-before) / (workers * each)
			t.Logf("%s, 10,000 entries: Redis received %.0f bytes per proxied request", strategy, perRequest)
			if perRequest > 1024 {
				t.Errorf("%s, 10,000 entries: Redis received %.0f bytes per proxied request, want at most 1 KiB", strategy, perRequest)
			}
		})
	}
}

// An open dashboard is sent the whole state once, then only what changes:
// with a 10,000-entry list and nothing happening it is sent (next to)
// nothing, and costs Redis a few kilobytes a second; one request sends a
// small change, not the list.
func TestDashboardCostsWhatChanges(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bs := okBackends(t, 3)
	s := startServe(t, ctx, nil, longList(bs, 10000)...)
	waitFor(t, "ready", func() bool { _, body := s.readyz(t); return strings.HasPrefix(body, "ready: ") })

	resp, err := http.Get(s.adm + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got atomic.Int64
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		buf := make([]byte, 64<<10)
		var line []byte
		for {
			n, err := resp.Body.Read(buf)
			got.Add(int64(n))
			for _, c := range buf[:n] {
				if c == '\n' {
					select {
					case lines <- string(line):
					default:
					}
					line = line[:0]
				} else if len(line) < 200 {
					line = append(line, c)
				}
			}
			if err != nil {
				return
			}
		}
	}()
	waitFor(t, "the state", func() bool { return got.Load() > 10000 })
	time.Sleep(500 * time.Millisecond) // the whole state has arrived
	first := got.Load()
	out := infoStat(t, s.redis.Client, "total_net_output_bytes")
	const idle = 2 * time.Second
	time.Sleep(idle)
	perSecond := float64(got.Load()-first) / idle.Seconds()
	fromRedis := float64(infoStat(t, s.redis.Client, "total_net_output_bytes")-out) / idle.Seconds()
	t.Logf("whole state %d bytes; idle: %.0f bytes/s to the dashboard, %.0f bytes/s from Redis", first, perSecond, fromRedis)
	if perSecond > 64<<10 {
		t.Errorf("an idle dashboard over 10,000 entries got %.0f bytes/s, want at most 64 KiB/s", perSecond)
	}
	if fromRedis > 64<<10 {
		t.Errorf("an idle dashboard over 10,000 entries cost Redis %.0f bytes/s, want at most 64 KiB/s", fromRedis)
	}

	before := got.Load()
	if code, _ := s.get(t); code != http.StatusFound {
		t.Fatalf("a request: got %d, want 302", code)
	}
	waitFor(t, "a change", func() bool { return got.Load() > before })
	time.Sleep(600 * time.Millisecond)
	if n := got.Load() - before; n > 32<<10 {
		t.Errorf("one request sent the dashboard %d bytes, want a change of a few KiB", n)
	}
}

// At most ADMIN_MAX_STREAMS dashboards at once: the next gets a 503 that
// says so, and a place freed is taken again.
func TestDashboardStreamsAreCapped(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := startServe(t, ctx, map[string]string{"ADMIN_MAX_STREAMS": "2"}, three...)
	a := openEvents(t, s.adm+"/events")
	openEvents(t, s.adm+"/events")
	resp, err := http.Get(s.adm + "/events")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "ADMIN_MAX_STREAMS") ||
		!strings.Contains(string(body), "at most 2") {
		t.Errorf("a third stream: got %d %q, want 503 naming ADMIN_MAX_STREAMS and its 2", resp.StatusCode, body)
	}
	a.resp.Body.Close()
	waitFor(t, "a place for a new stream", func() bool {
		resp, err := http.Get(s.adm + "/events")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// With Redis hung under load (CLIENT PAUSE ... ALL), no pick waits longer
// than REDIS_TIMEOUT + 100 ms, with the strategies that ask Redis on the
// request path, and every request is served. The picks are timed by the
// dispatcher itself (spread_pick_duration_seconds): REDIS_TIMEOUT is
// 400ms, so that REDIS_TIMEOUT + 100 ms is the histogram's 0.5 s bound.
func TestHungRedisUnderLoadBoundsEveryPick(t *testing.T) {
	const timeout = 400 * time.Millisecond
	bs := okBackends(t, 3)
	urls := []string{bs[0].srv.URL, bs[1].srv.URL, bs[2].srv.URL}
	for _, strategy := range []string{"round-robin", "least-conn"} {
		t.Run(strategy, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			s := startServe(t, ctx, proxyEnv("STRATEGY", strategy, "REDIS_TIMEOUT", timeout.String()), urls...)
			waitFor(t, "ready", func() bool { _, body := s.readyz(t); return strings.HasPrefix(body, "ready: ") })
			stop := make(chan struct{})
			var failed, during atomic.Int64
			var paused atomic.Bool
			var wg sync.WaitGroup
			for range 16 {
				wg.Go(func() {
					for {
						select {
						case <-stop:
							return
						default:
						}
						if !s.served200() {
							failed.Add(1)
						}
						if paused.Load() {
							during.Add(1)
						}
					}
				})
			}
			time.Sleep(300 * time.Millisecond)
			paused.Store(true)
			if err := s.redis.Client.Do(ctx, "CLIENT", "PAUSE", 2000, "ALL").Err(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(2000 * time.Millisecond)
			paused.Store(false)
			time.Sleep(500 * time.Millisecond)
			close(stop)
			wg.Wait()

			var picks, quick, within float64
			for _, m := range scrape(t, s.adm+"/metrics")["spread_pick_duration_seconds"].GetMetric() {
				h := m.GetHistogram()
				picks = float64(h.GetSampleCount())
				for _, b := range h.GetBucket() {
					switch b.GetUpperBound() {
					case 0.25:
						quick = float64(b.GetCumulativeCount())
					case (timeout + 100*time.Millisecond).Seconds():
						within = float64(b.GetCumulativeCount())
					}
				}
			}
			over := picks - within
			t.Logf("%s: %.0f picks, %d while Redis hung, %.0f waited on it over 250ms, %.0f over REDIS_TIMEOUT + 100ms",
				strategy, picks, during.Load(), picks-quick, over)
			if picks-quick == 0 {
				t.Error("no pick waited on the hung Redis: the test hung nothing")
			}
			if n := failed.Load(); n > 0 {
				t.Errorf("%d requests failed", n)
			}
			if during.Load() == 0 {
				t.Error("no request was served while Redis hung")
			}
			if picks == 0 || over != 0 {
				t.Errorf("%.0f of %.0f picks took longer than REDIS_TIMEOUT + 100ms = %v, want none", over, picks, timeout+100*time.Millisecond)
			}
		})
	}
}

// After FLUSHALL and a seed of other backends, every strategy serves the
// new backends within 200 ms of the seed, and only them; a seed without
// FLUSHALL, back to the first backends, within 100 ms.
func TestReseedAfterFLUSHALLIsServedByEveryStrategy(t *testing.T) {
	bs := okBackends(t, 6)
	before := []string{bs[0].srv.URL, bs[1].srv.URL, bs[2].srv.URL}
	after := []string{bs[3].srv.URL, bs[4].srv.URL, bs[5].srv.URL}
	names := []string{bs[3].name, bs[4].name, bs[5].name}
	for _, strategy := range proxyStrategies {
		t.Run(strategy, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			s := startServe(t, ctx, proxyEnv("STRATEGY", strategy), before...)
			waitFor(t, "ready", func() bool { _, body := s.readyz(t); return strings.HasPrefix(body, "ready: ") })
			for range 6 {
				if code, _ := s.get(t); code != http.StatusOK {
					t.Fatalf("before: got %d, want 200", code)
				}
			}
			if err := s.redis.Client.FlushAll(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond) // the dispatcher sees the list gone
			if err := store.NewStore(s.redis.Client, "servers", nil).Replace(ctx, after); err != nil {
				t.Fatal(err)
			}
			servedWithin := func(what string, names []string, bound time.Duration) {
				t.Helper()
				seeded := time.Now()
				for {
					code, name := s.get(t)
					if code == http.StatusOK && slices.Contains(names, name) {
						break
					}
					if time.Since(seeded) > 5*time.Second {
						t.Fatalf("5 s after %s: got %d from %q, want 200 from one of %q", what, code, name, names)
					}
					time.Sleep(5 * time.Millisecond)
				}
				took := time.Since(seeded)
				t.Logf("%s: the new list served %v after %s", strategy, took, what)
				if took > bound {
					t.Errorf("%s: the new list was served %v after %s, want within %v", strategy, took, what, bound)
				}
				for i := range 12 {
					if code, name := s.get(t); code != http.StatusOK || !slices.Contains(names, name) {
						t.Errorf("request %d after %s: got %d from %q, want 200 from one of %q", i, what, code, name, names)
					}
				}
			}
			servedWithin("FLUSHALL and a seed", names, 200*time.Millisecond)
			if err := store.NewStore(s.redis.Client, "servers", nil).Replace(ctx, before); err != nil {
				t.Fatal(err)
			}
			servedWithin("a seed", []string{bs[0].name, bs[1].name, bs[2].name}, 100*time.Millisecond)
		})
	}
}
