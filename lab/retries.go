package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The retries scenario: three backends under round robin at half the
// pool's capacity; a third of the way into the run (10 s of
// LAB_RETRIES_RUN's 30 s) one of them slows from 40 ms to 1 s a request.
// Each attempt may wait 250 ms for its answer (PROXY_TRY_TIMEOUT). Without
// retries the requests sent to it fail; with retries they are sent on, and
// the backends get more requests than the clients send: how many more,
// with and without a retry budget?
var retriesBatch = batch{name: "retries",
	what:  "one backend slows: upstream requests over client requests, without retries, with retries, with a retry budget",
	files: [][2]string{{"amplification.svg", "upstream requests ÷ client requests, second by second, one line per variant"}},
	run:   runRetries, charts: redraw(writeRetriesCharts)}

// retriesVariants are the retry settings compared, in order.
var retriesVariants = []variant{
	{"no-retries", map[string]string{"PROXY_TRY_TIMEOUT": "250ms", "PROXY_RETRIES": "0"}},
	{"retries", map[string]string{"PROXY_TRY_TIMEOUT": "250ms", "PROXY_RETRIES": "2",
		"PROXY_RETRY_ON": "connect-failure,per-try-timeout", "RETRY_BUDGET": "0"}},
	{"retries+budget", map[string]string{"PROXY_TRY_TIMEOUT": "250ms", "PROXY_RETRIES": "2",
		"PROXY_RETRY_ON": "connect-failure,per-try-timeout", "RETRY_BUDGET": "20%"}},
}

// retriesLoad is the scenario's rate as a share of the pool's capacity.
const retriesLoad = 0.5

// retriesSlowLatency is what the slowing backend's LATENCY becomes.
const retriesSlowLatency = time.Second

type retriesReport struct {
	Scenario retriesScenario `json:"scenario"`
	Results  []retriesRow    `json:"results"`
}

// retriesScenario's capacity is the pool's before the slowdown.
type retriesScenario struct {
	common
	poolLoad
	Slowed   string     `json:"slowed"` // the backend that slows
	SlowedTo float64    `json:"slowed_to_latency_ms"`
	Strategy string     `json:"strategy"`
	RunS     float64    `json:"run_s"`
	Events   []eventDoc `json:"events"`
	Upstream string     `json:"upstream"` // what amplification counts
}

type retriesRow struct {
	row
	// Amplification is upstream requests over client requests, over the
	// run from the slowdown on.
	Amplification     float64   `json:"amplification"`
	AmplificationPerS []float64 `json:"amplification_per_s"`
	RetriesRefused    int64     `json:"retries_refused"`
	perSecondDoc
	UpstreamPerS []float64 `json:"upstream_per_s"`
}

func runRetries(ctx context.Context, lr labRun) ([]string, error) {
	cfg, stdout := lr.cfg, lr.stdout
	specs := failureSpecs() // three backends of 40 ms × 8
	st, err := startStack(ctx, lr.dir, lr.bins, specs, true)
	defer st.stop()
	if err != nil {
		return nil, err
	}
	slowed := st.backends[len(st.backends)-1]
	run := cfg.retriesRun
	events := []event{{at: run / 3, what: fmt.Sprintf("%s: LATENCY %s", slowed.Name, retriesSlowLatency),
		do: func(ctx context.Context) error {
			return slowed.setKnobs(ctx, map[string]any{"latency": retriesSlowLatency.String()})
		}}}
	rate := int(retriesLoad * capacityRPS(specs))
	rep := retriesReport{Scenario: retriesScenario{
		common:   newCommon("retries", "When a backend slows down, how many more requests do retries send the pool than the clients send, with and without a retry budget?"),
		poolLoad: newPoolLoad(specs, rate, cfg), Slowed: slowed.Name, SlowedTo: ms(retriesSlowLatency), Strategy: "round-robin",
		RunS: run.Seconds(), Events: eventDocs(events),
		Upstream: "attempts the dispatcher made: the client requests plus spread_proxy_retries_total"}}
	fmt.Fprintf(stdout, "pool: %s; %d req/s (%.0f%% of capacity), round robin; %s slows to %s at %s of %s\n",
		poolString(specs), rate, 100*retriesLoad, slowed.Name, retriesSlowLatency, events[0].at, run)
	for _, v := range retriesVariants {
		rep.Scenario.Variants[v.name] = v.settings
		// Every variant starts with the backend fast again.
		if err := slowed.setKnobs(ctx, knobsOf(slowed.backendSpec)); err != nil {
			return nil, err
		}
		r, err := retriesRun(ctx, st, cfg, rate, run, events, v.name, v.settings)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", v.name, err)
		}
		fmt.Fprintf(stdout, "%-15s %6d requests, %5d errors, p50 %6.1f ms, p99 %7.1f ms, upstream/client %.2f after the slowdown, %d retries refused\n",
			v.name, r.Requests, r.Errors, r.P50MS, r.P99MS, r.Amplification, r.RetriesRefused)
		noteLoad(stdout, rep.Scenario.LoadAverage, v.name)
		rep.Results = append(rep.Results, r)
		if err := st.drain(ctx); err != nil {
			return nil, err
		}
	}
	if err := writeReportJSON(lr.out, rep); err != nil {
		return nil, err
	}
	return writeRetriesCharts(lr.out, rep)
}

// retriesRun runs one variant: a dispatcher with its settings, the load,
// the slowdown, and the dispatcher's retries read every second.
func retriesRun(ctx context.Context, st *stack, cfg config, rate int, run time.Duration, events []event,
	name string, settings map[string]string) (retriesRow, error) {
	d, err := st.startProxy(ctx, "dispatcher-"+name, append([]string{"STRATEGY=round-robin", "HEALTH_INTERVAL=0"}, settingsEnv(settings)...))
	if d != nil {
		defer d.proc.Stop()
	}
	if err != nil {
		return retriesRow{}, err
	}
	if err := st.checkProxy(ctx, d); err != nil {
		return retriesRow{}, err
	}
	before, err := d.picks(ctx)
	if err != nil {
		return retriesRow{}, err
	}
	secs := int(run / time.Second)
	// The retries counter, read at the start of each second and once the
	// load is over: retries[i+1]-retries[i] were made in second i.
	retries := make([]float64, secs+1)
	read := make([]bool, secs+1) // whether retries[i] was read
	read[0], read[secs] = true, true
	first, _, err := d.retryCounts(ctx)
	if err != nil {
		return retriesRow{}, err
	}
	var wg sync.WaitGroup
	sampleCtx, stop := context.WithCancel(ctx)
	start := time.Now()
	wg.Go(func() {
		for i := 1; i < secs; i++ {
			if wait(sampleCtx, time.Until(start.Add(time.Duration(i)*time.Second))) != nil {
				return
			}
			if n, _, err := d.retryCounts(sampleCtx); err == nil {
				retries[i], read[i] = n-first, true
			}
		}
	})
	o, ps, err := runTimeline(ctx, cfg, rate, run, []string{d.url}, name, events)
	stop()
	wg.Wait()
	if err != nil {
		return retriesRow{}, err
	}
	if err := ctx.Err(); err != nil {
		return retriesRow{}, err
	}
	last, refused, err := d.retryCounts(ctx)
	if err != nil {
		return retriesRow{}, err
	}
	retries[secs] = last - first
	fillReadings(retries, read)
	sent, err := st.sentSince(ctx, d, before, o.requests)
	if err != nil {
		return retriesRow{}, err
	}
	r := retriesRow{row: newRow(name, st.names(), o, sent), RetriesRefused: int64(refused), perSecondDoc: ps.doc()}
	from := int(events[0].at / time.Second)
	var client, upstream float64
	for i := range secs {
		n := max(retries[i+1]-retries[i], 0)
		up := float64(ps.sent[i]) + n
		r.UpstreamPerS = append(r.UpstreamPerS, up)
		amp := 0.0
		if ps.sent[i] > 0 {
			amp = round(up/float64(ps.sent[i]), 3)
		}
		r.AmplificationPerS = append(r.AmplificationPerS, amp)
		if i >= from {
			client += float64(ps.sent[i])
			upstream += up
		}
	}
	if client > 0 {
		r.Amplification = round(upstream/client, 3)
	}
	return r, nil
}

// retryCounts reads spread_proxy_retries_total and
// spread_proxy_retries_refused_total from d's /metrics.
func (d *dispatcher) retryCounts(ctx context.Context) (retries, refused float64, err error) {
	body, err := get(ctx, http.DefaultClient, d.admin, "/metrics")
	if err != nil {
		return 0, 0, err
	}
	defer body.Close()
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		switch name {
		case "spread_proxy_retries_total":
			retries, err = strconv.ParseFloat(v, 64)
		case "spread_proxy_retries_refused_total":
			refused, err = strconv.ParseFloat(v, 64)
		}
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %w", name, err)
		}
	}
	return retries, refused, sc.Err()
}

// writeRetriesCharts draws amplification.svg: upstream requests over
// client requests, second by second, one line per variant.
func writeRetriesCharts(dir string, r retriesReport) ([]string, error) {
	sc := r.Scenario
	p := newFreePlot("Upstream requests per client request",
		fmt.Sprintf("%d req/s, round robin, PROXY_TRY_TIMEOUT=250ms", sc.RateRPS),
		"time into the run (s)", "upstream requests ÷ client requests")
	p.Y.Min = 0.9
	var lines []series
	for _, res := range r.Results {
		lines = append(lines, secondsLine(retriesLegend(res.Variant, sc.Variants[res.Variant]), res.AmplificationPerS))
	}
	return timelineChart(dir, "amplification.svg", p, lines, sc.Events, sc.RunS)
}

// retriesLegend names a variant by its knobs.
func retriesLegend(name string, settings map[string]string) string {
	if settings["PROXY_RETRIES"] == "0" {
		return "PROXY_RETRIES=0"
	}
	s := "PROXY_RETRIES=" + settings["PROXY_RETRIES"] + ",\nPROXY_RETRY_ON=per-try-timeout"
	if b := settings["RETRY_BUDGET"]; b != "" && b != "0" {
		s += ",\nRETRY_BUDGET=" + b
	}
	return s
}

// fillReadings gives a counter's reading that failed (read[i] false) the
// next one's, so that the retries of the second before it and of its own
// are both counted in the second before: none is lost, none is counted
// twice, and no second shows the total since the start. The last reading
// must have been read.
func fillReadings(counts []float64, read []bool) {
	for i := len(counts) - 2; i >= 0; i-- {
		if !read[i] {
			counts[i] = counts[i+1]
		}
	}
}
