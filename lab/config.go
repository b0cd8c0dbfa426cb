package main

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spreadlb/spread/internal/balance"
)

// setting is one of the lab's settings: an environment variable, its
// default, and what it sets. docs/lab.md lists the same.
type setting struct{ name, def, usage string }

func (s setting) get(getenv func(string) string) string {
	if v := getenv(s.name); v != "" {
		return v
	}
	return s.def
}

// The lab's settings, each read once from the environment.
var (
	durationSetting     = setting{"LAB_DURATION", "20s", "load per strategy (slow) or per point (herd)"}
	rateSetting         = setting{"LAB_RATE", "", "requests per second, a whole number; empty means 75% of the pool's capacity"}
	scenarioSetting     = setting{"LAB_SCENARIO", "slow", "what to measure: " + strings.Join(batchNames(), ", ") + ", a comma-separated list of them, or all"}
	outSetting          = setting{"LAB_OUT", "docs/lab", "directory that receives, for each scenario, <scenario>/report.json and its charts"}
	strategiesSetting   = setting{"LAB_STRATEGIES", strings.Join(strategyLabels(), ","), "comma-separated strategies (or variants, such as hash-bounded) to run, in this order"}
	arrivalsSetting     = setting{"LAB_ARRIVALS", "poisson", "poisson (random gaps, as independent clients make) or constant (evenly spaced)"}
	timeoutSetting      = setting{"LAB_TIMEOUT", "5s", "how long a request may take before it counts as an error"}
	usersSetting        = setting{"LAB_USERS", "1000", "distinct X-User header values in the load; STRATEGY=hash hashes on them"}
	fastSetting         = setting{"LAB_FAST", "2", "how many fast backends"}
	fastLatencySetting  = setting{"LAB_FAST_LATENCY", "40ms", "LATENCY of each fast backend"}
	fastCapacitySetting = setting{"LAB_FAST_CAPACITY", "8", "CAPACITY of each fast backend"}
	slowLatencySetting  = setting{"LAB_SLOW_LATENCY", "200ms", "LATENCY of the slow backend"}
	slowCapacitySetting = setting{"LAB_SLOW_CAPACITY", "4", "CAPACITY of the slow backend"}
	jitterSetting       = setting{"LAB_JITTER", "0s", "LATENCY_JITTER of every backend"}
	seedSetting         = setting{"LAB_SEED", "1", "seed of the arrival times and of the X-User sequence"}
	churnUsersSetting   = setting{"LAB_CHURN_USERS", "10000", "churn: how many users, each asked for once before and after each change of the list"}
	herdSetting         = setting{"LAB_HERD_DISPATCHERS", "1,2,4,8", "herd: the numbers of dispatchers to run on one list, comma-separated, each from 1 to 16"}
	failureRunSetting   = setting{"LAB_FAILURE_RUN", "40s", "failure: each mechanism's run; a backend goes down at a quarter of it (10 s of 40 s) and comes back at five eighths (25 s)"}
	retriesRunSetting   = setting{"LAB_RETRIES_RUN", "30s", "retries: each variant's run; a backend slows down at a third of it (10 s of 30 s)"}

	settings = []setting{scenarioSetting, durationSetting, rateSetting, outSetting, strategiesSetting, arrivalsSetting,
		timeoutSetting, usersSetting, fastSetting, fastLatencySetting, fastCapacitySetting,
		slowLatencySetting, slowCapacitySetting, jitterSetting, seedSetting,
		churnUsersSetting, herdSetting, failureRunSetting, retriesRunSetting}
)

// labStrategy is one column of the lab: a strategy of the dispatcher's, as
// its STRATEGY names it, or one of the variants its file declares (hash
// with a balance factor, say), with the settings that make it.
type labStrategy struct {
	label    string            // the column's name: the strategy's, or the variant's
	strategy string            // STRATEGY
	settings map[string]string // the variant's settings, nil for the strategy's defaults
}

// allStrategies are the strategies that work in MODE=proxy, each followed
// by its variants, in the registry's order: the lab asks the registry
// rather than naming any.
func allStrategies() []labStrategy {
	var out []labStrategy
	for _, name := range balance.NamesFor(balance.Proxy) {
		out = append(out, labStrategy{label: name, strategy: name})
		s, _ := balance.Lookup(name)
		for _, v := range s.Variants {
			out = append(out, labStrategy{label: v.Name, strategy: name, settings: v.Settings})
		}
	}
	return out
}

// strategyLabels are allStrategies' labels.
func strategyLabels() []string {
	var out []string
	for _, s := range allStrategies() {
		out = append(out, s.label)
	}
	return out
}

// lookupStrategy returns the lab strategy labelled label.
func lookupStrategy(label string) (labStrategy, bool) {
	for _, s := range allStrategies() {
		if s.label == label {
			return s, true
		}
	}
	return labStrategy{}, false
}

// hashKey is the dispatcher's HASH_KEY for STRATEGY=hash: every request of
// the load carries one of LAB_USERS user names in this header.
const (
	userHeader = "X-User"
	hashKey    = "header:" + userHeader
)

// defaultLoad is the default rate as a fraction of the pool's capacity:
// enough that a strategy which overloads the slow backend shows it, with
// room left for one that does not.
const defaultLoad = 0.75

// slowName is the slow backend's BACKEND_NAME; the fast ones are fast1,
// fast2, ...
const slowName = "slow"

// config is the lab's configuration, checked.
type config struct {
	scenarios         []string // LAB_SCENARIO, "all" spelled out
	churnUsers        int
	herd              []int         // LAB_HERD_DISPATCHERS
	failureRun        time.Duration // LAB_FAILURE_RUN
	retriesRun        time.Duration // LAB_RETRIES_RUN
	duration, timeout time.Duration
	rate              int // requests per second
	out               string
	strategies        []string
	arrivals          string // "poisson" or "constant"
	users             int
	seed              uint64
	backends          []backendSpec // the fast ones, then the slow one
}

// backendSpec is one backend of the pool, as the report describes it.
type backendSpec struct {
	Name      string  `json:"name"`
	LatencyMS float64 `json:"latency_ms"`
	JitterMS  float64 `json:"latency_jitter_ms"`
	Capacity  int     `json:"capacity"`
	// CapacityRPS is how many requests per second it can serve:
	// CAPACITY / (LATENCY + half the jitter, the mean extra).
	CapacityRPS float64 `json:"capacity_rps"`

	latency, jitter time.Duration
}

func newBackendSpec(name string, latency, jitter time.Duration, capacity int) backendSpec {
	mean := latency + jitter/2
	return backendSpec{Name: name, LatencyMS: ms(latency), JitterMS: ms(jitter), Capacity: capacity,
		CapacityRPS: float64(capacity) / mean.Seconds(), latency: latency, jitter: jitter}
}

// env is the backend's environment for this spec.
func (b backendSpec) env() []string {
	return []string{"BACKEND_NAME=" + b.Name, "LATENCY=" + b.latency.String(),
		"LATENCY_JITTER=" + b.jitter.String(), "CAPACITY=" + strconv.Itoa(b.Capacity)}
}

// capacityRPS is the pool's capacity: the sum over its backends.
func capacityRPS(bs []backendSpec) float64 {
	var sum float64
	for _, b := range bs {
		sum += b.CapacityRPS
	}
	return sum
}

// loadConfig reads every setting and refuses a value it cannot use, naming
// the setting and what it accepts.
func loadConfig(getenv func(string) string) (config, error) {
	var c config
	var err error
	v := scenarioSetting.get(getenv)
	if v == "all" {
		c.scenarios = batchNames()
	} else {
		for s := range strings.SplitSeq(v, ",") {
			s = strings.TrimSpace(s)
			if _, ok := lookupBatch(s); !ok || slices.Contains(c.scenarios, s) {
				return c, fmt.Errorf("%s=%q: want one of %s, a comma-separated list of distinct ones, or all",
					scenarioSetting.name, v, strings.Join(batchNames(), ", "))
			}
			c.scenarios = append(c.scenarios, s)
		}
	}
	if c.churnUsers, err = atLeast(churnUsersSetting, 10, getenv); err != nil {
		return c, err
	}
	v = herdSetting.get(getenv)
	for s := range strings.SplitSeq(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > maxHerd || slices.Contains(c.herd, n) {
			return c, fmt.Errorf("%s=%q: want a comma-separated list of distinct whole numbers from 1 to %d", herdSetting.name, v, maxHerd)
		}
		c.herd = append(c.herd, n)
	}
	if c.failureRun, err = atLeastDuration(failureRunSetting, 4*time.Second, getenv); err != nil {
		return c, err
	}
	if c.retriesRun, err = atLeastDuration(retriesRunSetting, 3*time.Second, getenv); err != nil {
		return c, err
	}
	if c.duration, err = positiveDuration(durationSetting, getenv); err != nil {
		return c, err
	}
	if c.timeout, err = positiveDuration(timeoutSetting, getenv); err != nil {
		return c, err
	}
	if c.out = outSetting.get(getenv); c.out == "" {
		return c, fmt.Errorf("%s is empty: want a directory", outSetting.name)
	}
	v = strategiesSetting.get(getenv)
	for s := range strings.SplitSeq(v, ",") {
		s = strings.TrimSpace(s)
		if _, ok := lookupStrategy(s); !ok || slices.Contains(c.strategies, s) {
			return c, fmt.Errorf("%s=%q: want a comma-separated list of distinct strategies from %s",
				strategiesSetting.name, v, strings.Join(strategyLabels(), ", "))
		}
		c.strategies = append(c.strategies, s)
	}
	switch c.arrivals = arrivalsSetting.get(getenv); c.arrivals {
	case "poisson", "constant":
	default:
		return c, fmt.Errorf("%s=%q: want poisson or constant", arrivalsSetting.name, c.arrivals)
	}
	if c.users, err = atLeast(usersSetting, 1, getenv); err != nil {
		return c, err
	}
	fast, err := atLeast(fastSetting, 1, getenv)
	if err != nil {
		return c, err
	}
	fastLatency, err := positiveDuration(fastLatencySetting, getenv)
	if err != nil {
		return c, err
	}
	fastCapacity, err := atLeast(fastCapacitySetting, 1, getenv)
	if err != nil {
		return c, err
	}
	slowLatency, err := positiveDuration(slowLatencySetting, getenv)
	if err != nil {
		return c, err
	}
	slowCapacity, err := atLeast(slowCapacitySetting, 1, getenv)
	if err != nil {
		return c, err
	}
	v = jitterSetting.get(getenv)
	jitter, err := time.ParseDuration(v)
	if v == "0" {
		jitter, err = 0, nil
	}
	if err != nil || jitter < 0 {
		return c, fmt.Errorf("%s=%q: want a duration such as 5ms, or 0", jitterSetting.name, v)
	}
	v = seedSetting.get(getenv)
	if c.seed, err = strconv.ParseUint(v, 10, 64); err != nil {
		return c, fmt.Errorf("%s=%q: want a whole number, 0 or more", seedSetting.name, v)
	}
	for i := range fast {
		c.backends = append(c.backends, newBackendSpec(fmt.Sprintf("fast%d", i+1), fastLatency, jitter, fastCapacity))
	}
	c.backends = append(c.backends, newBackendSpec(slowName, slowLatency, jitter, slowCapacity))

	if v = rateSetting.get(getenv); v == "" {
		c.rate = max(1, int(math.Round(defaultLoad*capacityRPS(c.backends))))
	} else if c.rate, err = strconv.Atoi(v); err != nil || c.rate < 1 {
		return c, fmt.Errorf("%s=%q: want a whole number of requests per second, 1 or more (empty: %.0f%% of the pool's capacity)",
			rateSetting.name, v, 100*defaultLoad)
	}
	return c, nil
}

func positiveDuration(s setting, getenv func(string) string) (time.Duration, error) {
	v := s.get(getenv)
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s=%q: want a positive duration such as %s", s.name, v, s.def)
	}
	return d, nil
}

// atLeastDuration reads a duration of at least least.
func atLeastDuration(s setting, least time.Duration, getenv func(string) string) (time.Duration, error) {
	v := s.get(getenv)
	d, err := time.ParseDuration(v)
	if err != nil || d < least {
		return 0, fmt.Errorf("%s=%q: want a duration of %s or more, such as %s", s.name, v, least, s.def)
	}
	return d, nil
}

func atLeast(s setting, least int, getenv func(string) string) (int, error) {
	v := s.get(getenv)
	n, err := strconv.Atoi(v)
	if err != nil || n < least {
		return 0, fmt.Errorf("%s=%q: want a whole number, %d or more", s.name, v, least)
	}
	return n, nil
}

// ms is d in milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
