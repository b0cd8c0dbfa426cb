// Command bench measures the dispatcher against its own baseline and
// against the proxies users know. It runs redis-server and three backends
// as local processes, then, each in its own process on a loopback port,
// the contestants of two groups:
//
//   - redirect: dispatchers with ROTATION=redis and ROTATION=local (the
//     in-process baseline), HAProxy (balance roundrobin, server ... redir)
//     and nginx (return 302 to one fixed backend);
//   - proxy: a dispatcher with MODE=proxy and ROTATION=redis, Caddy
//     (reverse_proxy, lb_policy round_robin), HAProxy (balance roundrobin)
//     and nginx (proxy_pass with upstream keepalive);
//   - long (only when asked for, -modes long): proxying dispatchers with
//     least-conn and with round robin, each on a list of 3 entries and on
//     one of 10,000 entries over the same three backends, each with a
//     dashboard open (long.go).
//
// The peers (HAProxy, nginx, Caddy) run where they are installed; the
// others are named and left out. Load goes to one contestant at a time,
// taking turns slice by slice (2 s), so that all are compared on the same
// machine at the same time. docs/peers.md shows the peers' configurations
// and how to read the output.
//
// Usage (or `make bench`; `make bench BENCH_FLAGS="-modes long"` for the
// long lists):
//
//	go run . [-duration 6s] [-slice 2s] [-rounds 3] [-conns 64] [-loadgen auto|wrk|go]
//	         [-modes redirect,proxy|long] [-peers auto|none|haproxy,nginx,caddy] [-gomaxprocs 1]
//
// It prints, per round and contestant: requests/s, p50 and p99 latency,
// peak RSS, for ROTATION=redis the LMOVE calls per request served (from
// Redis's INFO commandstats), and for a dispatcher the bytes Redis received
// per request served (INFO stats); then, per contestant, the medians of the
// rounds and the ratios of its group's dispatcher to it; then whether the
// project's targets are met. It exits 1 if a target is missed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spreadlb/spread/internal/localrun"
	"github.com/spreadlb/spread/internal/store"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type options struct {
	duration, slice, warmup time.Duration
	rounds, conns           int
	loadgen                 string
	modes, peers            string
	gomaxprocs              int
	keep                    bool
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.DurationVar(&o.duration, "duration", 6*time.Second, "measured load per contestant and round")
	fs.DurationVar(&o.slice, "slice", 2*time.Second, "the contestants take turns under load every slice")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured load at each contestant before the first round")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds; each measures every contestant for -duration, slice by slice")
	fs.IntVar(&o.conns, "conns", 64, "concurrent connections")
	fs.StringVar(&o.loadgen, "loadgen", "auto", "auto (wrk if installed, else go), wrk or go")
	fs.StringVar(&o.modes, "modes", "redirect,proxy", "groups to run: redirect, proxy or both, comma-separated")
	fs.StringVar(&o.peers, "peers", "auto", "auto (the installed ones), none, or a comma-separated list of haproxy, nginx and caddy")
	fs.IntVar(&o.gomaxprocs, "gomaxprocs", 1, "GOMAXPROCS of the dispatchers and Caddy, as nginx and HAProxy get one worker; 0: Go's default (every core)")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory (binaries, configurations, logs)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.rounds < 1 || o.conns < 1 || o.duration < time.Second || o.slice < time.Second || o.gomaxprocs < 0 {
		return errors.New("want -rounds ≥ 1, -conns ≥ 1, -duration ≥ 1s, -slice ≥ 1s and -gomaxprocs ≥ 0")
	}
	groups, err := parseModes(o.modes)
	if err != nil {
		return err
	}
	peers, missing, err := choosePeers(o.peers, lookPeer)
	if err != nil {
		return err
	}
	load, err := pickLoader(o.loadgen)
	if err != nil {
		return err
	}
	cs := contestants(groups, peers)

	dir, err := os.MkdirTemp("", "spread-bench")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Fprintln(stdout, "temporary directory:", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	bins, err := build(ctx, dir)
	if err != nil {
		return err
	}
	env, err := startStack(ctx, dir, bins, groups)
	defer env.stop()
	if err != nil {
		return err
	}
	for _, c := range cs {
		if c.peer == "" {
			err = env.startDispatcher(ctx, bins, c, o.gomaxprocs)
		} else {
			err = env.startPeer(ctx, dir, peers[c.peer], c, o.gomaxprocs)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		if o.warmup > 0 {
			if _, err := load.run(ctx, c.url, o.conns, o.warmup); err != nil {
				return fmt.Errorf("%s: warm-up: %w", c.name, err)
			}
		}
	}

	nslices := max(1, int((o.duration+o.slice-1)/o.slice))
	procs := "Go's default GOMAXPROCS"
	if o.gomaxprocs > 0 {
		procs = fmt.Sprintf("GOMAXPROCS=%d", o.gomaxprocs)
	}
	fmt.Fprintf(stdout, "machine: %s, %d CPUs, %s; load: %s, %d connections, %d × %s per contestant and round, contestants taking turns; dispatchers and Caddy with %s\n",
		cpuModel(), runtime.NumCPU(), runtime.Version(), load.name(), o.conns, nslices, o.slice, procs)
	if missing != "" {
		fmt.Fprintln(stdout, missing)
	}
	fmt.Fprintln(stdout)
	var runs []measurement
	var cycles []map[string]float64 // each contestant's requests/s in each turn of all of them
	const row = "%5v  %-36v  %10v  %9v  %9v  %9v  %13v  %11v  %6v\n"
	fmt.Fprintf(stdout, row, "round", "contestant", "requests/s", "p50", "p99", "peak RSS", "LMOVE/request", "Redis B/req", "errors")
	for round := 1; round <= o.rounds; round++ {
		acc := map[string]*accum{}
		for _, c := range cs {
			acc[c.key] = &accum{}
		}
		for range nslices {
			rps := map[string]float64{}
			for _, c := range turnOrder(cs, len(cycles)) {
				r, lmoves, redisIn, err := env.measure(ctx, c, load, o.conns, o.slice)
				if err != nil {
					return fmt.Errorf("round %d, %s: %w", round, c.name, err)
				}
				acc[c.key].add(r, lmoves, redisIn)
				rps[c.key] = r.rps
			}
			cycles = append(cycles, rps)
		}
		for _, c := range cs {
			m := acc[c.key].measurement(round, c.key)
			if m.rssMiB, err = peakRSS(c.pid); err != nil {
				return err
			}
			runs = append(runs, m)
			lmove, redisIn := "-", "-"
			if c.lmove {
				lmove = fmt.Sprintf("%.2f", m.lmovePerRequest)
			}
			if c.peer == "" {
				redisIn = fmt.Sprintf("%.0f", m.redisBytesPerRequest)
			}
			fmt.Fprintf(stdout, row, round, c.name, fmt.Sprintf("%.0f", m.rps), ms(m.p50), ms(m.p99),
				fmt.Sprintf("%.1f MiB", m.rssMiB), lmove, redisIn, m.errors)
		}
	}
	idle, err := idleDashboards(ctx, cs)
	if err != nil {
		return err
	}
	return report(stdout, cs, runs, cycles, idle)
}

// turnOrder is the order in which the contestants take their slices in the
// n-th turn: each turn starts one further along, so that none always
// follows the same one.
func turnOrder(cs []*contestant, n int) []*contestant {
	k := n % len(cs)
	return slices.Concat(cs[k:], cs[:k])
}

func pickLoader(name string) (loader, error) {
	_, err := exec.LookPath("wrk")
	switch {
	case name == "wrk" && err != nil:
		return nil, errors.New("-loadgen wrk: wrk is not installed (Debian: apt-get install wrk)")
	case name == "wrk", name == "auto" && err == nil:
		return wrk{threads: 2}, nil
	case name == "go", name == "auto":
		return goLoad{}, nil
	}
	return nil, fmt.Errorf("-loadgen %q: want auto, wrk or go", name)
}

// binaries are the programs under test, built from this checkout.
type binaries struct{ backend, dispatcher string }

// build compiles the backend and the dispatcher of this checkout (the
// bench runs in bench/) into dir.
func build(ctx context.Context, dir string) (binaries, error) {
	b := binaries{backend: filepath.Join(dir, "backend"), dispatcher: filepath.Join(dir, "dispatcher")}
	return b, localrun.Build(ctx, "..", dir, "backend", "dispatcher")
}

// stack is redis-server and three backends, running, and the contestants
// started on them; for the long group, three more backends of its own
// (long.go).
type stack struct {
	procs        localrun.Procs // their logs in the temporary directory
	redisURL     string
	redis        *redis.Client
	backends     []string // base URLs, http://127.0.0.1:port
	names        []string // what each backend sends in X-Backend
	longBackends []string // the long group's
	longNames    []string
	closers      []func() error // what stop closes besides the processes
}

func startStack(ctx context.Context, dir string, bins binaries, groups []string) (*stack, error) {
	s := &stack{procs: localrun.Procs{Dir: dir}}
	redisAddr, err := s.procs.StartRedis(ctx)
	if err != nil {
		return s, err
	}
	s.redisURL = "redis://" + redisAddr + "/0"
	s.redis = redis.NewClient(&redis.Options{Addr: redisAddr})
	if err := localrun.WaitFor(ctx, time.Second, func(ctx context.Context) error { return s.redis.Ping(ctx).Err() }); err != nil {
		return s, fmt.Errorf("redis-server did not answer: %w", err)
	}
	for i := range 3 {
		port, err := localrun.FreePort()
		if err != nil {
			return s, err
		}
		name := fmt.Sprintf("backend%d", i+1)
		if _, err := s.procs.Start(ctx, name, []string{"PORT=" + strconv.Itoa(port), "BACKEND_NAME=" + name}, bins.backend); err != nil {
			return s, err
		}
		u := fmt.Sprintf("http://127.0.0.1:%d", port)
		if err := localrun.WaitFor(ctx, time.Second, localrun.HTTPOK(u+"/healthz")); err != nil {
			return s, fmt.Errorf("%s did not answer: %w", name, err)
		}
		s.backends, s.names = append(s.backends, u), append(s.names, name)
	}
	if err := store.NewStore(s.redis, "servers", nil).Replace(ctx, s.backends); err != nil {
		return s, err
	}
	if slices.Contains(groups, groupLong) {
		if err := s.startLongBackends(ctx); err != nil {
			return s, err
		}
	}
	return s, nil
}

// stop stops every program it started, last first.
func (s *stack) stop() {
	s.procs.Stop()
	for _, c := range s.closers {
		c()
	}
	if s.redis != nil {
		s.redis.Close()
	}
}

// accum adds up the slices of one contestant in one round.
type accum struct {
	requests, errors, lmoves, redisIn int64
	seconds                           float64
	p50, p99                          []time.Duration
}

func (t *accum) add(r result, lmoves, redisIn int64) {
	t.requests += r.requests
	t.errors += r.errors
	t.lmoves += lmoves
	t.redisIn += redisIn
	if r.rps > 0 {
		t.seconds += float64(r.requests) / r.rps
	}
	t.p50, t.p99 = append(t.p50, r.p50), append(t.p99, r.p99)
}

// measurement is the round's figure for the contestant: requests/s over all its
// slices, and the median of the slices' p50 and p99.
func (t *accum) measurement(round int, key string) measurement {
	m := measurement{round: round, key: key, result: result{requests: t.requests, errors: t.errors,
		p50: median(t.p50), p99: median(t.p99)}}
	if t.seconds > 0 {
		m.rps = float64(t.requests) / t.seconds
	}
	m.lmovePerRequest = float64(t.lmoves) / float64(max(t.requests, 1))
	m.redisBytesPerRequest = float64(t.redisIn) / float64(max(t.requests, 1))
	return m
}

// measurement is one contestant in one round.
type measurement struct {
	round int
	key   string // the contestant's
	result
	rssMiB               float64
	lmovePerRequest      float64
	redisBytesPerRequest float64 // bytes Redis received per request served
}

// peakRSS is the high-water resident set (VmHWM) of the process and its
// children (nginx's worker under its master), in MiB: the sum of their
// peaks, so at most that much was resident at once.
func peakRSS(pid int) (float64, error) {
	total, err := vmHWM(pid)
	if err != nil {
		return 0, err
	}
	children, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	for _, f := range strings.Fields(string(children)) {
		if child, err := strconv.Atoi(f); err == nil {
			if mib, err := vmHWM(child); err == nil {
				total += mib
			}
		}
	}
	return total, nil
}

func vmHWM(pid int) (float64, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("peak RSS (needs Linux /proc): %w", err)
	}
	for line := range strings.Lines(string(status)) {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmHWM:" {
			kb, err := strconv.ParseFloat(f[1], 64)
			return kb / 1024, err
		}
	}
	return 0, errors.New("no VmHWM in /proc status")
}

// median of v; zero for none.
func median[T int64 | float64 | time.Duration](v []T) T {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}
