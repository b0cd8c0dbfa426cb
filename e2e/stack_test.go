package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"
)

// stack is Redis, three backends and a dispatcher on one Docker network,
// as compose.yaml runs them, with the addresses a client on this host uses.
type stack struct {
	network    string
	redis      *redis.Client     // Redis's published port, to look at the list as redis-cli would
	backends   []string          // URLs of the backends as this host reaches them, in seed order
	names      map[string]string // backend URL -> the name it sends in X-Backend
	probes     []string          // -probe flags for the seeder: each backend URL = the address the dispatcher reaches it by
	dispatcher string            // http://host:port of the dispatcher's main port
	admin      string            // http://host:port of its admin port

	opts      stackOptions
	redisC    testcontainers.Container
	backendCs []testcontainers.Container // in seed order
	dispatchC testcontainers.Container   // the dispatcher at s.dispatcher
}

// stackOptions change what startStackWith starts.
type stackOptions struct {
	// redisCmd replaces the Redis image's command (nil: the image's own).
	redisCmd []string
	// fixedPorts publishes Redis and the backends on host ports chosen once,
	// so that they keep them when stopped and started again (Docker gives
	// an ephemeral port anew at each start).
	fixedPorts bool
	// dispatcherEnv is added to the environment of every dispatcher.
	dispatcherEnv map[string]string
}

const redisURL = "redis://redis:6379/0" // inside the network

// noFollow sees redirects instead of following them.
var noFollow = &http.Client{
	Timeout:       10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

func start(t *testing.T, req testcontainers.ContainerRequest) testcontainers.Container {
	t.Helper()
	c, err := testcontainers.GenericContainer(t.Context(), testcontainers.GenericContainerRequest{
		ContainerRequest: req, Started: true,
	})
	testcontainers.CleanupContainer(t, c)
	if err != nil {
		t.Fatalf("start %s: %v", req.Image, err)
	}
	return c
}

func endpoint(t *testing.T, c testcontainers.Container, port string) string {
	t.Helper()
	ep, err := c.PortEndpoint(t.Context(), port, "http")
	if err != nil {
		t.Fatal(err)
	}
	return ep
}

func startStack(t *testing.T) *stack { return startStackWith(t, stackOptions{}) }

func startStackWith(t *testing.T, opts stackOptions) *stack {
	t.Helper()
	ctx := t.Context()
	nw, err := network.New(ctx)
	testcontainers.CleanupNetwork(t, nw)
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{network: nw.Name, names: map[string]string{}, opts: opts}

	s.redisC = start(t, testcontainers.ContainerRequest{
		Image:              redisImage(),
		Cmd:                opts.redisCmd,
		ExposedPorts:       []string{"6379/tcp"},
		HostConfigModifier: fixedPort(t, opts.fixedPorts, "6379/tcp"),
		Networks:           []string{nw.Name},
		NetworkAliases:     map[string][]string{nw.Name: {"redis"}},
		WaitingFor:         wait.ForLog("Ready to accept connections").WithStartupTimeout(time.Minute),
	})
	addr, err := s.redisC.PortEndpoint(ctx, "6379/tcp", "")
	if err != nil {
		t.Fatal(err)
	}
	s.redis = redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { s.redis.Close() })

	for i, name := range []string{"backend1", "backend2", "backend3"} {
		port := []string{"5000", "5001", "5002"}[i]
		bc := start(t, testcontainers.ContainerRequest{
			Image:              images["backend"],
			Env:                map[string]string{"PORT": port, "BACKEND_NAME": name},
			ExposedPorts:       []string{port + "/tcp"},
			HostConfigModifier: fixedPort(t, opts.fixedPorts, port+"/tcp"),
			Networks:           []string{nw.Name},
			NetworkAliases:     map[string][]string{nw.Name: {name}},
			WaitingFor:         wait.ForHTTP("/healthz").WithPort(port + "/tcp").WithStartupTimeout(time.Minute),
		})
		u := endpoint(t, bc, port+"/tcp")
		s.backends = append(s.backends, u)
		s.backendCs = append(s.backendCs, bc)
		s.names[u] = name
		// The entries are this host's addresses of the backends; the
		// dispatcher's health checks reach them by name on the network.
		s.probes = append(s.probes, "-probe="+u+"=http://"+name+":"+port)
	}

	if code, logs := s.seeder(t, slices.Concat([]string{"seed"}, s.probes, s.backends)...); code != 0 {
		t.Fatalf("seeder seed: exit %d\n%s", code, logs)
	}
	s.dispatchC = s.startDispatcher(t, nil)
	s.dispatcher, s.admin = endpoint(t, s.dispatchC, "80/tcp"), endpoint(t, s.dispatchC, "8080/tcp")
	return s
}

// startDispatcher starts a dispatcher on the stack's network with extra
// environment on top of REDIS_URL.
func (s *stack) startDispatcher(t *testing.T, env map[string]string) testcontainers.Container {
	t.Helper()
	e := map[string]string{"REDIS_URL": redisURL}
	maps.Copy(e, s.opts.dispatcherEnv)
	maps.Copy(e, env)
	return start(t, testcontainers.ContainerRequest{
		Image:        images["dispatcher"],
		Env:          e,
		ExposedPorts: []string{"80/tcp", "8080/tcp"},
		Networks:     []string{s.network},
		WaitingFor:   wait.ForHTTP("/healthz").WithPort("8080/tcp").WithStartupTimeout(time.Minute),
	})
}

// seeder runs the seeder image once with args and returns its exit status
// and output.
func (s *stack) seeder(t *testing.T, args ...string) (int, string) {
	t.Helper()
	return s.seederEnv(t, nil, args...)
}

// seederEnv is seeder with extra environment on top of REDIS_URL.
func (s *stack) seederEnv(t *testing.T, env map[string]string, args ...string) (int, string) {
	t.Helper()
	e := map[string]string{"REDIS_URL": redisURL}
	for k, v := range env {
		e[k] = v
	}
	c := start(t, testcontainers.ContainerRequest{
		Image:      images["seeder"],
		Cmd:        args,
		Env:        e,
		Networks:   []string{s.network},
		WaitingFor: wait.ForExit().WithExitTimeout(time.Minute),
	})
	state, err := c.State(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	rc, err := c.Logs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	out, _ := io.ReadAll(rc)
	return state.ExitCode, string(out)
}

func (s *stack) list(t *testing.T) []string {
	t.Helper()
	got, err := s.redis.LRange(t.Context(), "servers", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func (s *stack) reseed(t *testing.T) {
	t.Helper()
	if code, logs := s.seeder(t, append([]string{"seed"}, s.backends...)...); code != 0 {
		t.Fatalf("seeder seed: exit %d\n%s", code, logs)
	}
}

// lmoveCalls is the number of LMOVE calls Redis has counted.
func (s *stack) lmoveCalls(t *testing.T) int64 {
	t.Helper()
	info, err := s.redis.Info(t.Context(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	_, after, found := strings.Cut(info, "cmdstat_lmove:calls=")
	if !found {
		return 0
	}
	n, _, _ := strings.Cut(after, ",")
	v, err := strconv.ParseInt(n, 10, 64)
	if err != nil {
		t.Fatalf("commandstats: %q: %v", n, err)
	}
	return v
}

// spread sends clients×each requests to url, clients at a time, and counts
// the redirects per backend (the Location without its path) and the
// requests that failed or were not redirected.
func spread(t *testing.T, url string, clients, each int) (counts map[string]int, failed int) {
	t.Helper()
	client := &http.Client{
		Timeout:       10 * time.Second,
		Transport:     &http.Transport{MaxIdleConnsPerHost: clients},
		CheckRedirect: noFollow.CheckRedirect,
	}
	var mu sync.Mutex
	counts = map[string]int{}
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for range each {
				resp, err := client.Get(url + "/")
				mu.Lock()
				if err != nil || resp.StatusCode != http.StatusFound {
					failed++
				} else {
					counts[strings.TrimSuffix(resp.Header.Get("Location"), "/")]++
				}
				mu.Unlock()
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		})
	}
	wg.Wait()
	return counts, failed
}

// get sends one request without following a redirect.
func get(t *testing.T, url string) (status int, location, body string) {
	t.Helper()
	resp, err := noFollow.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Location"), string(b)
}

// TestStack's subtests share one stack; each starts by seeding the list
// with the three backends, so that none depends on another's leftovers.
func TestStack(t *testing.T) {
	s := startStack(t)

	t.Run("30 requests cycle over the three backends, 10 each", func(t *testing.T) {
		s.reseed(t)
		counts := map[string]int{}
		var order []string
		for i := range 30 {
			status, loc, body := get(t, s.dispatcher+"/")
			if status != http.StatusFound {
				t.Fatalf("request %d: got %d %q, want 302", i, status, body)
			}
			backend := strings.TrimSuffix(loc, "/")
			if _, ok := s.names[backend]; !ok {
				t.Fatalf("request %d: Location %q is not one of the seeded backends %q", i, loc, s.backends)
			}
			counts[backend]++
			order = append(order, backend)
		}
		for _, b := range s.backends {
			if counts[b] != 10 {
				t.Errorf("%s (%s): got %d redirects, want 10 (all: %v)", s.names[b], b, counts[b], counts)
			}
		}
		for i := 3; i < len(order); i++ {
			if order[i] != order[i%3] {
				t.Errorf("request %d: got %s, want %s (the order repeats every 3)", i, s.names[order[i]], s.names[order[i%3]])
			}
		}
	})

	// 30 clients at once, 10 requests each: concurrent requests share Redis
	// round trips, yet each takes its own step, so the counts stay exact;
	// Redis counts one LMOVE per request. ROTATION=local spreads exactly
	// too, from its own snapshot, without a step in Redis.
	t.Run("300 concurrent requests give each backend exactly 100", func(t *testing.T) {
		s.reseed(t)
		local := s.startDispatcher(t, map[string]string{"ROTATION": "local"})
		for _, tc := range []struct {
			rotation, url string
			lmoves        int64
		}{
			{"redis", s.dispatcher, 300},
			{"local", endpoint(t, local, "80/tcp"), 0},
		} {
			before := s.lmoveCalls(t)
			counts, failed := spread(t, tc.url, 30, 10)
			if failed != 0 {
				t.Errorf("ROTATION=%s: %d of 300 requests failed", tc.rotation, failed)
			}
			for _, b := range s.backends {
				if counts[b] != 100 {
					t.Errorf("ROTATION=%s: %s got %d redirects, want 100 (all: %v)", tc.rotation, s.names[b], counts[b], counts)
				}
			}
			if n := s.lmoveCalls(t) - before; n != tc.lmoves {
				t.Errorf("ROTATION=%s: Redis counted %d LMOVE calls for 300 requests, want %d", tc.rotation, n, tc.lmoves)
			}
		}
	})

	t.Run("following a Location reaches the backend it names", func(t *testing.T) {
		s.reseed(t)
		seen := map[string]bool{}
		for i := range 3 {
			_, loc, _ := get(t, s.dispatcher+"/")
			resp, err := noFollow.Get(loc)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			want := s.names[strings.TrimSuffix(loc, "/")]
			if resp.StatusCode != 200 || string(body) != "Hello, World!" {
				t.Errorf("request %d: GET %s: got %d %q, want 200 %q", i, loc, resp.StatusCode, body, "Hello, World!")
			}
			if got := resp.Header.Get("X-Backend"); got != want {
				t.Errorf("request %d: GET %s: got X-Backend %q, want %q", i, loc, got, want)
			}
			seen[want] = true
		}
		if len(seen) != 3 {
			t.Errorf("three requests in a row reached %v, want all three backends", seen)
		}
	})

	t.Run("path and query are kept", func(t *testing.T) {
		s.reseed(t)
		status, loc, _ := get(t, s.dispatcher+"/whoami?x=1&y=two")
		if status != http.StatusFound {
			t.Fatalf("got %d, want 302", status)
		}
		backend, ok := strings.CutSuffix(loc, "/whoami?x=1&y=two")
		if _, known := s.names[backend]; !ok || !known {
			t.Fatalf("got Location %q, want a seeded backend + /whoami?x=1&y=two", loc)
		}
		resp, err := noFollow.Get(loc)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var got struct{ Backend, Method, Path, Query string }
		if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
			t.Fatal(err)
		}
		if got.Backend != s.names[backend] || got.Path != "/whoami" || got.Query != "x=1&y=two" {
			t.Errorf("the backend saw %+v, want %s, /whoami, x=1&y=two", got, s.names[backend])
		}
	})

	t.Run("REDIRECT_STATUS=307 keeps the method and body", func(t *testing.T) {
		s.reseed(t)
		dc := s.startDispatcher(t, map[string]string{"REDIRECT_STATUS": "307"})
		url := endpoint(t, dc, "80/tcp") + "/whoami?via=307"
		resp, err := http.Post(url, "text/plain", bytes.NewReader([]byte("payload"))) // follows the redirect
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var got struct{ Backend, Method, Path, Query, Body string }
		if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
			t.Fatal(err)
		}
		want := struct{ Backend, Method, Path, Query, Body string }{got.Backend, "POST", "/whoami", "via=307", "payload"}
		if got != want || !slices.Contains([]string{"backend1", "backend2", "backend3"}, got.Backend) {
			t.Errorf("the backend saw %+v, want %+v", got, want)
		}
		if resp.Header.Get("X-Backend") != got.Backend {
			t.Errorf("X-Backend %q does not match the backend that answered %q", resp.Header.Get("X-Backend"), got.Backend)
		}
	})

	t.Run("an empty list gives 503, never a redirect", func(t *testing.T) {
		if err := s.redis.Del(t.Context(), "servers").Err(); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			status, loc, body := get(t, s.dispatcher+"/")
			if status != http.StatusServiceUnavailable || loc != "" || !strings.Contains(body, "no backends") {
				t.Errorf("got %d Location=%q %q, want 503 with no Location, saying no backends", status, loc, body)
			}
		}
		if status, _, body := get(t, s.admin+"/readyz"); status != http.StatusServiceUnavailable {
			t.Errorf("/readyz: got %d %q, want 503", status, body)
		}
	})

	t.Run("an invalid entry is never redirected to", func(t *testing.T) {
		s.reseed(t)
		if err := s.redis.RPush(t.Context(), "servers", "javascript:alert(1)").Err(); err != nil {
			t.Fatal(err)
		}
		counts := map[string]int{}
		for range 9 {
			status, loc, _ := get(t, s.dispatcher+"/")
			counts[strings.TrimSuffix(loc, "/")]++
			if _, ok := s.names[strings.TrimSuffix(loc, "/")]; status != http.StatusFound || !ok {
				t.Errorf("got %d %q, want 302 to a seeded backend", status, loc)
			}
		}
		for _, b := range s.backends {
			if counts[b] != 3 {
				t.Errorf("%s: got %d of 9 redirects, want 3 (all: %v)", s.names[b], counts[b], counts)
			}
		}
	})

	t.Run("a bad URL makes the seeder exit 2 and leaves the list as it was", func(t *testing.T) {
		s.reseed(t)
		before := s.list(t)
		for _, args := range [][]string{
			{"seed", s.backends[0], "javascript:alert(1)"},
			{"seed", "http://user:pass@evil.example"},
			{"add", "//evil.example"},
		} {
			code, logs := s.seeder(t, args...)
			bad := args[len(args)-1]
			if code != 2 || !strings.Contains(logs, bad) {
				t.Errorf("seeder %q: got exit %d, output %q; want exit 2 naming %q", args, code, logs, bad)
			}
			if after := s.list(t); !slices.Equal(after, before) {
				t.Errorf("seeder %q changed the list: got %q, want %q", args, after, before)
			}
		}
	})

	t.Run("seeder list and watch show the rotation", func(t *testing.T) {
		s.reseed(t)
		code, out := s.seeder(t, "list")
		if want := strings.Join(s.backends, "\n") + "\n"; code != 0 || out != want {
			t.Errorf("seeder list: got exit %d %q, want %q", code, out, want)
		}
		code, out = s.seeder(t, "watch", "-n", "4", "-i", "0")
		// Each line: the step's address, then the tally of steps per
		// entry since the seed, sorted by entry.
		b := s.backends
		tally := map[string]int{}
		var want string
		for _, step := range []string{b[2], b[1], b[0], b[2]} {
			tally[step]++
			want += step + "  tally:"
			for _, e := range slices.Sorted(maps.Keys(tally)) {
				want += fmt.Sprintf(" %s=%d", e, tally[e])
			}
			want += "\n"
		}
		if code != 0 || out != want {
			t.Errorf("seeder watch -n 4: got exit %d %q, want %q", code, out, want)
		}
	})

}
