package main

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// The default scenario: two fast backends of 8 × 40 ms (200 req/s each),
// one slow one of 4 × 200 ms (20 req/s), and 75% of their 420 req/s.
func TestDefaultScenario(t *testing.T) {
	cfg, err := loadConfig(envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, b := range cfg.backends {
		got = append(got, b.Name+" "+b.latency.String()+" ×"+strconv.Itoa(b.Capacity))
	}
	if want := []string{"fast1 40ms ×8", "fast2 40ms ×8", "slow 200ms ×4"}; strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Errorf("got backends %q, want %q", got, want)
	}
	if c := capacityRPS(cfg.backends); math.Abs(c-420) > 1e-9 {
		t.Errorf("got capacity %v req/s, want 420", c)
	}
	if cfg.rate != 315 {
		t.Errorf("got rate %d req/s, want 315 (75%% of 420)", cfg.rate)
	}
	if want := []string{"round-robin", "hash", "hash-bounded", "least-conn", "least-time", "p2c", "random"}; strings.Join(cfg.strategies, ",") != strings.Join(want, ",") {
		t.Errorf("got strategies %q, want %q", cfg.strategies, want)
	}
	if cfg.duration != 20*time.Second || cfg.timeout != 5*time.Second || cfg.out != "docs/lab" || cfg.arrivals != "poisson" {
		t.Errorf("got duration %s, timeout %s, out %q, arrivals %q; want 20s, 5s, docs/lab, poisson",
			cfg.duration, cfg.timeout, cfg.out, cfg.arrivals)
	}
}

// Jitter adds half its width to the mean service time, so it lowers the
// capacity and the default rate with it; LAB_RATE overrides the default.
func TestRateFollowsTheScenario(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want int
	}{
		{map[string]string{"LAB_FAST": "3", "LAB_FAST_LATENCY": "10ms"}, 1815}, // 0.75 × (3×800 + 4/200ms)
		{map[string]string{"LAB_JITTER": "20ms"}, 254},                         // 0.75 × (2×8/50ms + 4/210ms)
		{map[string]string{"LAB_RATE": "123"}, 123},
	} {
		cfg, err := loadConfig(envOf(tc.env))
		if err != nil {
			t.Fatalf("%v: %v", tc.env, err)
		}
		if cfg.rate != tc.want {
			t.Errorf("%v: got rate %d, want %d", tc.env, cfg.rate, tc.want)
		}
	}
}

// A bad value stops the lab before it starts anything or writes anything,
// with a message that names the setting.
func TestBadSettingsChangeNothing(t *testing.T) {
	for _, tc := range []struct{ name, value string }{
		{"LAB_DURATION", "soon"},
		{"LAB_DURATION", "-1s"},
		{"LAB_RATE", "0"},
		{"LAB_RATE", "fast"},
		{"LAB_STRATEGIES", "round-robin,fastest"},
		{"LAB_STRATEGIES", "p2c,p2c"},
		{"LAB_ARRIVALS", "bursty"},
		{"LAB_TIMEOUT", "0s"},
		{"LAB_USERS", "0"},
		{"LAB_FAST", "none"},
		{"LAB_FAST_LATENCY", "0"},
		{"LAB_FAST_CAPACITY", "0"},
		{"LAB_SLOW_LATENCY", "slow"},
		{"LAB_SLOW_CAPACITY", "-2"},
		{"LAB_JITTER", "-5ms"},
		{"LAB_SEED", "-1"},
		{"LAB_SCENARIO", "slowest"},
		{"LAB_SCENARIO", "slow,slow"},
		{"LAB_CHURN_USERS", "5"},
		{"LAB_HERD_DISPATCHERS", "1,2,2"},
		{"LAB_HERD_DISPATCHERS", "0"},
		{"LAB_HERD_DISPATCHERS", "17"},
		{"LAB_FAILURE_RUN", "1s"},
		{"LAB_FAILURE_RUN", "long"},
		{"LAB_RETRIES_RUN", "2s"},
	} {
		out := filepath.Join(t.TempDir(), "out")
		var stdout bytes.Buffer
		err := run(t.Context(), nil, envOf(map[string]string{tc.name: tc.value, "LAB_OUT": out}), &stdout)
		if err == nil || !strings.Contains(err.Error(), tc.name) || !strings.Contains(err.Error(), "want") {
			t.Errorf("%s=%q: got error %v, want one naming %s and what it accepts", tc.name, tc.value, err, tc.name)
		}
		if _, statErr := os.Stat(out); !os.IsNotExist(statErr) {
			t.Errorf("%s=%q: LAB_OUT was created (stat: %v), want nothing written", tc.name, tc.value, statErr)
		}
		if stdout.Len() > 0 {
			t.Errorf("%s=%q: printed %q, want nothing", tc.name, tc.value, stdout.String())
		}
	}
}

func TestArguments(t *testing.T) {
	var out bytes.Buffer
	if err := run(t.Context(), []string{"help"}, envOf(nil), &out); err != nil {
		t.Fatal(err)
	}
	for _, s := range settings {
		if !strings.Contains(out.String(), s.name) {
			t.Errorf("lab help does not list %s:\n%s", s.name, out.String())
		}
	}
	// Every file the lab writes, each chart included.
	cfg, err := loadConfig(envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	files, err := writeCharts(t.TempDir(), report{Scenario: newScenario(cfg), Results: []result{{Strategy: "p2c"}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range append(files, "report.json") {
		if name := filepath.Base(f); !strings.Contains(out.String(), "  "+name+" ") {
			t.Errorf("lab help does not list %s, which the lab writes:\n%s", name, out.String())
		}
	}
	if err := run(t.Context(), []string{"-duration", "5s"}, envOf(nil), &out); err == nil || !strings.Contains(err.Error(), "environment") {
		t.Errorf("lab -duration 5s: got error %v, want one saying settings come from the environment", err)
	}
}

// Every setting is documented in docs/lab.md's table, with its default.
func TestDocsListEverySetting(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "docs", "lab.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range settings {
		def := "`" + s.def + "`"
		if s.def == "" {
			def = "computed"
		}
		row := "| `" + s.name + "` | " + def + " |"
		if !strings.Contains(string(b), row) {
			t.Errorf("docs/lab.md has no row starting %q", row)
		}
	}
}
