package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// report is report.json: the scenario, then one result per strategy, in
// the order they ran.
type report struct {
	Scenario scenario `json:"scenario"`
	Results  []result `json:"results"`
}

// scenario says what was measured, and on what.
type scenario struct {
	Backends    []backendSpec `json:"backends"`
	SlowBackend string        `json:"slow_backend"` // its key in each result's share
	CapacityRPS float64       `json:"capacity_rps"` // sum of the backends' capacity_rps
	RateRPS     int           `json:"rate_rps"`
	Load        float64       `json:"load"` // rate / capacity
	Arrivals    string        `json:"arrivals"`
	DurationS   float64       `json:"duration_s"` // per strategy
	TimeoutS    float64       `json:"timeout_s"`
	Users       int           `json:"users"`
	HashKey     string        `json:"hash_key"`
	Seed        uint64        `json:"seed"`
	Dispatchers int           `json:"dispatchers"`
	Share       string        `json:"share"` // what a share counts
	Machine     string        `json:"machine"`
	Date        string        `json:"date"`
	// RedisRoundTripsPerRequest is, by strategy, the reads Redis
	// processed while the strategy ran (one per round trip: a command, a
	// pipeline or a script), over the requests sent: what the shared state
	// costs, on the request path or in the background.
	RedisRoundTripsPerRequest map[string]float64 `json:"redis_round_trips_per_request"`
	// StickyUsers is, by strategy, the share of the users with two
	// answers or more whose answers all came from one backend.
	StickyUsers map[string]float64 `json:"sticky_users"`
	// LoadAverage is, by strategy, the machine's one-minute load average
	// when its run ended: above the number of CPUs, other programs were
	// competing for them.
	LoadAverage map[string]float64 `json:"load_average_1m,omitempty"`
}

// shareMeaning is scenario.share.
const shareMeaning = "fraction of the strategy's requests that the dispatcher sent to each backend " +
	"(its " + requestsMetric + " counter), answered in time or not"

// result is one strategy's line.
type result struct {
	Strategy string             `json:"strategy"`
	Requests int                `json:"requests"`
	Errors   int                `json:"errors"`
	P50MS    float64            `json:"p50_ms"`
	P90MS    float64            `json:"p90_ms"`
	P99MS    float64            `json:"p99_ms"`
	Share    map[string]float64 `json:"share"`

	answered        map[string]int // successful answers by X-Backend, for the table
	sent            map[string]int64
	kinds           map[string]int
	redisPerRequest float64
	sticky          float64
}

// newResult sums up one strategy: o is what the load generator saw, sent
// what the dispatcher counted by backend name.
func newResult(strategy string, names []string, o outcome, sent map[string]int64) result {
	p50, p90, p99 := percentiles(o.latencies)
	r := result{Strategy: strategy, Requests: o.requests, Errors: o.errors,
		P50MS: round(ms(p50), 3), P90MS: round(ms(p90), 3), P99MS: round(ms(p99), 3),
		Share: shares(names, sent), answered: o.answered, sent: sent, kinds: o.errorKinds, sticky: o.sticky()}
	return r
}

// shares is each named backend's part of the requests sent, to 4 digits
// (0 for one that got none, or when none was sent).
func shares(names []string, sent map[string]int64) map[string]float64 {
	var total int64
	for _, n := range sent {
		total += n
	}
	out := make(map[string]float64, len(names))
	for _, name := range names {
		out[name] = 0
		if total > 0 {
			out[name] = round(float64(sent[name])/float64(total), 4)
		}
	}
	return out
}

func round(x float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(x*p) / p
}

// writeReport writes report.json into dir.
func writeReport(dir string, r report) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "report.json"), append(b, '\n'), 0o644)
}

// printTable writes one line per strategy: requests, errors, percentiles,
// the share each backend was sent, and how many of the slow backend's
// requests were answered in time.
func printTable(w io.Writer, r report) {
	names := backendNames(r.Scenario.Backends)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := []string{fmt.Sprintf("%-12s", "strategy"), "requests", "errors", "p50 ms", "p90 ms", "p99 ms"}
	for _, n := range names {
		head = append(head, "→"+n)
	}
	head = append(head, r.Scenario.SlowBackend+" answered", "sticky", "Redis/request")
	fmt.Fprintln(tw, strings.Join(head, "\t")+"\t")
	for _, res := range r.Results {
		row := []string{fmt.Sprintf("%-12s", res.Strategy), fmt.Sprint(res.Requests), fmt.Sprint(res.Errors),
			fmt.Sprintf("%.1f", res.P50MS), fmt.Sprintf("%.1f", res.P90MS), fmt.Sprintf("%.1f", res.P99MS)}
		for _, n := range names {
			row = append(row, fmt.Sprintf("%.1f%%", 100*res.Share[n]))
		}
		slow := "-"
		if sent := res.sent[r.Scenario.SlowBackend]; sent > 0 {
			slow = fmt.Sprintf("%.0f%%", 100*float64(res.answered[r.Scenario.SlowBackend])/float64(sent))
		}
		row = append(row, slow, fmt.Sprintf("%.0f%%", 100*r.Scenario.StickyUsers[res.Strategy]),
			fmt.Sprintf("%.2f", r.Scenario.RedisRoundTripsPerRequest[res.Strategy]))
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	tw.Flush()
	fmt.Fprintf(w, "\n→backend: share of the requests the dispatcher sent there. %s answered: of those sent to %s, the share answered within %s.\n",
		r.Scenario.SlowBackend, r.Scenario.SlowBackend, time.Duration(r.Scenario.TimeoutS*float64(time.Second)))
	fmt.Fprintln(w, "sticky: of the users with two answers or more, those whose answers all came from one backend.")
	fmt.Fprintln(w, "Redis/request: round trips Redis served while the strategy ran, per request sent.")
	for _, res := range r.Results {
		if len(res.kinds) > 0 {
			fmt.Fprintf(w, "%s errors: %s\n", res.Strategy, kindsString(res.kinds))
		}
	}
}

// kindsString lists error kinds, most frequent first: "timeout 812, HTTP 502 3".
func kindsString(kinds map[string]int) string {
	ks := slices.SortedFunc(maps.Keys(kinds), func(a, b string) int {
		if kinds[a] != kinds[b] {
			return kinds[b] - kinds[a]
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(ks))
	for i, k := range ks {
		parts[i] = fmt.Sprintf("%s %d", k, kinds[k])
	}
	return strings.Join(parts, ", ")
}

func backendNames(bs []backendSpec) []string {
	n := make([]string, len(bs))
	for i, b := range bs {
		n[i] = b.Name
	}
	return n
}
