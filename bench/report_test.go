package main

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"
)

// rounds makes three rounds of measurements of one contestant.
func rounds(key string, rps [3]float64, p99 [3]time.Duration, rss float64, lmove float64, errs int64) []measurement {
	var ms []measurement
	for i := range 3 {
		ms = append(ms, measurement{round: i + 1, key: key, rssMiB: rss + float64(i), lmovePerRequest: lmove + float64(i)/100,
			result: result{requests: int64(rps[i]) * 6, rps: rps[i], p50: p99[i] / 4, p99: p99[i], errors: errs}})
	}
	return ms
}

const msec = time.Millisecond

// The summary's figures are the medians of the rounds, the ratios are the
// group's dispatcher ÷ the contestant, and the per-turn ratios compare
// slices of the same turn.
func TestSummarize(t *testing.T) {
	cs := contestants([]string{groupRedirect, groupProxy}, map[string]string{"haproxy": "", "caddy": ""})
	var runs []measurement
	for _, r := range [][]measurement{
		rounds("redis", [3]float64{30000, 36000, 33000}, [3]time.Duration{4 * msec, 6 * msec, 5 * msec}, 19, 1, 0),
		rounds("local", [3]float64{40000, 50000, 44000}, [3]time.Duration{2 * msec, 3 * msec, 2500 * time.Microsecond}, 18, 0, 0),
		rounds("haproxy-redir", [3]float64{30000, 30000, 30000}, [3]time.Duration{4 * msec, 4 * msec, 4 * msec}, 10, 0, 0),
		rounds("haproxy-rules", [3]float64{36000, 36000, 36000}, [3]time.Duration{3 * msec, 3 * msec, 3 * msec}, 11, 0, 0),
		rounds("proxy", [3]float64{8000, 9000, 8500}, [3]time.Duration{10 * msec, 10 * msec, 10 * msec}, 20, 1, 0),
		rounds("caddy", [3]float64{8500, 8500, 8500}, [3]time.Duration{8 * msec, 8 * msec, 8 * msec}, 40, 0, 0),
		rounds("haproxy", [3]float64{10000, 10000, 10000}, [3]time.Duration{5 * msec, 5 * msec, 5 * msec}, 12, 0, 1),
	} {
		runs = append(runs, r...)
	}
	turns := []map[string]float64{
		{"redis": 30000, "local": 40000, "haproxy-redir": 30000, "haproxy-rules": 36000, "proxy": 8000, "caddy": 8000, "haproxy": 10000},
		{"redis": 36000, "local": 40000, "haproxy-redir": 30000, "haproxy-rules": 36000, "proxy": 9000, "caddy": 8000, "haproxy": 10000},
		{"redis": 33000, "local": 44000, "haproxy-redir": 30000, "haproxy-rules": 36000, "proxy": 8500, "caddy": 8500, "haproxy": 0}, // a failed slice counts in no turn ratio
	}
	rows := summarize(cs, runs, turns)
	type fig struct {
		key                        string
		ref                        bool
		rps                        float64
		p99                        time.Duration
		rpsRatio, p99Ratio         float64
		turnLow, turnMid, turnHigh float64
		rssMiB, lmove              float64
		errors                     int64
	}
	want := []fig{
		{"redis", true, 33000, 5 * msec, 0, 0, 0, 0, 0, 21, 1, 0},
		{"local", false, 44000, 2500 * time.Microsecond, 0.75, 2, 0.75, 0.75, 0.9, 20, 0, 0},
		{"haproxy-redir", false, 30000, 4 * msec, 1.1, 1.25, 1, 1.1, 1.2, 12, 0, 0},
		{"haproxy-rules", false, 36000, 3 * msec, 0.916666667, 1.666666667, 0.833333333, 0.916666667, 1, 13, 0, 0},
		{"proxy", true, 8500, 10 * msec, 0, 0, 0, 0, 0, 22, 1, 0},
		{"caddy", false, 8500, 8 * msec, 1, 1.25, 1, 1, 1.125, 42, 0, 0},
		{"haproxy", false, 10000, 5 * msec, 0.85, 2, 0.8, 0.85, 0.9, 14, 0, 3},
	}
	if len(rows) != len(want) {
		t.Fatalf("got %d rows, want %d", len(rows), len(want))
	}
	for i, r := range rows {
		got := fig{r.key, r.ref, r.rps, r.p99, round9(r.rpsRatio), round9(r.p99Ratio),
			round9(r.turnLow), round9(r.turnMid), round9(r.turnHigh), r.rssMiB, r.lmovePerRequest, r.errors}
		if got != want[i] {
			t.Errorf("row %d: got %+v, want %+v", i, got, want[i])
		}
	}

	var out bytes.Buffer
	err := report(&out, cs, runs, turns, nil)
	wantChecks := []string{
		"ok   redirect: throughput ROTATION=redis / ROTATION=local = 0.750 (target ≥ 0.7)",
		"ok   redirect: p99 ROTATION=redis / ROTATION=local = 2.000 (target ≤ 2.0)",
		"ok   LMOVE per request served, dispatcher ROTATION=redis, lowest round = 1.000 (target ≥ 1)",
		"ok   LMOVE per request served, dispatcher MODE=proxy ROTATION=redis, lowest round = 1.000 (target ≥ 1)",
		"ok   dispatchers' peak RSS = 21.0 MiB dispatcher ROTATION=redis, 20.0 MiB dispatcher ROTATION=local, 22.0 MiB dispatcher MODE=proxy ROTATION=redis (target ≤ 50 MiB)",
		"MISS failed requests = 3 HAProxy roundrobin (target 0)",
		"MISS issue 15: redirect throughput ROTATION=redis / HAProxy redir = 1.100 (target ≥ 1.2)",
		"ok   issue 15: proxy throughput MODE=proxy / Caddy = 1.000 (target ≥ 1.0)",
		"MISS issue 15: proxy p99 MODE=proxy / Caddy = 1.250 (target ≤ 1.0)",
		"MISS issue 24: redirect throughput ROTATION=redis / HAProxy redir = 1.100 (target ≥ 1.3)",
		// issue 24's proxy goals print, but a miss does not fail the bench
		"open issue 24: proxy throughput MODE=proxy / HAProxy = 0.850 (target ≥ 1.0)",
		"open issue 24: proxy p99 MODE=proxy / HAProxy = 2.000 (target ≤ 1.0)",
	}
	for _, w := range wantChecks {
		if !strings.Contains(out.String(), w+"\n") {
			t.Errorf("report lacks the line %q; got:\n%s", w, out.String())
		}
	}
	if err == nil || err.Error() != "4 of 10 targets missed" {
		t.Errorf("got error %v, want \"4 of 10 targets missed\"", err)
	}
	for _, w := range []string{"HAProxy roundrobin + redir", "1.10 ×", "1.25 ×", "1.00–1.10–1.20", "0.75–0.75–0.90"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("the table lacks %q; got:\n%s", w, out.String())
		}
	}
}

// A target whose peer did not run is skipped, says which, and does not
// count as missed.
func TestChecksSkipMissingPeers(t *testing.T) {
	cs := contestants([]string{groupProxy}, map[string]string{})
	runs := rounds("proxy", [3]float64{8000, 9000, 8500}, [3]time.Duration{10 * msec, 10 * msec, 10 * msec}, 20, 1, 0)
	var out bytes.Buffer
	if err := report(&out, cs, runs, nil, nil); err != nil {
		t.Errorf("got error %v, want none: every target that ran is met", err)
	}
	for _, w := range []string{
		"skip issue 15: proxy throughput MODE=proxy / Caddy (target ≥ 1.0): caddy did not run\n",
		"skip issue 15: proxy p99 MODE=proxy / Caddy (target ≤ 1.0): caddy did not run\n",
		"skip issue 24: proxy throughput MODE=proxy / HAProxy (target ≥ 1.0): haproxy did not run\n",
		"skip issue 24: proxy throughput MODE=proxy / nginx (target ≥ 0.9): nginx did not run\n",
	} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("report lacks the line %q; got:\n%s", w, out.String())
		}
	}
	for _, absent := range []string{"ROTATION=local", "HAProxy redir"} {
		if strings.Contains(out.String(), absent) {
			t.Errorf("the redirect group did not run, but the report mentions %q:\n%s", absent, out.String())
		}
	}
}

// The long group holds each strategy on 10,000 entries to itself on 3, in
// requests/s, counts the bytes Redis received per request (the highest
// round), and holds each idle dashboard to 64 KiB/s.
func TestLongGroupChecks(t *testing.T) {
	cs := contestants([]string{groupLong}, nil)
	var runs []measurement
	for _, r := range []struct {
		key   string
		rps   float64
		bytes [3]float64
	}{
		{"lc-3", 4000, [3]float64{150, 160, 155}},
		{"lc-10k", 2400, [3]float64{300, 1100, 400}},
		{"rr-3", 9000, [3]float64{90, 90, 90}},
		{"rr-10k", 3000, [3]float64{95, 95, 95}},
	} {
		for i, m := range rounds(r.key, [3]float64{r.rps, r.rps, r.rps}, [3]time.Duration{msec, msec, msec}, 20, 1, 0) {
			m.redisBytesPerRequest = r.bytes[i]
			runs = append(runs, m)
		}
	}
	var out bytes.Buffer
	err := report(&out, cs, runs, nil, map[string]float64{"lc-10k": 120, "rr-10k": 70000})
	for _, w := range []string{
		"ok   issue 21: least-conn throughput 10,000 entries / 3 entries = 0.600 (target ≥ 0.5)",
		"MISS issue 21: round robin throughput 10,000 entries / 3 entries = 0.333 (target ≥ 0.5)",
		"ok   issue 21: bytes Redis received per request, least-conn, 3 entries, highest round = 160 (target ≤ 1024)",
		"MISS issue 21: bytes Redis received per request, least-conn, 10,000 entries, highest round = 1100 (target ≤ 1024)",
		"ok   issue 21: an idle dashboard, least-conn, 10,000 entries = 120 bytes/s over 3s (target ≤ 65536)",
		"MISS issue 21: an idle dashboard, round robin, 10,000 entries = 70000 bytes/s over 3s (target ≤ 65536)",
		"ok   dispatchers' peak RSS = 22.0 MiB least-conn, 3 entries, 22.0 MiB round robin, 3 entries (target ≤ 50 MiB)",
		"note peak RSS on the long list = 22.0 MiB least-conn, 10,000 entries, 22.0 MiB round robin, 10,000 entries (no target",
	} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("report lacks the line %q; got:\n%s", w, out.String())
		}
	}
	if err == nil || !strings.HasPrefix(err.Error(), "3 of ") {
		t.Errorf("got error %v, want 3 targets missed", err)
	}
}

// round9 rounds a ratio to 9 decimals, so that 1.1 is 33000 / 30000.
func round9(x float64) float64 { return math.Round(x*1e9) / 1e9 }
