package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spreadlb/spread/internal/redisconn"
	"github.com/spreadlb/spread/internal/store"
)

// pool is what the console drives: the backends (their control ports),
// the dispatchers, and the list's Redis, where the strategy is stored.
type pool struct {
	backends    []poolBackend // the slow one last
	dispatchers []poolDispatcher
	store       *store.Store
	closeRedis  func() error
	client      *http.Client // for /stats, /metrics and /control: short timeouts
}

// poolBackend is one backend: its URL as the list holds it (the dispatchers
// count by it, and the console's API names a backend by it) and the URL of
// its control port.
type poolBackend struct {
	entry   string
	control string
	// spec is its knobs in the lab's scenario: a fast backend's, or, for
	// the last, the slow one's. The scenarios set them.
	spec backendSpec
}

// poolDispatcher is one dispatcher: its main port (the load goes there)
// and its admin port (/metrics).
type poolDispatcher struct {
	url, admin string
}

// newPool connects to Redis and gives each backend its scenario knobs:
// the last is the slow one, the others fast.
func newPool(backends []poolBackend, dispatchers []poolDispatcher, redisURL, key string, getenv func(string) string, lab config) (*pool, error) {
	tc, err := redisconn.LoadTLS(getenv)
	if err != nil {
		return nil, err
	}
	rdb, err := redisconn.ConnectTLS(redisURL, "spread-lab", tc)
	if err != nil {
		return nil, err
	}
	p := &pool{backends: slices.Clone(backends), dispatchers: dispatchers, store: store.NewStore(rdb, key, nil),
		closeRedis: rdb.Close, client: &http.Client{Timeout: 2 * time.Second}}
	fast, slow := lab.backends[0], lab.backends[len(lab.backends)-1]
	for i := range p.backends {
		switch {
		case len(p.backends) == len(lab.backends):
			p.backends[i].spec = lab.backends[i]
		case i == len(p.backends)-1:
			p.backends[i].spec = slow
		default:
			p.backends[i].spec = newBackendSpec(fmt.Sprintf("fast%d", i+1), fast.latency, fast.jitter, fast.Capacity)
		}
	}
	return p, nil
}

// connectPool is newPool for a running stack, after checking that each
// backend's control port and each dispatcher's admin port answer.
func connectPool(ctx context.Context, spec stackSpec, getenv func(string) string, lab config) (*pool, error) {
	p, err := newPool(spec.backends, spec.dispatchers, spec.redisURL, spec.redisKey, getenv, lab)
	if err != nil {
		return nil, err
	}
	for _, b := range p.backends {
		if _, err := p.stats(ctx, b); err != nil {
			p.close()
			return nil, fmt.Errorf("%s: backend %s: %w (is it running with CONTROL=1, its CONTROL_PORT reachable from here?)", backendsSetting.name, b.entry, err)
		}
	}
	for _, d := range p.dispatchers {
		if _, err := p.metrics(ctx, d); err != nil {
			p.close()
			return nil, fmt.Errorf("%s: dispatcher %s: %w", dispatchersSetting.name, d.url, err)
		}
	}
	return p, nil
}

func (p *pool) close() { p.closeRedis() }

// describe is the pool in a line: "fast1 40ms×8, fast2 40ms×8, slow 200ms×4".
func (p *pool) describe() string {
	specs := make([]backendSpec, len(p.backends))
	for i, b := range p.backends {
		specs[i] = b.spec
	}
	return poolString(specs)
}

// backend returns the backend whose list entry is entry.
func (p *pool) backend(entry string) (poolBackend, bool) {
	entry = strings.TrimSuffix(entry, "/")
	for _, b := range p.backends {
		if b.entry == entry {
			return b, true
		}
	}
	return poolBackend{}, false
}

// entries are the backends' list entries, in order.
func (p *pool) entries() []string {
	out := make([]string, len(p.backends))
	for i, b := range p.backends {
		out[i] = b.entry
	}
	return out
}

// targets are the dispatchers' main ports, where the load goes.
func (p *pool) targets() []string {
	out := make([]string, len(p.dispatchers))
	for i, d := range p.dispatchers {
		out[i] = strings.TrimSuffix(d.url, "/") + "/"
	}
	return out
}

// fullStats is a backend's GET /stats, and POST /control's answer (the
// backend's stats type, which this module cannot import: it is a command).
type fullStats struct {
	Backend         string  `json:"backend"`
	InService       int64   `json:"in_service"`
	Queued          int64   `json:"queued"`
	Served          int64   `json:"served"`
	Failed          int64   `json:"failed"`
	Capacity        int     `json:"capacity"`
	LatencyMS       float64 `json:"latency_ms"`
	LatencyJitterMS float64 `json:"latency_jitter_ms"`
	FailRate        float64 `json:"fail_rate"`
	Down            bool    `json:"down"`
}

// stats reads b's GET /stats on its control port.
func (p *pool) stats(ctx context.Context, b poolBackend) (fullStats, error) {
	var s fullStats
	body, err := get(ctx, p.client, b.control, "/stats")
	if err != nil {
		return s, err
	}
	defer body.Close()
	if err := json.NewDecoder(body).Decode(&s); err != nil {
		return s, fmt.Errorf("GET /stats: %w", err)
	}
	return s, nil
}

// controlError is a backend's answer to a POST /control that changed
// nothing, and the console's own to a write it refuses: the field, and
// what is wrong with it.
type controlError struct {
	Field string `json:"field"`
	Error string `json:"error"`
}

// control sends body, a POST /control body, to b: the backend checks every
// field and changes all or nothing. It returns the new stats, or the
// backend's status and refusal.
func (p *pool) control(ctx context.Context, b poolBackend, body []byte) (fullStats, int, *controlError, error) {
	var s fullStats
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.control+"/control", bytes.NewReader(body))
	if err != nil {
		return s, 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return s, 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return s, 0, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		var ce controlError
		if json.Unmarshal(raw, &ce) != nil || ce.Field == "" {
			return s, resp.StatusCode, nil, fmt.Errorf("POST /control: %s: %.200s", resp.Status, raw)
		}
		return s, resp.StatusCode, &ce, nil
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return s, 0, nil, fmt.Errorf("POST /control: %w", err)
	}
	return s, resp.StatusCode, nil, nil
}

// dispatcherMetrics is what the console reads of a dispatcher's /metrics.
type dispatcherMetrics struct {
	strategy string           // spread_strategy_info
	inflight map[string]int64 // spread_inflight, by entry
	sent     map[string]int64 // spread_requests_total, every status, by entry
	down     map[string]bool  // spread_backend_up == 0, by entry
}

// The metrics the console reads.
const (
	inflightMetric = "spread_inflight"
	strategyMetric = "spread_strategy_info"
	upMetric       = "spread_backend_up"
)

// metrics reads d's /metrics.
func (p *pool) metrics(ctx context.Context, d poolDispatcher) (dispatcherMetrics, error) {
	m := dispatcherMetrics{inflight: map[string]int64{}, sent: map[string]int64{}, down: map[string]bool{}}
	body, err := get(ctx, p.client, d.admin, "/metrics")
	if err != nil {
		return m, err
	}
	defer body.Close()
	samples, err := parseMetrics(body, requestsMetric, inflightMetric, strategyMetric, upMetric)
	if err != nil {
		return m, err
	}
	for _, s := range samples[strategyMetric] {
		if s.value == 1 {
			m.strategy = s.labels["strategy"]
		}
	}
	if m.strategy == "" {
		return m, fmt.Errorf("GET /metrics: no %s: is it a dispatcher?", strategyMetric)
	}
	entry := func(s promSample) string { return strings.TrimSuffix(s.labels["backend"], "/") }
	for _, s := range samples[requestsMetric] {
		m.sent[entry(s)] += int64(s.value)
	}
	for _, s := range samples[inflightMetric] {
		m.inflight[entry(s)] += int64(s.value)
	}
	for _, s := range samples[upMetric] {
		if s.value == 0 {
			m.down[entry(s)] = true
		}
	}
	return m, nil
}

// scenario is a button of the console: knobs for every backend at once.
type labScenario struct {
	Name  string `json:"name"`
	Title string `json:"title"` // the button's label
	What  string `json:"what"`  // what it does, for the page and the docs
	// changes returns the POST /control body for each backend, by index;
	// nil leaves a backend as it is.
	changes func(p *pool) []map[string]any
}

// knobsOf is a POST /control body that gives a backend spec's knobs, up
// and without failures.
func knobsOf(s backendSpec) map[string]any {
	return map[string]any{"latency": s.latency.String(), "jitter": s.jitter.String(), "capacity": s.Capacity,
		"fail_rate": 0, "down": false}
}

// scenarios are the console's scenario buttons, in the page's order.
var scenarios = []labScenario{
	{Name: "one-slow", Title: "one slow backend",
		What: "the lab's scenario: the last backend slow and small, the others fast; all up, no failures",
		changes: func(p *pool) []map[string]any {
			out := make([]map[string]any, len(p.backends))
			for i, b := range p.backends {
				out[i] = knobsOf(b.spec)
			}
			return out
		}},
	{Name: "one-dies", Title: "a backend dies",
		What: "the last backend goes down: its port refuses connections, until it comes back",
		changes: func(p *pool) []map[string]any {
			out := make([]map[string]any, len(p.backends))
			out[len(out)-1] = map[string]any{"down": true}
			return out
		}},
	{Name: "one-returns", Title: "a backend comes back",
		What: "every backend that is down comes back up, its knobs as they were",
		changes: func(p *pool) []map[string]any {
			out := make([]map[string]any, len(p.backends))
			for i := range out {
				out[i] = map[string]any{"down": false}
			}
			return out
		}},
	{Name: "all-fast", Title: "everything fast",
		What: "every backend fast, as the fast ones of the lab's scenario; all up, no failures",
		changes: func(p *pool) []map[string]any {
			out := make([]map[string]any, len(p.backends))
			for i := range p.backends {
				out[i] = knobsOf(p.backends[0].spec)
			}
			return out
		}},
}

func lookupScenario(name string) (labScenario, bool) {
	for _, s := range scenarios {
		if s.Name == name {
			return s, true
		}
	}
	return labScenario{}, false
}

func scenarioNames() []string {
	var out []string
	for _, s := range scenarios {
		out = append(out, s.Name)
	}
	return out
}

// ownStack is the stack `lab serve` started: redis-server, the backends
// and the dispatchers as local processes, and the pool over them.
type ownStack struct {
	st   *stack
	pool *pool
	dir  string
}

// consoleDispatchers is how many dispatchers the console's own stack runs
// on its one list: two, so that the in-flight counts and the strategy are
// seen to be shared.
const consoleDispatchers = 2

// startOwnStack builds the programs from the checkout and starts the
// lab's scenario: redis-server, the backends with CONTROL=1, and
// consoleDispatchers proxying dispatchers with round robin on one list,
// with health checks every second.
func startOwnStack(ctx context.Context, lab config, stdout io.Writer) (*ownStack, error) {
	root, err := findRoot()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "spread-lab-serve")
	if err != nil {
		return nil, err
	}
	o := &ownStack{dir: dir}
	bins, err := build(ctx, root, dir)
	if err != nil {
		return o, err
	}
	if o.st, err = startStack(ctx, dir, bins, lab.backends, true); err != nil {
		return o, err
	}
	var ds []poolDispatcher
	for i := range consoleDispatchers {
		d, err := o.st.startProxy(ctx, fmt.Sprintf("dispatcher%d", i+1), []string{"STRATEGY=round-robin",
			// "A backend dies" is seen by the health checks within about
			// two seconds.
			"HEALTH_INTERVAL=1s"})
		if err != nil {
			return o, err
		}
		ds = append(ds, poolDispatcher{url: d.url, admin: d.admin})
	}
	var bs []poolBackend
	for _, b := range o.st.backends {
		bs = append(bs, poolBackend{entry: b.url, control: b.control})
	}
	o.pool, err = newPool(bs, ds, o.st.redisURL, store.RedisKey.Default, func(string) string { return "" }, lab)
	if err != nil {
		return o, err
	}
	fmt.Fprintf(stdout, "lab serve: logs in %s\n", dir)
	return o, nil
}

// stop stops the stack's programs, last started first, and removes their
// logs. The pool's Redis client is its owner's to close.
func (o *ownStack) stop() {
	if o.st != nil {
		o.st.stop()
	}
	os.RemoveAll(o.dir)
}
