package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spreadlb/spread/internal/localrun"
)

// binaries are the programs under test, built from this checkout.
type binaries struct{ backend, dispatcher, seeder string }

// build compiles the backend, the dispatcher and the seeder of the checkout
// at root into dir, each module on its own (GOWORK=off), as `make build`
// and the images do.
func build(ctx context.Context, root, dir string) (binaries, error) {
	b := binaries{backend: filepath.Join(dir, "backend"), dispatcher: filepath.Join(dir, "dispatcher"),
		seeder: filepath.Join(dir, "seeder")}
	return b, localrun.Build(ctx, root, dir, "backend", "dispatcher", "seeder")
}

// findRoot returns the checkout's top directory: the nearest directory at
// or above the working directory that holds go.work and backend/.
func findRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if isFile(filepath.Join(dir, "go.work")) && isFile(filepath.Join(dir, "backend", "go.mod")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run the lab inside the spread checkout: no directory above the working directory holds go.work and backend/")
		}
		dir = parent
	}
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// stack is redis-server and the pool of backends, running, with the list
// seeded; dispatchers come and go, one per strategy.
type stack struct {
	bins      binaries
	procs     localrun.Procs // their logs in the temporary directory
	redisURL  string
	redisAddr string           // host:port
	backends  []runningBackend // in the order of the scenario
}

// runningBackend is a backend of the pool and the URLs that reach it.
type runningBackend struct {
	backendSpec
	url     string // http://127.0.0.1:port, as seeded in the list
	control string // with CONTROL=1, http://127.0.0.1:CONTROL_PORT (POST /control, GET /stats); else ""
}

// startStack starts redis-server and a backend for each spec, and seeds the
// list with their URLs. With control, each backend also runs with
// CONTROL=1 on a CONTROL_PORT of its own, so that its knobs can change
// while it runs (the console's).
func startStack(ctx context.Context, dir string, bins binaries, specs []backendSpec, control bool) (*stack, error) {
	s := &stack{bins: bins, procs: localrun.Procs{Dir: dir}}
	var err error
	if s.redisAddr, err = s.procs.StartRedis(ctx); err != nil {
		return s, err
	}
	s.redisURL = "redis://" + s.redisAddr + "/0"
	for _, b := range specs {
		port, err := localrun.FreePort()
		if err != nil {
			return s, err
		}
		env := append(b.env(), "PORT="+strconv.Itoa(port))
		rb := runningBackend{backendSpec: b, url: fmt.Sprintf("http://127.0.0.1:%d", port)}
		if control {
			cport, err := localrun.FreePort()
			if err != nil {
				return s, err
			}
			env = append(env, "CONTROL=1", "CONTROL_PORT="+strconv.Itoa(cport))
			rb.control = fmt.Sprintf("http://127.0.0.1:%d", cport)
		}
		if _, err := s.procs.Start(ctx, b.Name, env, bins.backend); err != nil {
			return s, err
		}
		if err := localrun.WaitFor(ctx, 2*time.Second, localrun.HTTPOK(rb.url+"/healthz")); err != nil {
			return s, fmt.Errorf("backend %s did not answer: %w (log: %s)", b.Name, err, s.procs.LogTail(b.Name))
		}
		s.backends = append(s.backends, rb)
	}
	// The seeder writes the list as a user would; it also waits out
	// redis-server's start.
	urls := make([]string, len(s.backends))
	for i, b := range s.backends {
		urls[i] = b.url
	}
	if err := localrun.WaitFor(ctx, 2*time.Second, func(ctx context.Context) error {
		cmd := exec.CommandContext(ctx, bins.seeder, append([]string{"seed"}, urls...)...)
		cmd.Env = append(os.Environ(), "REDIS_URL="+s.redisURL)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("seeder seed: %w: %s", err, out)
		}
		return nil
	}); err != nil {
		return s, err
	}
	return s, nil
}

// names are the backends' names, in the scenario's order.
func (s *stack) names() []string {
	n := make([]string, len(s.backends))
	for i, b := range s.backends {
		n[i] = b.Name
	}
	return n
}

// dispatcher is a dispatcher in MODE=proxy with one strategy.
type dispatcher struct {
	proc  *localrun.Proc
	url   string // the main port: where the load goes
	admin string // the admin port: /readyz, /metrics
}

// startDispatcher starts a proxying dispatcher with the lab strategy
// labelled label (its STRATEGY and settings), and
// waits until it is ready.
func (s *stack) startDispatcher(ctx context.Context, label string) (*dispatcher, error) {
	ls, ok := lookupStrategy(label)
	if !ok {
		return nil, fmt.Errorf("no strategy or variant %q", label)
	}
	env := []string{"STRATEGY=" + ls.strategy,
		// The backends stay up; the lab is about choosing among healthy ones.
		"HEALTH_INTERVAL=0"}
	for _, k := range slices.Sorted(maps.Keys(ls.settings)) {
		env = append(env, k+"="+ls.settings[k])
	}
	return s.startProxy(ctx, "dispatcher-"+label, env)
}

// startProxy starts a dispatcher named name in MODE=proxy on the stack's
// list, with env on top of the lab's own settings, and waits until it is
// ready.
func (s *stack) startProxy(ctx context.Context, name string, env []string) (*dispatcher, error) {
	port, err := localrun.FreePort()
	if err != nil {
		return nil, err
	}
	adminPort, err := localrun.FreePort()
	if err != nil {
		return nil, err
	}
	env = append([]string{"PORT=" + strconv.Itoa(port), "ADMIN_PORT=" + strconv.Itoa(adminPort),
		"REDIS_URL=" + s.redisURL, "MODE=proxy",
		// Every request carries its user; STRATEGY=hash hashes on it.
		"HASH_KEY=" + hashKey,
		// No log line per request: writing them would cost CPU that the
		// load needs, alike for every strategy.
		"LOG_LEVEL=warn",
		// No outlier ejection: the lab shows what each strategy does by
		// itself with a slow or failing backend.
		"EJECT_AFTER=0"}, env...)
	p, err := s.procs.Start(ctx, name, env, s.bins.dispatcher)
	if err != nil {
		return nil, err
	}
	d := &dispatcher{proc: p, url: fmt.Sprintf("http://127.0.0.1:%d/", port), admin: fmt.Sprintf("http://127.0.0.1:%d", adminPort)}
	if err := localrun.WaitFor(ctx, 2*time.Second, localrun.HTTPOK(d.admin+"/readyz")); err != nil {
		return d, fmt.Errorf("%s: dispatcher not ready: %w (log: %s)", name, err, s.procs.LogTail(name))
	}
	return d, nil
}

// checkProxy sends one request through d and makes sure a backend of the
// pool answered it: a fast error page is no result.
func (s *stack) checkProxy(ctx context.Context, d *dispatcher) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, d.url, nil)
	req.Header.Set(userHeader, "check")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	name := resp.Header.Get("X-Backend")
	if resp.StatusCode != http.StatusOK || !slices.Contains(s.names(), name) {
		return fmt.Errorf("the dispatcher answered %s with X-Backend %q; want 200 from one of %q (is MODE=proxy supported?)",
			resp.Status, name, s.names())
	}
	return nil
}

// drain waits until no backend has a request in service or queued, so that
// one strategy's backlog does not slow the next one down. A backend without
// GET /stats (404) has no queue to wait for.
func (s *stack) drain(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for _, b := range s.backends {
		for {
			busy, err := b.busy(ctx)
			if err != nil {
				return fmt.Errorf("backend %s: %w", b.Name, err)
			}
			if busy == 0 {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("backend %s still has %d requests in service or queued after 30 s", b.Name, busy)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

// busy is how many requests the backend has in service or queued.
func (b runningBackend) busy(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.url+"/stats", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotFound:
		return 0, nil
	case http.StatusOK:
	default:
		return 0, fmt.Errorf("GET /stats: %s", resp.Status)
	}
	var st fullStats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return 0, fmt.Errorf("GET /stats: %w", err)
	}
	return st.InService + st.Queued, nil
}

// stop stops every program still running, last started first.
func (s *stack) stop() { s.procs.Stop() }

// redisRoundTrips returns how many reads redis-server has processed since it
// started (INFO stats, total_reads_processed): one per round trip, whether
// the client sent one command, a pipeline or a script (whose inner calls
// total_commands_processed would count one by one). It is what every
// dispatcher costs Redis, on the request path and off it. It speaks RESP
// over one short connection, which is all it needs of a Redis client.
func (s *stack) redisRoundTrips(ctx context.Context) (int64, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", s.redisAddr)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, "*2\r\n$4\r\nINFO\r\n$5\r\nstats\r\n"); err != nil {
		return 0, err
	}
	r := bufio.NewReader(conn)
	head, err := r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(head, "$")))
	if !strings.HasPrefix(head, "$") || err != nil || n < 0 {
		return 0, fmt.Errorf("INFO stats: unexpected reply %q", head)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "total_reads_processed:"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, errors.New("INFO stats: no total_reads_processed (Redis 6 or later has it)")
}
