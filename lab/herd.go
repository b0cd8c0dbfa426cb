package main

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"gonum.org/v1/plot"
)

// The herd scenario: the slow scenario's pool and load, spread evenly over
// 1, 2, 4 and 8 proxying dispatchers on one list (LAB_HERD_DISPATCHERS),
// for each strategy that follows load: least-conn with counts shared in
// Redis, least-conn with each dispatcher's own counts
// (LEAST_CONN_SCOPE=local), p2c and least-time. Does a shared count herd
// every dispatcher onto the same idle backend, and does local or random
// choice do better as the dispatchers multiply?
var herdBatch = batch{name: "herd",
	what: "the slow scenario through 1, 2, 4, 8 dispatchers on one list: least-conn shared and local, p2c, least-time",
	files: [][2]string{{"p99.svg", "p99 against the number of dispatchers, one line per strategy"},
		{"slow-share.svg", "the slow backend's share of the requests against the number of dispatchers"}},
	run: runHerd, charts: redraw(writeHerdCharts)}

// maxHerd bounds LAB_HERD_DISPATCHERS.
const maxHerd = 16

// herdVariants are the strategies compared, in order.
var herdVariants = []variant{
	{"least-conn", map[string]string{"STRATEGY": "least-conn", "LEAST_CONN_SCOPE": "shared"}},
	{"least-conn-local", map[string]string{"STRATEGY": "least-conn", "LEAST_CONN_SCOPE": "local"}},
	{"p2c", map[string]string{"STRATEGY": "p2c"}},
	{"least-time", map[string]string{"STRATEGY": "least-time"}},
}

type herdReport struct {
	Scenario herdScenario `json:"scenario"`
	Results  []herdRow    `json:"results"`
}

// herdScenario's rate is in all, spread evenly over the dispatchers.
type herdScenario struct {
	common
	poolLoad
	SlowBackend string  `json:"slow_backend"`
	Load        float64 `json:"load"`
	DurationS   float64 `json:"duration_s"` // per row
	Dispatchers []int   `json:"dispatchers"`
}

type herdRow struct {
	row
	Dispatchers int `json:"dispatchers"`
}

func runHerd(ctx context.Context, lr labRun) ([]string, error) {
	cfg, stdout := lr.cfg, lr.stdout
	st, err := startStack(ctx, lr.dir, lr.bins, cfg.backends, false)
	defer st.stop()
	if err != nil {
		return nil, err
	}
	rep := herdReport{Scenario: herdScenario{
		common:   newCommon("herd", "Do balancers that share their counts herd onto the same backend, and at how many does local or random choice win?"),
		poolLoad: newPoolLoad(cfg.backends, cfg.rate, cfg), SlowBackend: slowName,
		Load: round(float64(cfg.rate)/capacityRPS(cfg.backends), 3), DurationS: cfg.duration.Seconds(), Dispatchers: cfg.herd}}
	rep.Scenario.Share += ", summed over the dispatchers"
	fmt.Fprintf(stdout, "pool: %s; %d req/s in all (%.0f%% of capacity), spread over the dispatchers, %s each\n",
		poolString(cfg.backends), cfg.rate, 100*rep.Scenario.Load, cfg.duration)
	for _, v := range herdVariants {
		rep.Scenario.Variants[v.name] = v.settings
		for _, n := range cfg.herd {
			r, err := herdRun(ctx, st, cfg, v.name, v.settings, n)
			if err != nil {
				return nil, fmt.Errorf("%s, %d dispatchers: %w", v.name, n, err)
			}
			fmt.Fprintf(stdout, "%-17s ×%-2d %6d requests, %5d errors, p50 %6.1f ms, p99 %7.1f ms, %s sent %4.1f%%\n",
				v.name, n, r.Requests, r.Errors, r.P50MS, r.P99MS, slowName, 100*r.Share[slowName])
			noteLoad(stdout, rep.Scenario.LoadAverage, v.name+" ×"+strconv.Itoa(n))
			rep.Results = append(rep.Results, r)
		}
	}
	if err := writeReportJSON(lr.out, rep); err != nil {
		return nil, err
	}
	return writeHerdCharts(lr.out, rep)
}

// herdRun starts n dispatchers with settings, drives the load through
// them in turn, and stops them.
func herdRun(ctx context.Context, st *stack, cfg config, name string, settings map[string]string, n int) (herdRow, error) {
	var ds []*dispatcher
	defer func() {
		for _, d := range ds {
			d.proc.Stop()
		}
	}()
	var urls []string
	before := make([]map[string]int64, n)
	for i := range n {
		d, err := st.startProxy(ctx, fmt.Sprintf("dispatcher-%s-%d-of-%d", name, i+1, n),
			append([]string{"HEALTH_INTERVAL=0"}, settingsEnv(settings)...))
		if d != nil {
			ds = append(ds, d)
		}
		if err != nil {
			return herdRow{}, err
		}
		if err := st.checkProxy(ctx, d); err != nil {
			return herdRow{}, err
		}
		if before[i], err = d.picks(ctx); err != nil {
			return herdRow{}, err
		}
		urls = append(urls, d.url)
	}
	o := attackAll(ctx, cfg, urls, name, nil)
	if err := ctx.Err(); err != nil {
		return herdRow{}, err
	}
	sent, err := st.sentByAll(ctx, ds, before, o.requests)
	if err != nil {
		return herdRow{}, err
	}
	for _, d := range ds {
		d.proc.Stop()
	}
	if err := st.drain(ctx); err != nil {
		return herdRow{}, err
	}
	return herdRow{row: newRow(name, st.names(), o, sent), Dispatchers: n}, nil
}

// sentByAll is sentSince summed over dispatchers: the requests they sent to
// each backend, by name, waiting (up to 5 s) until they add up to want.
func (s *stack) sentByAll(ctx context.Context, ds []*dispatcher, before []map[string]int64, want int) (map[string]int64, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		sum := map[string]int64{}
		var total int64
		for i, d := range ds {
			sent, err := s.sentSince(ctx, d, before[i], 0)
			if err != nil {
				return nil, err
			}
			for k, v := range sent {
				sum[k] += v
				total += v
			}
		}
		if total >= int64(want) || time.Now().After(deadline) {
			return sum, nil
		}
		if err := wait(ctx, 50*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// writeHerdCharts draws p99.svg and slow-share.svg: one line per
// strategy against the number of dispatchers, on a log₂ axis.
func writeHerdCharts(dir string, r herdReport) ([]string, error) {
	sc := r.Scenario
	sub := fmt.Sprintf("%d req/s in all (%.0f%% of capacity), %s per point",
		sc.RateRPS, 100*sc.Load, fmtSeconds(sc.DurationS))
	lines := func(value func(herdRow) float64) []series {
		var out []series
		for _, v := range herdVariants {
			s := series{name: herdLegend(v.name, sc.Variants[v.name])}
			for _, res := range r.Results {
				if res.Variant == v.name {
					s.xs = append(s.xs, math.Log2(float64(res.Dispatchers)))
					s.ys = append(s.ys, value(res))
				}
			}
			if len(s.xs) > 0 {
				out = append(out, s)
			}
		}
		return out
	}
	var paths []string
	p := newFreePlot("p99 latency against dispatchers", sub, "dispatchers on one list", "p99 latency (log scale)")
	p.Y.Scale, p.Y.Tick.Marker = plot.LogScale{}, msTicks{}
	p.X.Tick.Marker = dispatcherTicks(sc.Dispatchers)
	ls := lines(func(r herdRow) float64 { return max(r.P99MS, 1) })
	p99, l, err := lineChart(p, ls, nil)
	if err == nil {
		lo, hi := math.Inf(1), sc.TimeoutS*1000
		for _, s := range ls {
			for _, y := range s.ys {
				lo, hi = min(lo, y), max(hi, y)
			}
		}
		p99.Y.Min, p99.Y.Max = math.Pow(10, math.Floor(math.Log10(lo))), hi*1.5
		p99.Add(&hline{y: sc.TimeoutS * 1000})
		l.Add("timeout", &hline{y: sc.TimeoutS * 1000})
	}
	path, err := saveChart(dir, "p99.svg", p99, l, err)
	if err != nil {
		return nil, err
	}
	paths = append(paths, path)

	p = newFreePlot("The slow backend's share", sub, "dispatchers on one list", "share of requests sent to "+sc.SlowBackend)
	p.X.Tick.Marker = dispatcherTicks(sc.Dispatchers)
	p.Y.Min = 0
	share, l, err := lineChart(p, lines(func(r herdRow) float64 { return 100 * r.Share[sc.SlowBackend] }), nil)
	if err == nil {
		var slowCap float64
		for _, b := range sc.Backends {
			if b.Name == sc.SlowBackend {
				slowCap = 100 * b.CapacityRPS / sc.CapacityRPS
			}
		}
		fair := &hline{y: slowCap, dashed: true}
		share.Add(fair)
		l.Add(sc.SlowBackend+"'s share\nof capacity", fair)
		share.Y.Tick.Marker = percentAxis{}
	}
	path, err = saveChart(dir, "slow-share.svg", share, l, err)
	if err != nil {
		return nil, err
	}
	return append(paths, path), nil
}

// herdLegend names a strategy by its knobs: "STRATEGY=least-conn,
// LEAST_CONN_SCOPE=local".
func herdLegend(name string, settings map[string]string) string {
	parts := []string{"STRATEGY=" + settings["STRATEGY"]}
	if s := settings["LEAST_CONN_SCOPE"]; s != "" {
		parts = append(parts, "LEAST_CONN_SCOPE="+s)
	}
	return strings.Join(parts, ",\n")
}

// dispatcherTicks labels a log₂ axis with the numbers of dispatchers.
type dispatcherTicks []int

func (d dispatcherTicks) Ticks(lo, hi float64) []plot.Tick {
	var out []plot.Tick
	for _, n := range d {
		out = append(out, plot.Tick{Value: math.Log2(float64(n)), Label: strconv.Itoa(n)})
	}
	return out
}

// percentAxis labels a percentage axis of any range: "5%", "10%".
type percentAxis struct{}

func (percentAxis) Ticks(lo, hi float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(lo, hi)
	for i := range ticks {
		if ticks[i].Label != "" {
			ticks[i].Label += "%"
		}
	}
	return ticks
}
