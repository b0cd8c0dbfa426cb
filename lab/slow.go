package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"time"
)

// The slow scenario, the lab's first: a pool of fast backends and one slow,
// small one, at 75% of the pool's capacity, through one dispatcher per
// strategy in turn (LAB_STRATEGIES). It writes report.json and the charts
// of chart.go.
var slowBatch = batch{name: "slow",
	what: "one slow, small backend among fast ones; each strategy in turn, at 75% of the pool's capacity",
	run:  runSlow, charts: redraw(writeCharts)}

func runSlow(ctx context.Context, lr labRun) ([]string, error) {
	cfg, stdout := lr.cfg, lr.stdout
	st, err := startStack(ctx, lr.dir, lr.bins, cfg.backends, false)
	defer st.stop()
	if err != nil {
		return nil, err
	}
	sc := newScenario(cfg)
	fmt.Fprintf(stdout, "pool: %s; capacity %.0f req/s\n", poolString(cfg.backends), sc.CapacityRPS)
	fmt.Fprintf(stdout, "load: %d req/s (%.0f%% of capacity), %s arrivals, %s per strategy, timeout %s, %d users in %s\n\n",
		cfg.rate, 100*sc.Load, cfg.arrivals, cfg.duration, cfg.timeout, cfg.users, userHeader)
	rep := report{Scenario: sc}
	for _, s := range cfg.strategies {
		r, err := runStrategy(ctx, st, cfg, s)
		if err != nil {
			return nil, fmt.Errorf("STRATEGY=%s: %w", s, err)
		}
		fmt.Fprintf(stdout, "%-12s %6d requests, %5d errors, p99 %8.1f ms, %s sent %4.1f%%\n",
			s, r.Requests, r.Errors, r.P99MS, slowName, 100*r.Share[slowName])
		rep.Results = append(rep.Results, r)
		rep.Scenario.RedisRoundTripsPerRequest[s] = round(r.redisPerRequest, 3)
		rep.Scenario.StickyUsers[s] = round(r.sticky, 4)
		noteLoad(stdout, rep.Scenario.LoadAverage, s)
	}
	fmt.Fprintln(stdout)
	printTable(stdout, rep)
	if err := writeReport(lr.out, rep); err != nil {
		return nil, err
	}
	return writeCharts(lr.out, rep)
}

// noteLoad records the machine's load average under key, and says so when
// the machine was busier than its CPUs.
func noteLoad(stdout io.Writer, into map[string]float64, key string) {
	load, ok := loadAverage()
	if !ok {
		return
	}
	into[key] = load
	if load > float64(runtime.NumCPU()) {
		fmt.Fprintf(stdout, "             the machine was busy: load average %.1f on %d CPUs, the lab's own programs included; waiting for a CPU shows in these latencies\n",
			load, runtime.NumCPU())
	}
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
