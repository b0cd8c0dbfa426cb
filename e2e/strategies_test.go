package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

// startBackend starts one more backend on the stack's network, reachable
// there as http://name:port, with extra environment (LATENCY, say).
func (s *stack) startBackend(t *testing.T, name, port string, env map[string]string) testcontainers.Container {
	t.Helper()
	e := map[string]string{"PORT": port, "BACKEND_NAME": name}
	for k, v := range env {
		e[k] = v
	}
	return start(t, testcontainers.ContainerRequest{
		Image:          images["backend"],
		Env:            e,
		ExposedPorts:   []string{port + "/tcp"},
		Networks:       []string{s.network},
		NetworkAliases: map[string][]string{s.network: {name}},
		WaitingFor:     wait.ForHTTP("/healthz").WithPort(port + "/tcp").WithStartupTimeout(time.Minute),
	})
}

// inflightInRedis is the sum of every dispatcher's requests in flight that
// least-conn counts in Redis for the list at key.
func (s *stack) inflightInRedis(t *testing.T, key string) int {
	t.Helper()
	fields, err := s.redis.HGetAll(t.Context(), "{"+key+"}:inflight").Result()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, v := range fields {
		c, _ := strconv.Atoi(v)
		n += c
	}
	return n
}

// backendOf sends GET / and returns the X-Backend of a 200, or fails.
func backendOf(t *testing.T, client *http.Client, url string) string {
	t.Helper()
	resp, err := client.Get(url + "/")
	if err != nil {
		t.Error(err)
		return ""
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET %s/: got %d, want 200", url, resp.StatusCode)
	}
	return resp.Header.Get("X-Backend")
}

// Two least-conn dispatchers share their counts through Redis: while two
// slow requests are in flight through the first, a request through the
// second goes to the third backend, round after round.
func TestLeastConnAcrossDispatchers(t *testing.T) {
	s := startStack(t)
	names := []string{"slow1", "slow2", "slow3"}
	var list []string
	for i, name := range names {
		port := strconv.Itoa(5100 + i)
		s.startBackend(t, name, port, map[string]string{"LATENCY": "2s"})
		list = append(list, "http://"+name+":"+port)
	}
	env := map[string]string{"REDIS_KEY": "lc", "MODE": "proxy", "STRATEGY": "least-conn"}
	if code, out := s.seederEnv(t, env, append([]string{"seed"}, list...)...); code != 0 {
		t.Fatalf("seeder seed: exit %d\n%s", code, out)
	}
	first := endpoint(t, s.startDispatcher(t, env), "80/tcp")
	second := endpoint(t, s.startDispatcher(t, env), "80/tcp")
	client := &http.Client{Timeout: 30 * time.Second}

	for round := range 5 {
		var wg sync.WaitGroup
		held := make([]string, 2)
		for i := range held {
			wg.Go(func() { held[i] = backendOf(t, client, first) })
		}
		waitFor(t, "two requests in flight through the first dispatcher", func() bool { return s.inflightInRedis(t, "lc") == 2 })
		third := backendOf(t, client, second)
		wg.Wait()
		if held[0] == held[1] || third == held[0] || third == held[1] || third == "" {
			t.Errorf("round %d: the first dispatcher's two requests went to %q and %q, the second's to %q; want three different backends",
				round+1, held[0], held[1], third)
		}
		waitFor(t, "the counts are released", func() bool { return s.inflightInRedis(t, "lc") == 0 })
	}
}

// A slow backend (LATENCY=300ms) among two fast ones: round robin sends it
// its exact third, while least-conn and p2c send it under 10% of the
// requests of 20 concurrent clients, because its requests stay in flight.
func TestSlowBackendIsAvoided(t *testing.T) {
	s := startStack(t)
	s.startBackend(t, "slow", "5003", map[string]string{"LATENCY": "300ms"})
	list := []string{"http://backend1:5000", "http://backend2:5001", "http://slow:5003"}
	for _, tc := range []struct {
		strategy string
		check    func(t *testing.T, slow, total int)
	}{
		{"round-robin", func(t *testing.T, slow, total int) {
			if slow != total/3 {
				t.Errorf("round-robin: the slow backend answered %d of %d, want exactly a third", slow, total)
			}
		}},
		{"least-conn", lessThanTenPercent},
		{"p2c", lessThanTenPercent},
	} {
		t.Run(tc.strategy, func(t *testing.T) {
			key := "slow-" + tc.strategy
			env := map[string]string{"REDIS_KEY": key, "MODE": "proxy", "STRATEGY": tc.strategy}
			if code, out := s.seederEnv(t, env, append([]string{"seed"}, list...)...); code != 0 {
				t.Fatalf("seeder seed: exit %d\n%s", code, out)
			}
			url := endpoint(t, s.startDispatcher(t, env), "80/tcp")
			client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 20}}
			var mu sync.Mutex
			counts := map[string]int{}
			var wg sync.WaitGroup
			for range 20 {
				wg.Go(func() {
					for range 30 {
						b := backendOf(t, client, url)
						mu.Lock()
						counts[b]++
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			total := counts["backend1"] + counts["backend2"] + counts["slow"]
			t.Logf("%s: %v", tc.strategy, counts)
			if total != 600 {
				t.Fatalf("%s: %d of 600 requests answered by the list's backends (%v)", tc.strategy, total, counts)
			}
			tc.check(t, counts["slow"], total)
		})
	}
	t.Run("switch under load", func(t *testing.T) { switchUnderLoad(t, s, list) })
}

// switchUnderLoad: two proxying dispatchers run round robin under load from
// 20 clients; `seeder strategy least-conn` switches both within a second,
// the slow backend's share of new requests falls under 10% within 5 s, and
// no request fails across the switch.
func switchUnderLoad(t *testing.T, s *stack, list []string) {
	env := map[string]string{"REDIS_KEY": "switch", "MODE": "proxy", "STRATEGY": "round-robin"}
	if code, out := s.seederEnv(t, env, append([]string{"seed"}, list...)...); code != 0 {
		t.Fatalf("seeder seed: exit %d\n%s", code, out)
	}
	var mains, admins []string
	for range 2 {
		d := s.startDispatcher(t, env)
		mains, admins = append(mains, endpoint(t, d, "80/tcp")), append(admins, endpoint(t, d, "8080/tcp"))
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 20}}

	// Who reports least-conn first, and when, polled every 20 ms.
	switched := make([]time.Time, len(admins))
	stopPolling := make(chan struct{})
	var polling sync.WaitGroup
	for i, a := range admins {
		polling.Go(func() {
			for {
				select {
				case <-stopPolling:
					return
				case <-time.After(20 * time.Millisecond):
				}
				if strategyInfo(a) == "least-conn" {
					switched[i] = time.Now()
					return
				}
			}
		})
	}
	defer func() { close(stopPolling); polling.Wait() }()

	type answer struct {
		at      time.Time
		backend string
		err     error
	}
	var mu sync.Mutex
	var answers []answer
	stop := make(chan struct{})
	var clients sync.WaitGroup
	for c := range 20 {
		clients.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				at := time.Now()
				resp, err := client.Get(mains[(c+i)%2] + "/")
				a := answer{at: at, err: err}
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					a.backend = resp.Header.Get("X-Backend")
					if resp.StatusCode != http.StatusOK {
						a.err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				mu.Lock()
				answers = append(answers, a)
				mu.Unlock()
			}
		})
	}
	time.Sleep(2 * time.Second)
	if code, out := s.seederEnv(t, env, "strategy", "least-conn"); code != 0 {
		close(stop)
		clients.Wait()
		t.Fatalf("seeder strategy least-conn: exit %d\n%s", code, out)
	}
	raw, err := s.redis.Get(t.Context(), "{switch}:strategy").Result()
	var stored struct{ At time.Time }
	if err != nil || json.Unmarshal([]byte(raw), &stored) != nil {
		t.Fatalf("the stored strategy: %q, %v", raw, err)
	}
	time.Sleep(time.Until(stored.At.Add(6 * time.Second)))
	close(stop)
	clients.Wait()

	for i, at := range switched {
		if at.IsZero() {
			t.Errorf("dispatcher %d never reported spread_strategy_info{strategy=\"least-conn\"}", i+1)
		} else if d := at.Sub(stored.At); d > time.Second {
			t.Errorf("dispatcher %d reported least-conn %v after it was stored, want within 1 s", i+1, d.Round(time.Millisecond))
		} else {
			t.Logf("dispatcher %d reported least-conn %v after it was stored", i+1, d.Round(time.Millisecond))
		}
	}
	share := func(from, to time.Time) (slow, all int) {
		for _, a := range answers {
			if a.err == nil && !a.at.Before(from) && a.at.Before(to) {
				all++
				if a.backend == "slow" {
					slow++
				}
			}
		}
		return
	}
	failed := 0
	for _, a := range answers {
		if a.err != nil {
			failed++
			if failed <= 3 {
				t.Errorf("a request failed across the switch: %v", a.err)
			}
		}
	}
	before, beforeAll := share(stored.At.Add(-2*time.Second), stored.At)
	after, afterAll := share(stored.At.Add(4*time.Second), stored.At.Add(5*time.Second))
	t.Logf("%d requests, %d failed; the slow backend got %d of %d in the 2 s before, %d of %d in the fifth second after",
		len(answers), failed, before, beforeAll, after, afterAll)
	if failed > 0 {
		t.Errorf("%d of %d requests failed across the switch, want 0", failed, len(answers))
	}
	if afterAll < 20 || after*10 >= afterAll {
		t.Errorf("the fifth second after the switch: the slow backend got %d of %d new requests, want under 10%%", after, afterAll)
	}
	if beforeAll < 20 || before*4 < beforeAll {
		t.Errorf("round robin before the switch: the slow backend got %d of %d, want about a third", before, beforeAll)
	}
}

// strategyInfo is the strategy that admin's spread_strategy_info names, or
// "" if it cannot tell.
func strategyInfo(admin string) string {
	resp, err := http.Get(admin + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, `spread_strategy_info{mode="proxy",strategy="`); ok {
			name, _, _ := strings.Cut(rest, `"`)
			return name
		}
	}
	return ""
}

func lessThanTenPercent(t *testing.T, slow, total int) {
	t.Helper()
	if slow*10 >= total {
		t.Errorf("the slow backend answered %d of %d requests, want under 10%%", slow, total)
	}
}
