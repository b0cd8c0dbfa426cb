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
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
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
	fmt.Fprintf(stdout, "machine: %s\n", machine())
	for _, name := range cfg.scenarios {
		b, _ := lookupBatch(name)
		lr := labRun{cfg: cfg, bins: bins, dir: filepath.Join(dir, name), out: filepath.Join(cfg.out, name), stdout: stdout}
		for _, d := range []string{lr.dir, lr.out} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return fmt.Errorf("%s: %w", outSetting.name, err)
			}
		}
		fmt.Fprintf(stdout, "\n== %s: %s\n", name, b.what)
		start := time.Now()
		files, err := b.run(ctx, lr)
		if err != nil {
			return fmt.Errorf("%s=%s: %w", scenarioSetting.name, name, err)
		}
		fmt.Fprintf(stdout, "\n%s took %s; wrote %s\n", name, time.Since(start).Round(time.Second),
			strings.Join(append([]string{filepath.Join(lr.out, "report.json")}, files...), ", "))
	}
	keep = false
	return nil
}

// redrawCharts draws the charts of LAB_OUT/<scenario>/report.json again,
// for each scenario of LAB_SCENARIO.
func redrawCharts(getenv func(string) string, stdout io.Writer) error {
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	for _, name := range cfg.scenarios {
		b, _ := lookupBatch(name)
		dir := filepath.Join(cfg.out, name)
		raw, err := os.ReadFile(filepath.Join(dir, "report.json"))
		if err != nil {
			return err
		}
		files, err := b.charts(dir, raw)
		if err != nil {
			return fmt.Errorf("%s: %w", filepath.Join(dir, "report.json"), err)
		}
		fmt.Fprintf(stdout, "wrote %s\n", strings.Join(files, ", "))
	}
	return nil
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
  lab         run the scenarios of LAB_SCENARIO (default slow), print their tables, and write
              LAB_OUT/<scenario>/report.json and the scenario's charts
  lab charts  draw the charts again from LAB_OUT/<scenario>/report.json, without running anything
  lab serve   the console: the slow scenario live, a page at LAB_ADDR that shows every second and
              turns the knobs (strategy, rate, each backend); its own stack, or a running one
  lab healthcheck
              GET the console's /healthz on LAB_ADDR's port: exit 0 if it answers
  lab check   read the settings as lab serve does and print each as NAME=value; a bad one is
              an error naming it (make k8s-check asks it about the Kubernetes manifests)
  lab help    print this

every scenario writes into LAB_OUT/<scenario>/:
  report.json       its knobs ("scenario") and one row per variant ("results")
scenarios (LAB_SCENARIO), and the charts each writes beside its report.json:
`)
	for _, b := range batches {
		fmt.Fprintf(w, "  %-8s %s\n", b.name, b.what)
		files := b.files
		if b.name == slowBatch.name {
			for _, c := range charts {
				files = append(files, [2]string{c.file, c.what})
			}
		}
		for _, f := range files {
			fmt.Fprintf(w, "    %-17s %s\n", f[0], f[1])
		}
	}
	fmt.Fprintln(w, "\nsettings, each an environment variable (make lab passes them on):")
	printSettings(w, settings)
	fmt.Fprintln(w, "\nlab serve also reads these (LAB_SCENARIO, LAB_DURATION, LAB_OUT, LAB_STRATEGIES and LAB_ARRIVALS are the batch's only):")
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
