package main

import (
	"bytes"
	"encoding/json"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestMovedFraction(t *testing.T) {
	before := map[string]string{"a": "b1", "b": "b1", "c": "b2", "d": "b3"}
	for _, tc := range []struct {
		after map[string]string
		want  float64
	}{
		{map[string]string{"a": "b1", "b": "b1", "c": "b2", "d": "b3"}, 0},
		{map[string]string{"a": "b4", "b": "b1", "c": "b2", "d": "b3"}, 0.25},
		{map[string]string{"a": "b2", "b": "b3", "c": "b2"}, 2.0 / 3}, // d unanswered: left out
		{map[string]string{}, 0},
	} {
		if got := movedFraction(before, tc.after); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("movedFraction(%v, %v): got %v, want %v", before, tc.after, got, tc.want)
		}
	}
}

// readReport reads LAB_OUT/<scenario>/report.json, checks that it is
// {"scenario": {"name": scenario, ...}, "results": [...]} and that every row
// holds variant, requests, errors, p50_ms, p99_ms, share and the
// scenario's own keys, and returns the rows.
func readReport(t *testing.T, out, scenario string, own ...string) []map[string]json.RawMessage {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(out, scenario, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Scenario map[string]json.RawMessage   `json:"scenario"`
		Results  []map[string]json.RawMessage `json:"results"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	var name string
	json.Unmarshal(doc.Scenario["name"], &name)
	if name != scenario {
		t.Errorf("scenario.name: got %q, want %q", name, scenario)
	}
	var variants map[string]map[string]string
	if err := json.Unmarshal(doc.Scenario["variants"], &variants); err != nil || len(variants) == 0 {
		t.Errorf("scenario.variants: got %s (%v), want each variant's settings", doc.Scenario["variants"], err)
	}
	want := slices.Sorted(slices.Values(append([]string{"variant", "requests", "errors", "p50_ms", "p99_ms", "share"}, own...)))
	for i, r := range doc.Results {
		if got := slices.Sorted(maps.Keys(r)); !slices.Equal(got, want) {
			t.Errorf("results[%d] has keys %q, want %q", i, got, want)
		}
		var v string
		json.Unmarshal(r["variant"], &v)
		if _, ok := variants[v]; !ok {
			t.Errorf("results[%d].variant %q is not one of scenario.variants", i, v)
		}
	}
	return doc.Results
}

// churn through real dispatchers: with the list unchanged nobody moves;
// rendezvous moves only the users of the backend that joins or leaves (at
// most 1.5 × 1/N), modulo more than half.
// This is arithmetic, not timing: which backend answers each user does not
// depend on how fast anything runs.
func TestChurn(t *testing.T) {
	out := t.TempDir()
	var stdout bytes.Buffer
	env := map[string]string{"LAB_OUT": out, "LAB_SCENARIO": "churn", "LAB_CHURN_USERS": "2000"}
	if err := run(t.Context(), nil, envOf(env), &stdout); err != nil {
		t.Fatalf("%v\n%s", err, stdout.String())
	}
	t.Log(stdout.String())
	rows := readReport(t, out, "churn", "moved_fraction")
	var variants []string
	for _, r := range rows {
		var v string
		var moved map[string]float64
		var requests, errors int
		json.Unmarshal(r["variant"], &v)
		json.Unmarshal(r["moved_fraction"], &moved)
		json.Unmarshal(r["requests"], &requests)
		json.Unmarshal(r["errors"], &errors)
		variants = append(variants, v)
		if requests != 4*2000 || errors != 0 {
			t.Errorf("%s: got %d requests, %d errors; want 8000 (2000 users, four rounds), none failed", v, requests, errors)
		}
		// Without a change of the list, a hash of the key alone moves nobody.
		if got := moved["unchanged"]; v != "rendezvous-bounded" && got != 0 {
			t.Errorf("%s moved %v of the users with the list unchanged, want 0", v, got)
		}
		for _, ev := range []string{"add", "remove"} {
			got := moved[ev]
			switch v {
			case "rendezvous":
				if got <= 0 || got > 1.5*0.25 {
					t.Errorf("rendezvous moved %v of the users at %s, want above 0 and at most 1.5 × 1/4", got, ev)
				}
			case "modulo":
				if got <= 0.5 {
					t.Errorf("modulo moved %v of the users at %s, want more than half", got, ev)
				}
			}
		}
	}
	if want := []string{"modulo", "rendezvous", "rendezvous-bounded"}; !slices.Equal(variants, want) {
		t.Errorf("got variants %q, want %q", variants, want)
	}
	b, err := os.ReadFile(filepath.Join(out, "churn", "moved.svg"))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{">HASH_METHOD=modulo<", ">least possible: 1/N<", ">25.0%<"} {
		if !strings.Contains(string(b), w) {
			t.Errorf("moved.svg has no text %q", strings.Trim(w, "<>"))
		}
	}
}

// herd's plumbing on a short, light run: a row per strategy and number of
// dispatchers, each with its dispatchers, every request answered by a
// backend of the pool, and the charts naming each strategy's knobs.
func TestHerd(t *testing.T) {
	out := t.TempDir()
	var stdout bytes.Buffer
	env := map[string]string{"LAB_OUT": out, "LAB_SCENARIO": "herd", "LAB_HERD_DISPATCHERS": "1,2",
		"LAB_DURATION": "1s", "LAB_RATE": "40", "LAB_ARRIVALS": "constant", "LAB_FAST_LATENCY": "1ms",
		"LAB_SLOW_LATENCY": "5ms", "LAB_TIMEOUT": "30s"}
	if err := run(t.Context(), nil, envOf(env), &stdout); err != nil {
		t.Fatalf("%v\n%s", err, stdout.String())
	}
	rows := readReport(t, out, "herd", "dispatchers")
	var got []string
	for _, r := range rows {
		var v string
		var n, requests, errors int
		var share map[string]float64
		json.Unmarshal(r["variant"], &v)
		json.Unmarshal(r["dispatchers"], &n)
		json.Unmarshal(r["requests"], &requests)
		json.Unmarshal(r["errors"], &errors)
		json.Unmarshal(r["share"], &share)
		got = append(got, v+"×"+strconv.Itoa(n))
		var sum float64
		for _, s := range share {
			sum += s
		}
		if requests != 40 || errors != 0 || math.Abs(sum-1) > 0.001 {
			t.Errorf("%s ×%d: got %d requests, %d errors, shares adding up to %v; want 40, 0, 1", v, n, requests, errors, sum)
		}
	}
	want := []string{"least-conn×1", "least-conn×2", "least-conn-local×1", "least-conn-local×2", "p2c×1", "p2c×2", "least-time×1", "least-time×2"}
	if !slices.Equal(got, want) {
		t.Errorf("got rows %q, want %q", got, want)
	}
	for _, f := range []string{"p99.svg", "slow-share.svg"} {
		b, err := os.ReadFile(filepath.Join(out, "herd", f))
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range []string{">LEAST_CONN_SCOPE=local<", ">STRATEGY=p2c<", ">dispatchers on one list<"} {
			if !strings.Contains(string(b), w) {
				t.Errorf("%s has no text %q", f, strings.Trim(w, "<>"))
			}
		}
	}
}

// failure's plumbing on a short run: a row per mechanism, each with a
// count of errors for every second of the run that adds up to its errors.
func TestFailure(t *testing.T) {
	out := t.TempDir()
	var stdout bytes.Buffer
	env := map[string]string{"LAB_OUT": out, "LAB_SCENARIO": "failure", "LAB_FAILURE_RUN": "4s", "LAB_TIMEOUT": "30s"}
	if err := run(t.Context(), nil, envOf(env), &stdout); err != nil {
		t.Fatalf("%v\n%s", err, stdout.String())
	}
	t.Log(stdout.String())
	rows := readReport(t, out, "failure", "errors_per_s", "sent_per_s")
	var got []string
	for _, r := range rows {
		var v string
		var errors, requests int
		var perS, sentPerS []float64
		json.Unmarshal(r["variant"], &v)
		json.Unmarshal(r["errors"], &errors)
		json.Unmarshal(r["requests"], &requests)
		json.Unmarshal(r["errors_per_s"], &perS)
		json.Unmarshal(r["sent_per_s"], &sentPerS)
		got = append(got, v)
		var sum, sent float64
		for i := range perS {
			sum += perS[i]
			sent += sentPerS[i]
		}
		if len(perS) != 4 || len(sentPerS) != 4 || int(sum) != errors || int(sent) != requests {
			t.Errorf("%s: errors_per_s %v and sent_per_s %v: want 4 seconds adding up to %d errors and %d requests", v, perS, sentPerS, errors, requests)
		}
	}
	if want := []string{"health-checks", "retries", "ejection", "ejection+slow-start"}; !slices.Equal(got, want) {
		t.Errorf("got rows %q, want %q", got, want)
	}
	b, err := os.ReadFile(filepath.Join(out, "failure", "errors.svg"))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{">+ PROXY_RETRIES=2<", ">backend3 down<", ">time into the run (s)<"} {
		if !strings.Contains(string(b), w) {
			t.Errorf("errors.svg has no text %q", strings.Trim(w, "<>"))
		}
	}
}

// retries' plumbing on a short run: a row per variant with its
// amplification, and a series for every second whose upstream requests
// are at least the clients'.
func TestRetries(t *testing.T) {
	out := t.TempDir()
	var stdout bytes.Buffer
	env := map[string]string{"LAB_OUT": out, "LAB_SCENARIO": "retries", "LAB_RETRIES_RUN": "3s", "LAB_TIMEOUT": "30s"}
	if err := run(t.Context(), nil, envOf(env), &stdout); err != nil {
		t.Fatalf("%v\n%s", err, stdout.String())
	}
	t.Log(stdout.String())
	rows := readReport(t, out, "retries", "amplification", "amplification_per_s", "retries_refused",
		"errors_per_s", "sent_per_s", "upstream_per_s")
	var got []string
	for _, r := range rows {
		var v string
		var amp float64
		var sent, up []float64
		json.Unmarshal(r["variant"], &v)
		json.Unmarshal(r["amplification"], &amp)
		json.Unmarshal(r["sent_per_s"], &sent)
		json.Unmarshal(r["upstream_per_s"], &up)
		got = append(got, v)
		if len(sent) != 3 || len(up) != 3 {
			t.Errorf("%s: sent_per_s %v, upstream_per_s %v: want 3 seconds each", v, sent, up)
			continue
		}
		for i := range sent {
			if up[i] < sent[i] {
				t.Errorf("%s: second %d: %v upstream requests for %v sent by the clients, want at least as many", v, i, up[i], sent[i])
			}
		}
		if amp < 1 || (v == "no-retries" && amp != 1) {
			t.Errorf("%s: amplification %v, want 1 or more (exactly 1 without retries)", v, amp)
		}
	}
	if want := []string{"no-retries", "retries", "retries+budget"}; !slices.Equal(got, want) {
		t.Errorf("got rows %q, want %q", got, want)
	}
	b, err := os.ReadFile(filepath.Join(out, "retries", "amplification.svg"))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{">RETRY_BUDGET=20%<", ">PROXY_RETRIES=0<", ">upstream requests ÷ client requests<"} {
		if !strings.Contains(string(b), w) {
			t.Errorf("amplification.svg has no text %q", strings.Trim(w, "<>"))
		}
	}
}
