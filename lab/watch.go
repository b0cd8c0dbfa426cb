package main

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spreadlb/spread/internal/store"
)

// The console's watcher: every watchEvery it reads each backend's GET
// /stats (its queue, in service, knobs), each dispatcher's /metrics (its
// strategy, its requests in flight and sent per backend, the health
// checks' verdict) and the strategy stored in Redis, and keeps, for each of
// the last liveHistory seconds, the last reading of that second. A change
// of the strategy the dispatchers run is marked on the time axis, as is
// every control the console applies.

// watchEvery is how often the watcher reads the pool: well under a
// second, so that a change shows on the page within one.
const watchEvery = 250 * time.Millisecond

// shareWindow is how far back a backend's share of the requests sent
// counts; latencyWindow how far back the state's percentiles and rates do.
const (
	shareWindow   = 10 * time.Second
	latencyWindow = 5 // seconds
)

// watcher keeps what the pool showed, second by second.
type watcher struct {
	pool *pool
	now  func() time.Time

	mu      sync.Mutex
	secs    [liveHistory + 1]snapshot // by Unix second modulo its length
	latest  snapshot
	picks   []picksAt // readings of the last shareWindow and one before
	marks   []mark    // the last liveHistory seconds' marks, oldest first
	running string    // the strategy the dispatchers ran at the last reading
	stored  *store.StoredStrategy
}

// snapshot is one reading of the pool.
type snapshot struct {
	sec         int64 // Unix second of at; 0 for none
	at          time.Time
	backends    []backendSnap    // the pool's order
	dispatchers []dispatcherSnap // the pool's order
}

// backendSnap is one backend at one reading.
type backendSnap struct {
	stats      fullStats
	err        string // GET /stats failed: stats is empty
	inflight   int64  // requests in flight to it, summed over the dispatchers (spread_inflight)
	markedDown bool   // a dispatcher's health checks have it down (spread_backend_up 0)
	picks      int64  // requests sent to it so far, over the dispatchers: finished plus in flight
}

// dispatcherSnap is one dispatcher at one reading.
type dispatcherSnap struct {
	strategy string // spread_strategy_info; "" if /metrics failed
	err      string
}

// picksAt is the requests sent to each backend so far, at one reading.
type picksAt struct {
	at    time.Time
	picks []int64
}

// mark is an event on the time axis: the strategy the dispatchers run
// changed, or a control was applied.
type mark struct {
	T     float64 `json:"t"`    // Unix time, in seconds
	Kind  string  `json:"kind"` // "strategy" or "control"
	Label string  `json:"label"`
}

func newWatcher(p *pool, now func() time.Time) *watcher {
	return &watcher{pool: p, now: now}
}

// run reads the pool every watchEvery until ctx is done.
func (w *watcher) run(ctx context.Context) {
	t := time.NewTicker(watchEvery)
	defer t.Stop()
	for {
		w.read(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// read reads every backend and dispatcher at once, and the stored
// strategy, and keeps the reading.
func (w *watcher) read(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	p := w.pool
	s := snapshot{backends: make([]backendSnap, len(p.backends)), dispatchers: make([]dispatcherSnap, len(p.dispatchers))}
	metrics := make([]dispatcherMetrics, len(p.dispatchers))
	var stored *store.StoredStrategy
	var wg sync.WaitGroup
	for i, b := range p.backends {
		wg.Go(func() {
			st, err := p.stats(ctx, b)
			s.backends[i].stats = st
			if err != nil {
				s.backends[i].err = err.Error()
			}
		})
	}
	for i, d := range p.dispatchers {
		wg.Go(func() {
			m, err := p.metrics(ctx, d)
			metrics[i] = m
			s.dispatchers[i].strategy = m.strategy
			if err != nil {
				s.dispatchers[i].err = err.Error()
			}
		})
	}
	wg.Go(func() {
		if st, _, ok, err := p.store.Strategy(ctx); ok && err == nil {
			stored = &st
		}
	})
	wg.Wait()
	for i, b := range p.backends {
		for _, m := range metrics {
			s.backends[i].inflight += m.inflight[b.entry]
			s.backends[i].picks += m.sent[b.entry] + m.inflight[b.entry]
			s.backends[i].markedDown = s.backends[i].markedDown || m.down[b.entry]
		}
	}
	s.at = w.now()
	s.sec = s.at.Unix()
	w.keep(s, stored)
}

// keep files a reading: in its second, as the latest, in the share
// window; and marks a change of the strategy the dispatchers run.
func (w *watcher) keep(s snapshot, stored *store.StoredStrategy) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !s.at.After(w.latest.at) {
		return // a reading that ran beside a later one, which is kept
	}
	w.secs[s.sec%int64(len(w.secs))] = s
	w.latest = s
	w.stored = stored
	picks := make([]int64, len(s.backends))
	for i, b := range s.backends {
		picks[i] = b.picks
	}
	w.picks = append(w.picks, picksAt{s.at, picks})
	// Keep one reading at or before the window's start, to count from.
	for len(w.picks) > 1 && !w.picks[1].at.After(s.at.Add(-shareWindow)) {
		w.picks = w.picks[1:]
	}
	// A change is marked once every dispatcher runs the new strategy: the
	// moment they differ (a fraction of a second) is no strategy of its own.
	if r := runningStrategy(s.dispatchers); r != "" && !strings.Contains(r, " / ") {
		if w.running != "" && r != w.running {
			w.addMark("strategy", r, s.at)
		}
		w.running = r
	}
}

// runningStrategy is the strategy the dispatchers run: its name when they
// agree, the names joined with " / " while they differ (a switch reaches
// each within a fraction of a second), "" when none answered.
func runningStrategy(ds []dispatcherSnap) string {
	var names []string
	for _, d := range ds {
		if d.strategy != "" && !slices.Contains(names, d.strategy) {
			names = append(names, d.strategy)
		}
	}
	slices.Sort(names)
	return strings.Join(names, " / ")
}

// waitRunning reads the pool every 50 ms until every dispatcher runs
// strategy, for at most d; it says whether they did.
func (w *watcher) waitRunning(ctx context.Context, strategy string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		w.read(ctx)
		w.mu.Lock()
		running := w.running
		w.mu.Unlock()
		if running == strategy {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// note marks a control applied now.
func (w *watcher) note(label string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.addMark("control", label, w.now())
}

// addMark adds a mark and forgets those older than the history. w.mu is
// held.
func (w *watcher) addMark(kind, label string, at time.Time) {
	w.marks = append(w.marks, mark{T: round(float64(at.UnixMilli())/1000, 3), Kind: kind, Label: label})
	oldest := float64(at.Unix() - liveHistory)
	for len(w.marks) > 0 && w.marks[0].T < oldest {
		w.marks = w.marks[1:]
	}
}

// shares is each backend's share of the requests sent over the last
// shareWindow, by the dispatchers' counts; nil before any was sent. w.mu
// is held.
func (w *watcher) shares() []*float64 {
	out := make([]*float64, len(w.pool.backends))
	if len(w.picks) < 2 {
		return out
	}
	first, last := w.picks[0], w.picks[len(w.picks)-1]
	var total int64
	deltas := make([]int64, len(out))
	for i := range out {
		deltas[i] = max(0, last.picks[i]-first.picks[i]) // a dispatcher restarted: its counts began again
		total += deltas[i]
	}
	if total == 0 {
		return out
	}
	for i := range out {
		v := round(float64(deltas[i])/float64(total), 4)
		out[i] = &v
	}
	return out
}

// consoleState is GET /api/state: the page's numbers, now.
type consoleState struct {
	Time      float64 `json:"time"`       // when this was made, Unix seconds
	SampledAt float64 `json:"sampled_at"` // when the backends and dispatchers were last read
	// Strategy is the strategy the dispatchers run (spread_strategy_info):
	// one name, or several joined with " / " while a switch reaches them.
	Strategy    string                `json:"strategy"`
	Stored      *store.StoredStrategy `json:"stored"` // the strategy stored for every dispatcher, if any
	Dispatchers []dispatcherState     `json:"dispatchers"`
	// Rate is the rate the load is asked for; the others are measured
	// over the last latencyWindow seconds.
	Rate        float64 `json:"rate"`
	OfferedPerS float64 `json:"offered_per_s"`
	OKPerS      float64 `json:"ok_per_s"`
	// ErrorsPerS counts every answer that was not a 2xx, timeouts
	// included; TimeoutsPerS is the part of them that got no answer in
	// time.
	ErrorsPerS   float64   `json:"errors_per_s"`
	TimeoutsPerS float64   `json:"timeouts_per_s"`
	LatencyMS    latencyMS `json:"latency_ms"`
	LateMS       float64   `json:"late_ms"` // how far behind its schedule the load fell, at most
	// TimeoutMS is how long the load waits for an answer (LAB_TIMEOUT).
	TimeoutMS float64        `json:"timeout_ms"`
	Backends  []backendState `json:"backends"`
	Scenarios []labScenario  `json:"scenarios"`
}

// latencyMS are percentiles of the latency, errors included, a timeout at
// the timeout; null when nothing was answered.
type latencyMS struct {
	P50 *float64 `json:"p50"`
	P90 *float64 `json:"p90"`
	P99 *float64 `json:"p99"`
}

type dispatcherState struct {
	URL      string `json:"url"`
	Strategy string `json:"strategy"`
	Error    string `json:"error,omitempty"`
}

// backendState is one backend now.
type backendState struct {
	URL  string `json:"url"`  // its entry in the list
	Name string `json:"name"` // its BACKEND_NAME, as X-Backend says
	// Queue and InService are the backend's own counts (GET /stats);
	// Inflight the dispatchers' (spread_inflight), which also counts the
	// requests on their way.
	Queue     int64 `json:"queue"`
	InService int64 `json:"in_service"`
	Inflight  int64 `json:"inflight"`
	// Share is its part of the requests the dispatchers sent over the last
	// shareWindow; null before any was sent.
	Share *float64 `json:"share"`
	// Its knobs, from GET /stats.
	LatencyMS float64 `json:"latency_ms"`
	JitterMS  float64 `json:"jitter_ms"`
	Capacity  int     `json:"capacity"`
	FailRate  float64 `json:"fail_rate"`
	Down      bool    `json:"down"`
	// CapacityRPS is what it can serve per second, capacity over the mean
	// service time; null when that is unbounded.
	CapacityRPS *float64 `json:"capacity_rps"`
	// MarkedDown: a dispatcher's health checks have it down.
	MarkedDown bool   `json:"marked_down"`
	Error      string `json:"error,omitempty"` // GET /stats failed: the numbers above are zero
}

// state makes GET /api/state from the latest reading and load's window.
func (w *watcher) state(load *liveLoad) consoleState {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stateLocked(load)
}

func (w *watcher) stateLocked(load *liveLoad) consoleState {
	s := w.latest
	win := load.window(latencyWindow)
	out := consoleState{
		Time: round(float64(w.now().UnixMilli())/1000, 3), SampledAt: round(float64(s.at.UnixMilli())/1000, 3),
		Strategy: runningStrategy(s.dispatchers), Stored: w.stored,
		Rate: load.rate(), OfferedPerS: win.OfferedPerS, OKPerS: win.OKPerS,
		ErrorsPerS: round(win.ErrorsPerS+win.TimeoutsPerS, 1), TimeoutsPerS: win.TimeoutsPerS,
		LatencyMS: latencyMS{win.P50MS, win.P90MS, win.P99MS}, LateMS: win.MaxLateMS, TimeoutMS: ms(load.opts.timeout),
		Dispatchers: []dispatcherState{}, Backends: []backendState{}, Scenarios: scenarios,
	}
	for i, d := range w.pool.dispatchers {
		ds := dispatcherState{URL: d.url}
		if i < len(s.dispatchers) {
			ds.Strategy, ds.Error = s.dispatchers[i].strategy, s.dispatchers[i].err
		}
		out.Dispatchers = append(out.Dispatchers, ds)
	}
	shares := w.shares()
	for i, b := range w.pool.backends {
		bs := backendState{URL: b.entry, Share: shares[i]}
		if i < len(s.backends) {
			snap := s.backends[i]
			st := snap.stats
			bs.Name, bs.Queue, bs.InService, bs.Inflight = st.Backend, st.Queued, st.InService, snap.inflight
			bs.LatencyMS, bs.JitterMS, bs.Capacity, bs.FailRate, bs.Down = st.LatencyMS, st.LatencyJitterMS, st.Capacity, st.FailRate, st.Down
			bs.MarkedDown, bs.Error = snap.markedDown, snap.err
			if mean := st.LatencyMS + st.LatencyJitterMS/2; st.Capacity > 0 && mean > 0 && snap.err == "" {
				v := round(float64(st.Capacity)/(mean/1000), 1)
				bs.CapacityRPS = &v
			}
		}
		out.Backends = append(out.Backends, bs)
	}
	return out
}

// consoleHistory is GET /api/history: the state, and the last liveHistory
// seconds, one value a second (null where there is none), for the charts.
type consoleHistory struct {
	State consoleState `json:"state"`
	// T are the seconds, Unix time, oldest first; the last is the current
	// one, under way.
	T []int64 `json:"t"`
	// Load is what the load generator saw in each second, per second:
	// the requests it sent, and the answers that ended, split into ok,
	// errors (not a 2xx, no timeout) and timeouts, with their latency
	// percentiles in milliseconds.
	Load map[string][]*float64 `json:"load"`
	// Backends are, for each backend, its queue and in service (its
	// /stats) and in flight (the dispatchers'), at the last reading of
	// each second.
	Backends []backendHistory `json:"backends"`
	Marks    []mark           `json:"marks"`
}

type backendHistory struct {
	URL       string   `json:"url"`
	Name      string   `json:"name"`
	Queue     []*int64 `json:"queue"`
	InService []*int64 `json:"in_service"`
	Inflight  []*int64 `json:"inflight"`
}

// minSpan is how much of the current second must have gone by for its
// rates to be shown: a rate over a few milliseconds is noise.
const minSpan = 0.2

// history makes GET /api/history.
func (w *watcher) history(load *liveLoad) consoleHistory {
	seconds := load.seconds()
	w.mu.Lock()
	defer w.mu.Unlock()
	h := consoleHistory{State: w.stateLocked(load), Load: map[string][]*float64{}, Marks: slices.Clone(w.marks)}
	if h.Marks == nil {
		h.Marks = []mark{}
	}
	cur := w.now().Unix()
	for t := cur - liveHistory + 1; t <= cur; t++ {
		h.T = append(h.T, t)
	}
	bySec := map[int64]liveSecond{}
	for _, s := range seconds {
		bySec[s.T] = s
	}
	series := []string{"offered", "ok", "errors", "timeouts", "p50", "p90", "p99"}
	for _, k := range series {
		h.Load[k] = make([]*float64, len(h.T))
	}
	perS := func(n int, span float64) *float64 {
		v := round(float64(n)/span, 1)
		return &v
	}
	for i, t := range h.T {
		s, ok := bySec[t]
		if !ok || s.SpanS < minSpan {
			continue
		}
		h.Load["offered"][i] = perS(s.Offered, s.SpanS)
		h.Load["ok"][i] = perS(s.OK, s.SpanS)
		h.Load["errors"][i] = perS(s.Errors, s.SpanS)
		h.Load["timeouts"][i] = perS(s.Timeouts, s.SpanS)
		h.Load["p50"][i], h.Load["p90"][i], h.Load["p99"][i] = s.P50MS, s.P90MS, s.P99MS
	}
	for j, b := range w.pool.backends {
		bh := backendHistory{URL: b.entry, Queue: make([]*int64, len(h.T)), InService: make([]*int64, len(h.T)), Inflight: make([]*int64, len(h.T))}
		if j < len(w.latest.backends) {
			bh.Name = w.latest.backends[j].stats.Backend
		}
		for i, t := range h.T {
			s := w.secs[t%int64(len(w.secs))]
			if s.sec != t || j >= len(s.backends) {
				continue
			}
			snap := s.backends[j]
			bh.Inflight[i] = ptr(snap.inflight)
			if snap.err == "" {
				bh.Queue[i], bh.InService[i] = ptr(snap.stats.Queued), ptr(snap.stats.InService)
			}
		}
		h.Backends = append(h.Backends, bh)
	}
	return h
}

func ptr[T any](v T) *T { return &v }

// storedCopy returns the stored strategy as last read.
func (w *watcher) storedCopy() *store.StoredStrategy {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stored == nil {
		return nil
	}
	c := *w.stored
	c.Settings = maps.Clone(c.Settings)
	return &c
}
