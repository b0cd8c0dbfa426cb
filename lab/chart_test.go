package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// `lab charts` draws the four charts from a report.json alone, labelled
// with the strategies and the measured values.
func TestChartsFromReport(t *testing.T) {
	dir := t.TempDir()
	cfg, err := loadConfig(envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	sc := newScenario(cfg)
	sc.RedisRoundTripsPerRequest = map[string]float64{"round-robin": 0.84, "p2c": 0.06}
	sc.StickyUsers = map[string]float64{"round-robin": 0.15, "p2c": 0.07}
	r := report{Scenario: sc, Results: []result{
		{Strategy: "round-robin", Requests: 6187, Errors: 1943, P50MS: 47.3, P90MS: 5001.5, P99MS: 5009,
			Share: map[string]float64{"fast1": 0.3333, "fast2": 0.3334, "slow": 0.3333}},
		{Strategy: "p2c", Requests: 6187, P50MS: 42, P90MS: 54.5, P99MS: 521,
			Share: map[string]float64{"fast1": 0.4661, "fast2": 0.4687, "slow": 0.0651}},
	}}
	if err := writeReport(dir, r); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(t.Context(), []string{"charts"}, envOf(map[string]string{"LAB_OUT": dir}), &out); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		file string
		want []string
	}{
		{"latency.svg", []string{">round-robin<", ">p2c<", ">5009<", ">521<", ">54<", ">p99<", ">timeout<"}},
		{"share.svg", []string{">33.3%<", ">6.5%<", ">46.9%<", ">slow 200ms×4<", ">fast1 40ms×8<"}},
		{"redis.svg", []string{">0.84<", ">0.06<"}},
		{"sticky.svg", []string{">15%<", ">7%<"}},
	} {
		b, err := os.ReadFile(filepath.Join(dir, c.file))
		if err != nil {
			t.Error(err)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(string(b), w) {
				t.Errorf("%s has no text %q", c.file, strings.Trim(w, "<>"))
			}
		}
	}
	if !strings.Contains(out.String(), "sticky.svg") {
		t.Errorf("lab charts printed %q, want the files it wrote", out.String())
	}
}

// Without a report there is nothing to draw, and the error says which file
// is missing.
func TestChartsWithoutReport(t *testing.T) {
	dir := t.TempDir()
	err := run(t.Context(), []string{"charts"}, envOf(map[string]string{"LAB_OUT": dir}), &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "report.json") {
		t.Errorf("got %v, want an error naming report.json", err)
	}
}
