// Command bench measures what the shared rotation costs: it runs
// redis-server, three backends and two dispatchers, one with ROTATION=redis
// and one with ROTATION=local, as local processes, and drives redirect load
// at one dispatcher at a time, switching between them every slice (2 s), so
// that the two are compared on the same machine at the same time.
//
// Usage (or `make bench`):
//
//	go run . [-duration 10s] [-slice 2s] [-rounds 3] [-conns 64] [-loadgen auto|wrk|go]
//
// It prints, per round and as medians: requests/s, p50 and p99 latency, the
// dispatcher's peak RSS, and LMOVE calls per request served (from Redis's
// INFO commandstats); then the ratios redis/local and whether they meet the
// project's targets. It exits 1 if a target is missed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
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
	"github.com/spreadlb/spread/internal/redistest"
	"github.com/spreadlb/spread/internal/store"
)

// Targets, as ratios within one run (issue: exact shared rotation at
// in-process speed).
const (
	minThroughputRatio = 0.7 // redis rps / local rps, at least
	maxP99Ratio        = 2.0 // redis p99 / local p99, at most
	minLMOVEPerRequest = 1.0 // Redis counts a step for every request served
	maxRSSMiB          = 50  // dispatcher peak RSS, either mode
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
	keep                    bool
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured load per mode and round")
	fs.DurationVar(&o.slice, "slice", 2*time.Second, "load runs alternate between the modes every slice")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured load at each dispatcher before the first round")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds; each measures both modes for -duration, slice by slice")
	fs.IntVar(&o.conns, "conns", 64, "concurrent connections")
	fs.StringVar(&o.loadgen, "loadgen", "auto", "auto (wrk if installed, else go), wrk or go")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory (binaries, logs)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.rounds < 1 || o.conns < 1 || o.duration < time.Second || o.slice < time.Second {
		return errors.New("want -rounds ≥ 1, -conns ≥ 1, -duration ≥ 1s and -slice ≥ 1s")
	}
	load, err := pickLoader(o.loadgen)
	if err != nil {
		return err
	}

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
	env, err := startStack(ctx, dir, bins)
	defer env.stop()
	if err != nil {
		return err
	}

	modes := []string{"redis", "local"}
	ds := map[string]*dispatcher{}
	for _, mode := range modes {
		if ds[mode], err = env.startDispatcher(ctx, dir, bins, mode); err != nil {
			return fmt.Errorf("ROTATION=%s: %w", mode, err)
		}
		if o.warmup > 0 {
			if _, err := load.run(ctx, ds[mode].url, o.conns, o.warmup); err != nil {
				return fmt.Errorf("ROTATION=%s: warm-up: %w", mode, err)
			}
		}
	}

	nslices := max(1, int((o.duration+o.slice-1)/o.slice))
	fmt.Fprintf(stdout, "machine: %s, %d CPUs, %s; load: %s, %d connections, %d × %s per mode and round, modes alternating\n\n",
		cpuModel(), runtime.NumCPU(), runtime.Version(), load.name(), o.conns, nslices, o.slice)
	var runs []measurement
	var pairs []float64 // redis/local throughput of each pair of adjacent slices
	const row = "%5v  %-8v  %10v  %9v  %9v  %9v  %13v  %6v\n"
	fmt.Fprintf(stdout, row, "round", "ROTATION", "requests/s", "p50", "p99", "peak RSS", "LMOVE/request", "errors")
	for round := 1; round <= o.rounds; round++ {
		acc := map[string]*accum{}
		for _, mode := range modes {
			acc[mode] = &accum{}
		}
		for k := range nslices {
			order := modes
			if (round+k)%2 == 0 {
				order = []string{modes[1], modes[0]}
			}
			rps := map[string]float64{}
			for _, mode := range order {
				r, lmoves, err := env.measure(ctx, ds[mode], load, o.conns, o.slice)
				if err != nil {
					return fmt.Errorf("round %d, ROTATION=%s: %w", round, mode, err)
				}
				acc[mode].add(r, lmoves)
				rps[mode] = r.rps
			}
			pairs = append(pairs, rps["redis"]/rps["local"])
		}
		for _, mode := range modes {
			m := acc[mode].measurement(round, mode)
			if m.rssMiB, err = peakRSS(ds[mode].proc.cmd.Process.Pid); err != nil {
				return err
			}
			runs = append(runs, m)
			fmt.Fprintf(stdout, row, round, mode, fmt.Sprintf("%.0f", m.rps), ms(m.p50), ms(m.p99),
				fmt.Sprintf("%.1f MiB", m.rssMiB), fmt.Sprintf("%.2f", m.lmovePerRequest), m.errors)
		}
	}
	return report(stdout, runs, pairs)
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

func build(ctx context.Context, dir string) (binaries, error) {
	b := binaries{backend: filepath.Join(dir, "backend"), dispatcher: filepath.Join(dir, "dispatcher")}
	for _, p := range []struct{ pkg, out string }{{"backend", b.backend}, {"dispatcher", b.dispatcher}} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", p.out, ".")
		cmd.Dir = filepath.Join("..", p.pkg)
		cmd.Env = append(os.Environ(), "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			return b, fmt.Errorf("go build %s: %w\n%s", p.pkg, err, out)
		}
	}
	return b, nil
}

// stack is redis-server and three backends, running.
type stack struct {
	procs    []*proc
	redisURL string
	redis    *redis.Client
	backends []string
}

func startStack(ctx context.Context, dir string, bins binaries) (*stack, error) {
	s := &stack{}
	redisPort, err := freePort()
	if err != nil {
		return s, err
	}
	// TCP on loopback, as the dispatcher reaches Redis in compose.
	if _, err := s.start(ctx, dir, "redis", nil, "redis-server", "--port", strconv.Itoa(redisPort),
		"--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir); err != nil {
		return s, fmt.Errorf("redis-server (Debian: apt-get install redis-server): %w", err)
	}
	s.redisURL = fmt.Sprintf("redis://127.0.0.1:%d/0", redisPort)
	s.redis = redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", redisPort)})
	if err := waitFor(ctx, func(ctx context.Context) error { return s.redis.Ping(ctx).Err() }); err != nil {
		return s, fmt.Errorf("redis-server did not answer: %w", err)
	}
	for i := range 3 {
		port, err := freePort()
		if err != nil {
			return s, err
		}
		name := fmt.Sprintf("backend%d", i+1)
		if _, err := s.start(ctx, dir, name, []string{"PORT=" + strconv.Itoa(port), "BACKEND_NAME=" + name}, bins.backend); err != nil {
			return s, err
		}
		u := fmt.Sprintf("http://127.0.0.1:%d", port)
		if err := waitFor(ctx, httpOK(u+"/healthz")); err != nil {
			return s, fmt.Errorf("%s did not answer: %w", name, err)
		}
		s.backends = append(s.backends, u)
	}
	if err := store.NewStore(s.redis, "servers", nil).Replace(ctx, s.backends); err != nil {
		return s, err
	}
	return s, nil
}

// proc is a program started by the bench.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when it has exited
}

// stop sends SIGTERM and waits up to 15 s for the exit.
func (p *proc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// start runs a program with its output in dir/name.log.
func (s *stack) start(ctx context.Context, dir, name string, env []string, prog string, args ...string) (*proc, error) {
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 15 * time.Second
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); logf.Close(); close(p.done) }()
	s.procs = append(s.procs, p)
	return p, nil
}

// stop stops every program it started, last first.
func (s *stack) stop() {
	for _, p := range slices.Backward(s.procs) {
		p.stop()
	}
	if s.redis != nil {
		s.redis.Close()
	}
}

// dispatcher is one dispatcher under test, running for the whole bench.
type dispatcher struct {
	proc *proc
	url  string
}

// startDispatcher starts a dispatcher with ROTATION=mode and waits until it
// redirects to a seeded backend.
func (s *stack) startDispatcher(ctx context.Context, dir string, bins binaries, mode string) (*dispatcher, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	adminPort, err := freePort()
	if err != nil {
		return nil, err
	}
	p, err := s.start(ctx, dir, "dispatcher-"+mode, []string{"PORT=" + strconv.Itoa(port),
		"ADMIN_PORT=" + strconv.Itoa(adminPort), "REDIS_URL=" + s.redisURL, "ROTATION=" + mode,
		// No log line per request: the bench measures the dispatching, not
		// the writing of access logs, which costs both modes alike.
		"LOG_LEVEL=warn"}, bins.dispatcher)
	if err != nil {
		return nil, err
	}
	if err := waitFor(ctx, httpOK(fmt.Sprintf("http://127.0.0.1:%d/readyz", adminPort))); err != nil {
		return nil, fmt.Errorf("dispatcher not ready: %w", err)
	}
	d := &dispatcher{proc: p, url: fmt.Sprintf("http://127.0.0.1:%d/", port)}
	return d, checkRedirect(d.url, s.backends)
}

// measure runs one slice of load at d and returns what the load generator
// measured and how many LMOVE calls Redis counted meanwhile. The other
// dispatcher is idle then, so the count is d's.
func (s *stack) measure(ctx context.Context, d *dispatcher, load loader, conns int, dur time.Duration) (result, int64, error) {
	before, err := redistest.Calls(ctx, s.redis, "lmove")
	if err != nil {
		return result{}, 0, err
	}
	r, err := load.run(ctx, d.url, conns, dur)
	if err != nil {
		return r, 0, err
	}
	after, err := redistest.Calls(ctx, s.redis, "lmove")
	return r, after - before, err
}

// accum adds up the slices of one mode in one round.
type accum struct {
	requests, errors, lmoves int64
	seconds                  float64
	p50, p99                 []time.Duration
}

func (t *accum) add(r result, lmoves int64) {
	t.requests += r.requests
	t.errors += r.errors
	t.lmoves += lmoves
	if r.rps > 0 {
		t.seconds += float64(r.requests) / r.rps
	}
	t.p50, t.p99 = append(t.p50, r.p50), append(t.p99, r.p99)
}

// measurement is the round's figure for the mode: requests/s over all its
// slices, and the median of the slices' p50 and p99.
func (t *accum) measurement(round int, mode string) measurement {
	m := measurement{round: round, mode: mode, result: result{requests: t.requests, errors: t.errors,
		p50: median(t.p50), p99: median(t.p99)}}
	if t.seconds > 0 {
		m.rps = float64(t.requests) / t.seconds
	}
	m.lmovePerRequest = float64(t.lmoves) / float64(max(t.requests, 1))
	return m
}

// measurement is one mode in one round.
type measurement struct {
	round int
	mode  string
	result
	rssMiB          float64
	lmovePerRequest float64
}

// checkRedirect makes sure the dispatcher redirects to a seeded backend
// before it is measured: a fast 503 is no result.
func checkRedirect(url string, backends []string) error {
	c := &http.Client{Timeout: 5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || !slices.Contains(backends, strings.TrimSuffix(loc, "/")) {
		return fmt.Errorf("dispatcher answered %d %q, want 302 to one of %q", resp.StatusCode, loc, backends)
	}
	return nil
}

// peakRSS is the process's high-water resident set (VmHWM), in MiB.
func peakRSS(pid int) (float64, error) {
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

// report prints the medians, the ratios, and each target's verdict, and
// how much the throughput ratio varied between adjacent slices: the noise
// of the machine, which the medians are meant to see through.
func report(w io.Writer, runs []measurement, pairs []float64) error {
	med := map[string]measurement{}
	for _, mode := range []string{"redis", "local"} {
		var rps, rss, per []float64
		var p50, p99 []time.Duration
		var errs int64
		for _, m := range runs {
			if m.mode == mode {
				rps, rss, per = append(rps, m.rps), append(rss, m.rssMiB), append(per, m.lmovePerRequest)
				p50, p99 = append(p50, m.p50), append(p99, m.p99)
				errs += m.errors
			}
		}
		med[mode] = measurement{mode: mode, result: result{rps: median(rps), p50: median(p50), p99: median(p99), errors: errs},
			rssMiB: slices.Max(rss), lmovePerRequest: slices.Min(per)}
	}
	r, l := med["redis"], med["local"]
	fmt.Fprintf(w, "\nmedians: redis %.0f req/s, p50 %s, p99 %s; local %.0f req/s, p50 %s, p99 %s\n",
		r.rps, ms(r.p50), ms(r.p99), l.rps, ms(l.p50), ms(l.p99))
	if len(pairs) > 0 {
		fmt.Fprintf(w, "redis/local throughput of adjacent slices: lowest %.2f, median %.2f, highest %.2f (%d pairs)\n",
			slices.Min(pairs), median(pairs), slices.Max(pairs), len(pairs))
	}
	checks := []struct {
		what string
		ok   bool
	}{
		{fmt.Sprintf("throughput redis/local = %.3f (target ≥ %.1f)", r.rps/l.rps, minThroughputRatio), r.rps/l.rps >= minThroughputRatio},
		{fmt.Sprintf("p99 redis/local = %.3f (target ≤ %.1f)", float64(r.p99)/float64(l.p99), maxP99Ratio), float64(r.p99) <= maxP99Ratio*float64(l.p99)},
		{fmt.Sprintf("LMOVE per request served, redis mode, lowest round = %.3f (target ≥ %.0f)", r.lmovePerRequest, minLMOVEPerRequest), r.lmovePerRequest >= minLMOVEPerRequest},
		{fmt.Sprintf("peak RSS = %.1f MiB redis, %.1f MiB local (target ≤ %d MiB)", r.rssMiB, l.rssMiB, maxRSSMiB), r.rssMiB <= maxRSSMiB && l.rssMiB <= maxRSSMiB},
		{fmt.Sprintf("failed requests = %d redis, %d local (target 0)", r.errors, l.errors), r.errors == 0 && l.errors == 0},
	}
	failed := 0
	for _, c := range checks {
		verdict := "ok  "
		if !c.ok {
			verdict, failed = "MISS", failed+1
		}
		fmt.Fprintf(w, "%s %s\n", verdict, c.what)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d targets missed", failed, len(checks))
	}
	return nil
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

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func httpOK(url string) func(context.Context) error {
	return func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		return nil
	}
}

// waitFor retries check for up to 10 s.
func waitFor(ctx context.Context, check func(context.Context) error) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		err := check(cctx)
		cancel()
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

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
