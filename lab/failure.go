package main

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// The failure scenario: a backend of three dies a quarter into the run (its
// port refuses connections: CONTROL's down) and comes back at five
// eighths (10 s and 25 s of LAB_FAILURE_RUN's 40 s), under round robin at
// 40% of the pool's capacity, so that the two others can carry the load.
// How many requests fail, and for how long, with each mechanism: active
// health checks only, proxy retries, outlier ejection, ejection with slow
// start? Each runs on a list of its own, so that one's ejection history
// does not lengthen the next one's.
var failureBatch = batch{name: "failure",
	what:  "a backend dies and comes back: errors per second with health checks only, retries, ejection, ejection + slow start",
	files: [][2]string{{"errors.svg", "errors per second over the run, one line per mechanism"}},
	run:   runFailure, charts: redraw(writeFailureCharts)}

// failureVariants are the mechanisms, in order. Every one runs health
// checks every second (two failed probes mark a backend down, two passed
// bring it back: the defaults).
var failureVariants = []variant{
	{"health-checks", map[string]string{"HEALTH_INTERVAL": "1s", "PROXY_RETRIES": "0", "EJECT_AFTER": "0"}},
	{"retries", map[string]string{"HEALTH_INTERVAL": "1s", "PROXY_RETRIES": "2", "EJECT_AFTER": "0"}},
	{"ejection", map[string]string{"HEALTH_INTERVAL": "1s", "PROXY_RETRIES": "0", "EJECT_AFTER": "5", "EJECT_TIME": "5s"}},
	{"ejection+slow-start", map[string]string{"HEALTH_INTERVAL": "1s", "PROXY_RETRIES": "0", "EJECT_AFTER": "5", "EJECT_TIME": "5s", "SLOW_START": "10s"}},
}

// failureLoad is the failure scenario's rate as a share of the pool's
// capacity: the two backends left carry it at 60% of theirs.
const failureLoad = 0.4

type failureReport struct {
	Scenario failureScenario `json:"scenario"`
	Results  []failureRow    `json:"results"`
}

type failureScenario struct {
	common
	poolLoad
	Victim   string     `json:"victim"` // the backend that dies
	Strategy string     `json:"strategy"`
	RunS     float64    `json:"run_s"`
	Events   []eventDoc `json:"events"`
}

type failureRow struct {
	row
	perSecondDoc
}

func failureSpecs() []backendSpec {
	var specs []backendSpec
	for i := range 3 {
		specs = append(specs, newBackendSpec(fmt.Sprintf("backend%d", i+1), 40*time.Millisecond, 0, 8))
	}
	return specs
}

func runFailure(ctx context.Context, lr labRun) ([]string, error) {
	cfg, stdout := lr.cfg, lr.stdout
	specs := failureSpecs()
	st, err := startStack(ctx, lr.dir, lr.bins, specs, true)
	defer st.stop()
	if err != nil {
		return nil, err
	}
	victim := st.backends[len(st.backends)-1]
	run := cfg.failureRun
	events := []event{
		{at: run / 4, what: victim.Name + " down", do: func(ctx context.Context) error {
			return victim.setKnobs(ctx, map[string]any{"down": true})
		}},
		{at: run * 5 / 8, what: victim.Name + " up", do: func(ctx context.Context) error {
			return victim.setKnobs(ctx, map[string]any{"down": false})
		}},
	}
	rate := int(failureLoad * capacityRPS(specs))
	rep := failureReport{Scenario: failureScenario{
		common:   newCommon("failure", "A backend dies mid-run: how many requests fail before each mechanism reacts?"),
		poolLoad: newPoolLoad(specs, rate, cfg), Victim: victim.Name, Strategy: "round-robin",
		RunS: run.Seconds(), Events: eventDocs(events)}}
	fmt.Fprintf(stdout, "pool: %s; %d req/s (%.0f%% of capacity), round robin; %s down at %s, up at %s of %s\n",
		poolString(specs), rate, 100*failureLoad, victim.Name, events[0].at, events[1].at, run)
	for _, v := range failureVariants {
		rep.Scenario.Variants[v.name] = v.settings
		key := "failure-" + v.name
		if err := st.seederOn(ctx, key, append([]string{"seed"}, st.urls()...)...); err != nil {
			return nil, err
		}
		d, err := st.startProxy(ctx, "dispatcher-"+v.name,
			append([]string{"STRATEGY=round-robin", "REDIS_KEY=" + key}, settingsEnv(v.settings)...))
		if d != nil {
			defer d.proc.Stop()
		}
		if err != nil {
			return nil, err
		}
		if err := st.checkProxy(ctx, d); err != nil {
			return nil, err
		}
		before, err := d.picks(ctx)
		if err != nil {
			return nil, err
		}
		o, ps, err := runTimeline(ctx, cfg, rate, run, []string{d.url}, v.name, events)
		if err != nil {
			return nil, err
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		sent, err := st.sentSince(ctx, d, before, o.requests)
		if err != nil {
			return nil, err
		}
		d.proc.Stop()
		r := failureRow{row: newRow(v.name, st.names(), o, sent), perSecondDoc: ps.doc()}
		fmt.Fprintf(stdout, "%-20s %6d requests, %5d errors (%s), p50 %6.1f ms, p99 %7.1f ms\n",
			v.name, r.Requests, r.Errors, kindsString(o.errorKinds), r.P50MS, r.P99MS)
		noteLoad(stdout, rep.Scenario.LoadAverage, v.name)
		rep.Results = append(rep.Results, r)
		if err := st.drain(ctx); err != nil {
			return nil, err
		}
	}
	if err := writeReportJSON(lr.out, rep); err != nil {
		return nil, err
	}
	return writeFailureCharts(lr.out, rep)
}

// writeFailureCharts draws errors.svg: errors per second over the run,
// one line per mechanism, the events marked.
func writeFailureCharts(dir string, r failureReport) ([]string, error) {
	sc := r.Scenario
	p := newFreePlot("Errors per second as a backend dies",
		fmt.Sprintf("%d req/s, round robin over %d backends", sc.RateRPS, len(sc.Backends)),
		"time into the run (s)", "errors per second (by when sent)")
	p.Y.Min = 0
	var lines []series
	for _, res := range r.Results {
		lines = append(lines, secondsLine(failureLegend(res.Variant, sc.Variants[res.Variant]), res.ErrorsPerS))
	}
	return timelineChart(dir, "errors.svg", p, lines, sc.Events, sc.RunS)
}

// failureLegend names a mechanism by the knobs that differ from health
// checks alone: "PROXY_RETRIES=2".
func failureLegend(name string, settings map[string]string) string {
	switch name {
	case "health-checks":
		return "health checks only:\nHEALTH_INTERVAL=1s"
	case "retries":
		return "+ PROXY_RETRIES=" + settings["PROXY_RETRIES"]
	}
	parts := []string{"+ EJECT_AFTER=" + settings["EJECT_AFTER"], "EJECT_TIME=" + settings["EJECT_TIME"]}
	if s := settings["SLOW_START"]; s != "" {
		parts = append(parts, "SLOW_START="+s)
	}
	return strings.Join(parts, ",\n")
}
