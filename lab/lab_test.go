package main

import (
	"bytes"
	"encoding/json"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The whole lab on a very short run: it builds and starts the real
// programs (redis-server must be on PATH), runs every strategy, and writes
// report.json in the agreed shape and the two charts. What it asserts is
// plumbing, never timing: the lesson itself is what `make lab` measures.
func TestLabRun(t *testing.T) {
	out := filepath.Join(t.TempDir(), "lab")
	env := map[string]string{
		"LAB_OUT":           out,
		"LAB_DURATION":      "1s",
		"LAB_RATE":          "60",
		"LAB_ARRIVALS":      "constant",
		"LAB_FAST_LATENCY":  "1ms",
		"LAB_SLOW_LATENCY":  "5ms",
		"LAB_SLOW_CAPACITY": "2",
		"LAB_USERS":         "100",
		// Long enough that no request of this light load can time out: an
		// error here is a broken pipe, not a slow machine.
		"LAB_TIMEOUT": "30s",
	}
	var stdout bytes.Buffer
	if err := run(t.Context(), nil, envOf(env), &stdout); err != nil {
		t.Fatalf("%v\n%s", err, stdout.String())
	}
	t.Log(stdout.String())

	out = filepath.Join(out, "slow") // LAB_OUT/<scenario>
	raw, err := os.ReadFile(filepath.Join(out, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	// The shape, key by key: {"scenario": {..., "slow_backend": name},
	// "results": [{"strategy", "requests", "errors", "p50_ms", "p90_ms",
	// "p99_ms", "share": {backend: fraction}}]}.
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if got := slices.Sorted(maps.Keys(doc)); !slices.Equal(got, []string{"results", "scenario"}) {
		t.Fatalf("report.json has keys %q, want results and scenario", got)
	}
	var sc struct {
		SlowBackend string             `json:"slow_backend"`
		Redis       map[string]float64 `json:"redis_round_trips_per_request"`
		Sticky      map[string]float64 `json:"sticky_users"`
	}
	if err := json.Unmarshal(doc["scenario"], &sc); err != nil || sc.SlowBackend != slowName {
		t.Errorf("scenario.slow_backend: got %q (%v), want %q", sc.SlowBackend, err, slowName)
	}
	if got := slices.Sorted(maps.Keys(sc.Redis)); !slices.Equal(got, slices.Sorted(slices.Values(strategyLabels()))) {
		t.Errorf("scenario.redis_round_trips_per_request has strategies %q, want every one of %q", got, strategyLabels())
	}
	// Hashing on X-User keeps every user on one backend: the lab reads
	// the user of each answer back from its URL.
	if got := sc.Sticky["hash"]; got != 1 {
		t.Errorf("scenario.sticky_users[hash]: got %v, want 1 (%v)", got, sc.Sticky)
	}
	var results []map[string]json.RawMessage
	if err := json.Unmarshal(doc["results"], &results); err != nil {
		t.Fatal(err)
	}
	wantKeys := []string{"errors", "p50_ms", "p90_ms", "p99_ms", "requests", "share", "strategy"}
	var strategies []string
	for i, res := range results {
		if got := slices.Sorted(maps.Keys(res)); !slices.Equal(got, wantKeys) {
			t.Errorf("results[%d] has keys %q, want %q", i, got, wantKeys)
		}
		var r struct {
			Strategy         string
			Requests, Errors int
			P50, P90, P99    float64
			Share            map[string]float64
		}
		for _, f := range []struct {
			key string
			to  any
		}{{"strategy", &r.Strategy}, {"requests", &r.Requests}, {"errors", &r.Errors},
			{"p50_ms", &r.P50}, {"p90_ms", &r.P90}, {"p99_ms", &r.P99}, {"share", &r.Share}} {
			if err := json.Unmarshal(res[f.key], f.to); err != nil {
				t.Errorf("results[%d].%s: %v", i, f.key, err)
			}
		}
		strategies = append(strategies, r.Strategy)
		if r.Requests < 1 || r.Errors != 0 {
			t.Errorf("%s: got %d requests, %d errors; want some, all answered", r.Strategy, r.Requests, r.Errors)
		}
		if !(0 < r.P50 && r.P50 <= r.P90 && r.P90 <= r.P99) {
			t.Errorf("%s: got p50 %v, p90 %v, p99 %v ms; want 0 < p50 ≤ p90 ≤ p99", r.Strategy, r.P50, r.P90, r.P99)
		}
		if got := slices.Sorted(maps.Keys(r.Share)); !slices.Equal(got, []string{"fast1", "fast2", "slow"}) {
			t.Errorf("%s: share has backends %q, want fast1, fast2, slow", r.Strategy, got)
		}
		var sum float64
		for _, v := range r.Share {
			sum += v
		}
		if math.Abs(sum-1) > 0.001 {
			t.Errorf("%s: shares %v add up to %v, want 1", r.Strategy, r.Share, sum)
		}
		// Round robin over the shared list is exact: each backend is sent
		// a third of the requests, give or take one. The shares come from
		// the dispatcher's counts, mapped to the backends' names.
		if r.Strategy == "round-robin" {
			for name, v := range r.Share {
				if math.Abs(v-1.0/3) > 1/float64(r.Requests)+0.0001 {
					t.Errorf("round-robin sent %s a share of %v of %d requests, want a third, ±1 request", name, v, r.Requests)
				}
			}
		}
	}
	if !slices.Equal(strategies, strategyLabels()) {
		t.Errorf("got results for %q, want %q, in that order", strategies, strategyLabels())
	}

	for _, name := range []string{"latency.svg", "share.svg", "redis.svg", "sticky.svg"} {
		b, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Error(err)
			continue
		}
		svg := string(b)
		if !strings.Contains(svg, "<svg") || !strings.HasSuffix(strings.TrimSpace(svg), "</svg>") {
			t.Errorf("%s is not a whole SVG document", name)
		}
		for _, s := range strategyLabels() {
			if !strings.Contains(svg, ">"+s+"<") {
				t.Errorf("%s does not label strategy %s", name, s)
			}
		}
	}
	for _, s := range strategyLabels() {
		if !strings.Contains(stdout.String(), s) {
			t.Errorf("the table has no line for %s:\n%s", s, stdout.String())
		}
	}
}
