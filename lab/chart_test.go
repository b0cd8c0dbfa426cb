package main

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// testReport is a report of the default scenario with two strategies,
// the numbers of a real run.
func testReport(t *testing.T) report {
	t.Helper()
	cfg, err := loadConfig(envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	sc := newScenario(cfg)
	sc.RedisRoundTripsPerRequest = map[string]float64{"round-robin": 0.84, "p2c": 0.06}
	sc.StickyUsers = map[string]float64{"round-robin": 0.15, "p2c": 0.07}
	return report{Scenario: sc, Results: []result{
		{Strategy: "round-robin", Requests: 6187, Errors: 1943, P50MS: 47.3, P90MS: 5001.5, P99MS: 5009,
			Share: map[string]float64{"fast1": 0.3333, "fast2": 0.3334, "slow": 0.3333}},
		{Strategy: "p2c", Requests: 6187, P50MS: 42, P90MS: 54.5, P99MS: 521,
			Share: map[string]float64{"fast1": 0.4661, "fast2": 0.4687, "slow": 0.0651}},
	}}
}

// `lab charts` draws the four charts from a report.json alone, labelled
// with the strategies and the measured values.
func TestChartsFromReport(t *testing.T) {
	top := t.TempDir()
	dir := filepath.Join(top, "slow") // LAB_OUT/<scenario>
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	r := testReport(t)
	if err := writeReport(dir, r); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(t.Context(), []string{"charts"}, envOf(map[string]string{"LAB_OUT": top}), &out); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		file string
		want []string
	}{
		{"latency.svg", []string{">round-robin<", ">p2c<", ">5009<", ">521<", ">54<", ">p99<", ">timeout<"}},
		{"share.svg", []string{">33.3%<", ">6.5%<", ">46.9%<", ">slow: 200 ms each,<", ">4 in service at once<", ">fast1: 40 ms each,<", ">8 in service at once<"}},
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

// svgViewBox and svgFirstPath read a chart: its viewBox, and the first
// shape drawn in it (vgsvg writes one <path> per shape, in drawing order).
var (
	svgViewBox   = regexp.MustCompile(`viewBox="0 0 ([0-9.]+) ([0-9.]+)"`)
	svgFirstPath = regexp.MustCompile(`<path d="([^"]*)" style="fill:(#[0-9A-Fa-f]{6})`)
	svgNumber    = regexp.MustCompile(`-?[0-9.]+`)
)

// Every chart first paints its background over the whole canvas, legend
// included, so that its dark text reads on a dark page (GitHub's dark
// mode): nothing is drawn before it, and it covers the viewBox.
func TestChartsPaintTheWholeBackground(t *testing.T) {
	dir := t.TempDir()
	files, err := writeCharts(dir, testReport(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(charts) {
		t.Fatalf("got %d charts, want %d", len(files), len(charts))
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		svg := string(b)
		vb := svgViewBox.FindStringSubmatch(svg)
		if vb == nil {
			t.Fatalf("%s: no viewBox", f)
		}
		w, _ := strconv.ParseFloat(vb[1], 64)
		h, _ := strconv.ParseFloat(vb[2], 64)
		first := svgFirstPath.FindStringSubmatchIndex(svg)
		if first == nil {
			t.Fatalf("%s: no filled path", f)
		}
		if before := svg[:first[0]]; strings.Contains(before, "<text") || strings.Contains(before, "<path") {
			t.Errorf("%s: something is drawn before the background", filepath.Base(f))
		}
		d, fill := svg[first[2]:first[3]], svg[first[4]:first[5]]
		xmin, ymin, xmax, ymax := math.Inf(1), math.Inf(1), math.Inf(-1), math.Inf(-1)
		nums := svgNumber.FindAllString(d, -1)
		for i := 0; i+1 < len(nums); i += 2 {
			x, _ := strconv.ParseFloat(nums[i], 64)
			y, _ := strconv.ParseFloat(nums[i+1], 64)
			xmin, xmax, ymin, ymax = min(xmin, x), max(xmax, x), min(ymin, y), max(ymax, y)
		}
		if !strings.EqualFold(fill, "#FFFFFF") || xmin > 0 || ymin > 0 || xmax < w || ymax < h {
			t.Errorf("%s: the first shape is %s filled %s, covering %v..%v × %v..%v; want white over the viewBox 0..%v × 0..%v",
				filepath.Base(f), d, fill, xmin, xmax, ymin, ymax, w, h)
		}
	}
}

// svgTitle finds the title's lines: the text in the title's font size.
var svgTitle = regexp.MustCompile(`font-size:13px">([^<]*)</text>`)

// Each chart's title says what it shows and, on its second line, what the
// run measured, so that two charts of one kind from different runs
// (docs/lab/share.svg and docs/lab/10-users/share.svg) have different
// titles.
func TestChartTitlesSayTheScenario(t *testing.T) {
	r1000, r10 := testReport(t), testReport(t)
	r10.Scenario.Users, r10.Scenario.DurationS = 10, 10
	titles := map[string][]string{} // by file: one title per run
	for _, run := range []struct {
		r    report
		want string
	}{
		{r1000, "315 req/s (75% of the pool&#39;s capacity), 1000 users, 20 s per strategy"},
		{r10, "315 req/s (75% of the pool&#39;s capacity), 10 users, 10 s per strategy"},
	} {
		files, err := writeCharts(t.TempDir(), run.r)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			b, _ := os.ReadFile(f)
			var lines []string
			for _, m := range svgTitle.FindAllStringSubmatch(string(b), -1) {
				lines = append(lines, m[1])
			}
			if len(lines) != 2 || lines[1] != run.want {
				t.Errorf("%s of %d users: got title %q, want two lines, the second %q", filepath.Base(f), run.r.Scenario.Users, lines, run.want)
			}
			titles[filepath.Base(f)] = append(titles[filepath.Base(f)], strings.Join(lines, "\n"))
		}
	}
	for file, ts := range titles {
		if len(ts) != 2 || ts[0] == ts[1] {
			t.Errorf("%s: got titles %q for 1000 and 10 users, want two that differ", file, ts)
		}
	}
}
