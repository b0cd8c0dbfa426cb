// Command lab shows what a balancing strategy does to the tail of the
// latency when one backend of the pool is slow and small. It runs
// redis-server, a pool of backends (LAB_FAST fast ones and one slow one,
// set with the backend's LATENCY, CAPACITY and LATENCY_JITTER), and, for
// each strategy in turn, a dispatcher in MODE=proxy with that STRATEGY, as
// local processes built from this checkout. Each dispatcher meets the same
// open-loop load (vegeta): requests arrive at LAB_RATE per second, Poisson
// or evenly spaced, whether or not earlier ones were answered, each as one
// of LAB_USERS users in an X-User header (STRATEGY=hash hashes on it).
//
// Usage (or `make lab`, which runs it from the top of the checkout):
//
//	lab         run every strategy, print a table, write LAB_OUT/report.json
//	            and the charts: latency.svg (p50, p90, p99), share.svg (the
//	            requests sent to each backend), redis.svg (Redis round trips
//	            per request), sticky.svg (users who stayed on one backend)
//	lab charts  draw the charts again from LAB_OUT/report.json, without
//	            running anything
//	lab serve   the console: the same scenario live, with a page at
//	            LAB_ADDR that shows each second and turns the knobs (serve.go)
//	lab healthcheck
//	            GET the console's /healthz on LAB_ADDR's port (for compose)
//	lab check   read the settings as lab serve does and print them as
//	            NAME=value; a bad one is an error naming it (check.go)
//	lab help    list the commands, the files each writes, and the settings
//
// Settings are environment variables (see settings, and docs/lab.md).
// Between strategies, the lab waits until no backend has a request queued
// or in service, so that one strategy's backlog does not slow the next.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "lab:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "help", "-h", "-help", "--help":
			printHelp(stdout)
			return nil
		case "charts":
			return redrawCharts(getenv, stdout)
		case "serve":
			return serve(ctx, getenv, stdout)
		case "healthcheck":
			return healthcheck(ctx, getenv)
		case "check":
			return checkSettings(getenv, stdout)
		}
		return fmt.Errorf("unknown argument %q: the lab takes its settings from the environment (lab help lists them)", args[0])
	}
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	root, err := findRoot()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.out, 0o755); err != nil {
		return fmt.Errorf("%s: %w", outSetting.name, err)
	}
	dir, err := os.MkdirTemp("", "spread-lab")
	if err != nil {
		return err
	}
	keep := true // the logs stay when something fails
	defer func() {
		if keep {
			fmt.Fprintln(stdout, "logs kept in", dir)
		} else {
			os.RemoveAll(dir)
		}
	}()

	bins, err := build(ctx, root, dir)
	if err != nil {
		return err
	}
	st, err := startStack(ctx, dir, bins, cfg.backends, false)
	defer st.stop()
	if err != nil {
		return err
	}

	sc := newScenario(cfg)
	fmt.Fprintf(stdout, "machine: %s\n", sc.Machine)
	fmt.Fprintf(stdout, "pool: %s; capacity %.0f req/s\n", poolString(cfg.backends), sc.CapacityRPS)
	fmt.Fprintf(stdout, "load: %d req/s (%.0f%% of capacity), %s arrivals, %s per strategy, timeout %s, %d users in %s\n\n",
		cfg.rate, 100*sc.Load, cfg.arrivals, cfg.duration, cfg.timeout, cfg.users, userHeader)
	rep := report{Scenario: sc}
	for _, s := range cfg.strategies {
		r, err := runStrategy(ctx, st, cfg, s)
		if err != nil {
			return fmt.Errorf("STRATEGY=%s: %w", s, err)
		}
		fmt.Fprintf(stdout, "%-11s %6d requests, %5d errors, p99 %8.1f ms, %s sent %4.1f%%\n",
			s, r.Requests, r.Errors, r.P99MS, slowName, 100*r.Share[slowName])
		rep.Results = append(rep.Results, r)
		rep.Scenario.RedisRoundTripsPerRequest[s] = round(r.redisPerRequest, 3)
		rep.Scenario.StickyUsers[s] = round(r.sticky, 4)
		if load, ok := loadAverage(); ok {
			rep.Scenario.LoadAverage[s] = load
			if load > float64(runtime.NumCPU()) {
				fmt.Fprintf(stdout, "            the machine was busy: load average %.1f on %d CPUs, the lab's own programs included; waiting for a CPU shows in these latencies\n",
					load, runtime.NumCPU())
			}
		}
	}
	fmt.Fprintln(stdout)
	printTable(stdout, rep)

	if err := writeReport(cfg.out, rep); err != nil {
		return err
	}
	files, err := writeCharts(cfg.out, rep)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nwrote %s\n", strings.Join(append([]string{cfg.out + "/report.json"}, files...), ", "))
	keep = false
	return nil
}

// redrawCharts draws the charts of LAB_OUT/report.json again.
func redrawCharts(getenv func(string) string, stdout io.Writer) error {
	dir := outSetting.get(getenv)
	b, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		return err
	}
	var r report
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(dir, "report.json"), err)
	}
	files, err := writeCharts(dir, r)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s\n", strings.Join(files, ", "))
	return nil
}

// runStrategy starts a dispatcher with STRATEGY=strategy, drives the load
// through it, stops it, and waits until the backends are idle again.
func runStrategy(ctx context.Context, st *stack, cfg config, strategy string) (result, error) {
	d, err := st.startDispatcher(ctx, strategy)
	if d != nil {
		defer d.proc.Stop()
	}
	if err != nil {
		return result{}, err
	}
	if err := st.checkProxy(ctx, d); err != nil {
		return result{}, err
	}
	before, err := d.picks(ctx)
	if err != nil {
		return result{}, err
	}
	tripsBefore, err := st.redisRoundTrips(ctx)
	if err != nil {
		return result{}, err
	}
	o := attack(ctx, cfg, d.url, strategy)
	if err := ctx.Err(); err != nil {
		return result{}, err
	}
	for name := range o.answered {
		if !slices.Contains(st.names(), name) {
			return result{}, fmt.Errorf("an answer came with X-Backend %q, which is none of the pool's %q", name, st.names())
		}
	}
	sent, err := st.sentSince(ctx, d, before, o.requests)
	if err != nil {
		return result{}, err
	}
	tripsAfter, err := st.redisRoundTrips(ctx)
	if err != nil {
		return result{}, err
	}
	d.proc.Stop()
	if err := st.drain(ctx); err != nil {
		return result{}, err
	}
	r := newResult(strategy, st.names(), o, sent)
	r.redisPerRequest = float64(tripsAfter-tripsBefore) / float64(max(1, o.requests))
	return r, nil
}

// sentSince returns how many requests d has sent to each backend, by name,
// since it counted before. The dispatcher counts a request when its handler
// returns, which can be a moment after the client saw the answer or gave
// up, so it waits (up to 5 s) for the count to reach want.
func (s *stack) sentSince(ctx context.Context, d *dispatcher, before map[string]int64, want int) (map[string]int64, error) {
	byURL := map[string]string{}
	for _, b := range s.backends {
		byURL[b.url] = b.Name
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		after, err := d.picks(ctx)
		if err != nil {
			return nil, err
		}
		sent := map[string]int64{}
		var total int64
		for u, n := range after {
			name, ok := byURL[strings.TrimSuffix(u, "/")]
			if !ok {
				return nil, fmt.Errorf("the dispatcher counts requests to %q, which is none of the pool's backends", u)
			}
			sent[name] += n - before[u]
			total += n - before[u]
		}
		if total >= int64(want) || time.Now().After(deadline) {
			return sent, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func newScenario(cfg config) scenario {
	c := capacityRPS(cfg.backends)
	return scenario{Backends: cfg.backends, SlowBackend: slowName, CapacityRPS: round(c, 1),
		RateRPS: cfg.rate, Load: round(float64(cfg.rate)/c, 3), Arrivals: cfg.arrivals,
		DurationS: cfg.duration.Seconds(), TimeoutS: cfg.timeout.Seconds(), Users: cfg.users,
		HashKey: hashKey, Seed: cfg.seed, Dispatchers: 1, Share: shareMeaning,
		Machine: machine(), Date: time.Now().UTC().Format(time.DateOnly),
		RedisRoundTripsPerRequest: map[string]float64{}, StickyUsers: map[string]float64{}, LoadAverage: map[string]float64{}}
}

// poolString describes the pool: "fast1 40ms×8, fast2 40ms×8, slow 200ms×4".
func poolString(bs []backendSpec) string {
	parts := make([]string, len(bs))
	for i, b := range bs {
		parts[i] = fmt.Sprintf("%s %s×%d", b.Name, b.latency, b.Capacity)
		if b.jitter > 0 {
			parts[i] = fmt.Sprintf("%s %s+0..%s×%d", b.Name, b.latency, b.jitter, b.Capacity)
		}
	}
	return strings.Join(parts, ", ")
}

// machine describes this machine: CPU model, CPUs, Go version.
func machine() string {
	model := runtime.GOARCH
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("%s, %d CPUs, %s/%s, %s", model, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
}

// loadAverage is the machine's load average over the last minute (Linux).
func loadAverage() (float64, bool) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, false
	}
	v, err := strconv.ParseFloat(f[0], 64)
	return v, err == nil
}

// printHelp lists the commands, the files the lab writes and its settings.
func printHelp(w io.Writer) {
	fmt.Fprint(w, `usage:
  lab         run every strategy, print a table, write report.json and the charts into LAB_OUT
  lab charts  draw the charts again from LAB_OUT/report.json, without running anything
  lab serve   the console: the scenario live, a page at LAB_ADDR that shows every second and
              turns the knobs (strategy, rate, each backend); its own stack, or a running one
  lab healthcheck
              GET the console's /healthz on LAB_ADDR's port: exit 0 if it answers
  lab check   read the settings as lab serve does and print each as NAME=value; a bad one is
              an error naming it (make k8s-check asks it about the Kubernetes manifests)
  lab help    print this

lab writes into LAB_OUT:
  report.json     the scenario, and each strategy's requests, errors, percentiles and shares
`)
	for _, c := range charts {
		fmt.Fprintf(w, "  %-15s %s\n", c.file, c.what)
	}
	fmt.Fprintln(w, "\nsettings, each an environment variable (make lab passes them on):")
	printSettings(w, settings)
	fmt.Fprintln(w, "\nlab serve also reads these (LAB_DURATION, LAB_OUT, LAB_STRATEGIES and LAB_ARRIVALS are the batch's only):")
	printSettings(w, serveSettings)
}

func printSettings(w io.Writer, ss []setting) {
	for _, s := range ss {
		def := s.def
		if def == "" {
			def = `""`
		}
		fmt.Fprintf(w, "  %-18s default %-40s %s\n", s.name, def, s.usage)
	}
}

// errNoResults: a chart needs at least one strategy's result.
var errNoResults = errors.New("no results to chart")
