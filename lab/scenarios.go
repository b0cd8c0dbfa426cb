package main

import (
	"context"
	"encoding/json"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// batch is one scenario of `make lab` (LAB_SCENARIO): it starts what it
// needs, measures, and writes LAB_OUT/<name>/report.json and its charts.
// Each lives in a file of its own (slow.go, churn.go, herd.go, failure.go,
// retries.go).
type batch struct {
	name string
	what string // one line, for the log and lab help
	// files are the charts it writes beside report.json, each with
	// what it shows, for lab help; slow's are chart.go's charts.
	files [][2]string
	// run measures, writes report.json and the charts into lr.out, and
	// returns the charts' paths.
	run func(ctx context.Context, lr labRun) ([]string, error)
	// charts draws the charts again from report.json's bytes, into dir.
	charts func(dir string, report []byte) ([]string, error)
}

// redraw is a batch's charts: it decodes report.json as the scenario's
// own report type and draws the charts again with write.
func redraw[R any](write func(dir string, r R) ([]string, error)) func(dir string, report []byte) ([]string, error) {
	return func(dir string, report []byte) ([]string, error) {
		var r R
		if err := json.Unmarshal(report, &r); err != nil {
			return nil, err
		}
		return write(dir, r)
	}
}

// batches are the scenarios, in the order LAB_SCENARIO=all runs them.
var batches = []batch{slowBatch, churnBatch, herdBatch, failureBatch, retriesBatch}

func lookupBatch(name string) (batch, bool) {
	for _, b := range batches {
		if b.name == name {
			return b, true
		}
	}
	return batch{}, false
}

func batchNames() []string {
	out := make([]string, len(batches))
	for i, b := range batches {
		out[i] = b.name
	}
	return out
}

// labRun is what a scenario runs with: the settings, the programs, a
// directory for its logs, and LAB_OUT/<name>.
type labRun struct {
	cfg    config
	bins   binaries
	dir    string // logs
	out    string // report.json and the charts
	stdout io.Writer
}

// row is what every scenario's result row holds, one per variant; each
// scenario's own row embeds it and adds its measure.
type row struct {
	Variant  string             `json:"variant"`
	Requests int                `json:"requests"`
	Errors   int                `json:"errors"`
	P50MS    float64            `json:"p50_ms"`
	P99MS    float64            `json:"p99_ms"`
	Share    map[string]float64 `json:"share"` // by backend name: what the scenario's share says
}

// newRow sums up a variant: o is what the load generator saw, sent the
// requests by backend name that the share divides.
func newRow(variant string, names []string, o outcome, sent map[string]int64) row {
	p50, _, p99 := percentiles(o.latencies)
	return row{Variant: variant, Requests: o.requests, Errors: o.errors,
		P50MS: round(ms(p50), 3), P99MS: round(ms(p99), 3), Share: shares(names, sent)}
}

// common is what every new scenario's report says of the run: its name,
// what it asks, the machine, the date and the load average as it ended.
type common struct {
	Name     string `json:"name"`
	Question string `json:"question"`
	Machine  string `json:"machine"`
	Date     string `json:"date"`
	// Variants are the settings each variant's dispatchers ran with, on
	// top of the lab's own (docs/lab.md).
	Variants map[string]map[string]string `json:"variants"`
	// LoadAverage is the machine's one-minute load average as each
	// variant ended: above the CPUs, the lab's programs waited for them.
	LoadAverage map[string]float64 `json:"load_average_1m,omitempty"`
}

func newCommon(name, question string) common {
	return common{Name: name, Question: question, Machine: machine(), Date: time.Now().UTC().Format(time.DateOnly),
		Variants: map[string]map[string]string{}, LoadAverage: map[string]float64{}}
}

// variant is one of the settings a scenario compares: its name in the
// report, and the dispatchers' settings on top of the lab's own.
type variant struct {
	name     string
	settings map[string]string
}

// poolLoad is what a scenario's report says of the pool and the load on
// it: the backends, their capacity in all, the rate, how the requests
// arrived, how long a client waited, and what a result's share counts.
type poolLoad struct {
	Backends    []backendSpec `json:"backends"`
	CapacityRPS float64       `json:"capacity_rps"`
	RateRPS     int           `json:"rate_rps"`
	Arrivals    string        `json:"arrivals"`
	TimeoutS    float64       `json:"timeout_s"`
	Share       string        `json:"share"`
}

// newPoolLoad is the poolLoad of rate req/s on specs, with cfg's arrivals
// and timeout.
func newPoolLoad(specs []backendSpec, rate int, cfg config) poolLoad {
	return poolLoad{Backends: specs, CapacityRPS: round(capacityRPS(specs), 1), RateRPS: rate,
		Arrivals: cfg.arrivals, TimeoutS: cfg.timeout.Seconds(), Share: shareMeaning}
}

// writeReportJSON writes v as dir/report.json.
func writeReportJSON(dir string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "report.json"), append(b, '\n'), 0o644)
}

// settingsEnv turns a variant's settings into KEY=VALUE, sorted.
func settingsEnv(m map[string]string) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, k+"="+m[k])
	}
	return out
}

// wait sleeps for d, or less if ctx ends first.
func wait(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
