package main

import (
	"context"
	"maps"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/spreadlb/spread/internal/pick"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/spreadlb/spread/internal/balance"
	"github.com/spreadlb/spread/internal/pool"
)

// metrics is what the dispatcher tells Prometheus on GET /metrics (admin
// port), and what the dashboard draws. It has its own registry rather than
// Prometheus's global one, so that every test, and every dispatcher in one
// process, counts alone.
//
//	spread_requests_total{backend,mode,status}  counter: requests answered on the main port.
//	    backend is the chosen backend's URL as validated (http://localhost:5000),
//	    "" when no backend was chosen (the 503s); mode is the metrics' mode;
//	    status is the status code sent ("302", "503").
//	spread_pick_duration_seconds                histogram: time spent in Picker.Pick,
//	    every call, whether it chose a backend or failed.
//	spread_redis_errors_total                   counter: calls to Redis on the request path
//	    that failed because Redis did not answer: pick.ErrUnavailable (refused, reset,
//	    broken connection, its own timeout) or the request's REDIS_TIMEOUT ran out
//	    (context.DeadlineExceeded), whether or not the snapshot then answered the
//	    request (the Failover reports each, balance.Config.OnRedisError). Not counted:
//	    answers Redis did give (empty list, wrong type, invalid entries, a refusal),
//	    a client that left (context.Canceled), picks made while degraded (they ask
//	    Redis nothing), and the admin port's own reads (/readyz, the dashboard's LRANGE).
//	spread_redis_permission_errors_total{command} counter: calls to Redis that Redis
//	    refused because the user in REDIS_URL may not run the command
//	    (pick.ErrNoPermission), whatever made them: a pick, the health checks, the
//	    snapshot's reads (store.OnDenied). command is its name ("SCARD"), "" where
//	    Redis did not say. The checks of /readyz and of the start are not counted.
//	spread_degraded                             gauge: 1 while the dispatcher serves without
//	    Redis, whatever the strategy (SetDegraded, from redisHealth: the pool's reads
//	    failing, or the running strategy's Failover degraded).
//	spread_backend_up{backend}                  gauge: 0 while the shared health checks have
//	    the backend in the down set, else 1 (SetHealth, from watchHealth when the snapshot changes);
//	    only backends of the list, never a made-up one.
//	spread_inflight{backend}                    gauge (MODE=proxy): requests this dispatcher
//	    is forwarding to the backend now (proxy.go).
//	spread_backend_ejected{backend}             gauge: 1 while the backend is ejected (by any
//	    dispatcher on the list: outlier ejection, eject.go), else 0; every backend of the
//	    list, as the snapshot last read it (SetEjected, from watchHealth).
//	spread_ejections_total{backend}             counter (MODE=proxy): ejections this
//	    dispatcher made, each after EJECT_AFTER failures in a row; the sum over the
//	    dispatchers is every ejection.
//	spread_strategy_info{strategy,mode}         gauge, always 1: the strategy this dispatcher
//	    runs now (its STRATEGY, or the stored one: docs/strategies.md) and its MODE.
//	spread_hash_fallbacks_total                 counter (STRATEGY=hash): requests without the
//	    HASH_KEY key, which took a round-robin step instead.
//	spread_rotation_steps_total                 counter (STRATEGY=round-robin, ROTATION=redis):
//	    rotation steps this dispatcher's picks asked Redis for, one per pick sent (a pick
//	    answered from the snapshot while degraded asks none).
//	spread_rotation_round_trips_total           counter (the same): the scripts that took
//	    them; concurrent picks share one (docs/performance.md).
//
// Go runtime (go_*) and process (process_*) metrics come with them.
type metrics struct {
	mode string               // the mode label: "redirect" or "proxy" (MODE)
	info *prometheus.GaugeVec // spread_strategy_info

	reg         *prometheus.Registry
	requests    *prometheus.CounterVec
	pick        prometheus.Histogram
	redisErrors prometheus.Counter
	redisDenied *prometheus.CounterVec
	fallbacks   prometheus.Counter
	degraded    prometheus.Gauge
	backendUp   *prometheus.GaugeVec
	ejectedG    *prometheus.GaugeVec
	ejections   *prometheus.CounterVec
	inflight    *prometheus.GaugeVec
	gauges      sync.Map // backend -> its spread_inflight child (inflightGauge)

	// counters holds spread_requests_total's children, made once per
	// backend and status (guarded by mu): a label lookup per request
	// (hashing three labels, formatting the status) is a measurable part of
	// a proxied request. Like the CounterVec's own children, they stay.
	counters map[requestKey]prometheus.Counter

	// The same facts for the dashboard, kept beside the Prometheus series
	// and updated by the same calls, so that bars and /metrics agree.
	mu         sync.Mutex
	strategy   string           // the strategy running now (setStrategy)
	served     map[string]int64 // backend URL -> requests sent there
	changed    map[string]bool  // backends whose count changed since the dashboard last looked
	unserved   int64            // requests answered without a backend
	up         map[string]bool  // backend URL -> last health, as SetHealth set it
	marks      marks            // ejected and ramping backends, as SetEjected set them
	upVersion  uint64           // counts the changes of up and marks
	isDegraded bool
}

func newMetrics(mode, strategy string) *metrics {
	m := &metrics{
		mode: mode,
		reg:  prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spread_requests_total",
			Help: "Requests answered on the main port, by the backend chosen (\"\" for none), mode and status code.",
		}, []string{"backend", "mode", "status"}),
		pick: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "spread_pick_duration_seconds",
			Help: "Time spent choosing a backend (Picker.Pick: for round-robin one Redis rotation step, more if invalid entries are skipped), failed picks included.",
			// From 100µs, a fast local Redis, to 1s, the default REDIS_TIMEOUT.
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
		redisErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "spread_redis_errors_total",
			Help: "Calls to Redis on the request path that failed because Redis did not answer (unavailable, or REDIS_TIMEOUT ran out), whether or not the snapshot then answered.",
		}),
		redisDenied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spread_redis_permission_errors_total",
			Help: "Calls to Redis that Redis refused because the user in REDIS_URL may not run the command (an ACL misconfiguration), by command.",
		}, []string{"command"}),
		fallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "spread_hash_fallbacks_total",
			Help: "Requests without the HASH_KEY key, which took a round-robin step instead (STRATEGY=hash).",
		}),
		degraded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "spread_degraded",
			Help: "1 while the dispatcher serves without Redis, from its snapshot of the list, whatever the strategy; else 0.",
		}),
		backendUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "spread_backend_up",
			Help: "1 if the last health check found the backend up, 0 if down; absent until a check has run.",
		}, []string{"backend"}),
		ejectedG: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "spread_backend_ejected",
			Help: "1 while the backend is ejected for failing requests (by any dispatcher on the list), else 0.",
		}, []string{"backend"}),
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spread_ejections_total",
			Help: "Ejections this dispatcher made, each after EJECT_AFTER failed requests in a row to the backend (MODE=proxy).",
		}, []string{"backend"}),
		inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "spread_inflight",
			Help: "Requests this dispatcher is forwarding to the backend now (MODE=proxy).",
		}, []string{"backend"}),
		counters: map[requestKey]prometheus.Counter{},
		served:   map[string]int64{},
		changed:  map[string]bool{},
		up:       map[string]bool{},
	}
	m.info = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "spread_strategy_info",
		Help: "Always 1: the strategy this dispatcher runs now, and its MODE.",
	}, []string{"strategy", "mode"})
	m.setStrategy(strategy)
	m.reg.MustRegister(m.requests, m.pick, m.redisErrors, m.redisDenied, m.fallbacks, m.degraded, m.backendUp, m.ejectedG, m.ejections, m.inflight, m.info,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// setStrategy says that the dispatcher runs strategy now, in
// spread_strategy_info and on the dashboard.
func (m *metrics) setStrategy(strategy string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.strategy = strategy
	m.info.Reset()
	m.info.WithLabelValues(strategy, m.mode).Set(1)
}

// countRotation adds spread_rotation_steps_total and
// spread_rotation_round_trips_total, read from r: the dispatcher's one
// shared rotation, whichever strategy takes its steps.
func (m *metrics) countRotation(r balance.RedisRotation) {
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "spread_rotation_steps_total",
		Help: "Rotation steps this dispatcher's picks asked Redis for, one per pick sent (STRATEGY=round-robin, ROTATION=redis).",
	}, func() float64 { return float64(r.Stats().Requests) }), prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "spread_rotation_round_trips_total",
		Help: "Scripts that took those rotation steps; concurrent picks share one.",
	}, func() float64 { return float64(r.Stats().RoundTrips) }))
}

// handler serves the registry in Prometheus's exposition format.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// requestKey names one child of spread_requests_total (mode is the
// dispatcher's own).
type requestKey struct {
	backend string
	status  int
}

// request counts one answered request. backend is "" when none was chosen.
func (m *metrics) request(backend string, status int) {
	k := requestKey{backend, status}
	m.mu.Lock()
	c, ok := m.counters[k]
	if !ok {
		c = m.requests.WithLabelValues(backend, m.mode, strconv.Itoa(status))
		m.counters[k] = c
	}
	if backend == "" {
		m.unserved++
	} else {
		m.served[backend]++
		m.changed[backend] = true
	}
	m.mu.Unlock()
	c.Inc()
}

// redisError counts a call to Redis on the request path that failed
// because Redis did not answer, in spread_redis_errors_total. Other errors
// are not counted (refusals are, through denied).
func (m *metrics) redisError(err error) {
	if pick.Unavailable(err) {
		m.redisErrors.Inc()
	}
}

// denied counts a command Redis refused, in
// spread_redis_permission_errors_total (store.OnDenied).
func (m *metrics) denied(e *pick.PermissionError) {
	m.redisDenied.WithLabelValues(e.Name()).Inc()
}

// SetDegraded sets spread_degraded, and the dashboard's degraded mark.
func (m *metrics) SetDegraded(degraded bool) {
	v := 0.0
	if degraded {
		v = 1
	}
	m.degraded.Set(v)
	m.mu.Lock()
	m.isDegraded = degraded
	m.mu.Unlock()
}

// inflightGauge returns spread_inflight's child for backend, made once:
// a label lookup per request is a measurable part of a proxied request.
func (m *metrics) inflightGauge(backend string) prometheus.Gauge {
	if g, ok := m.gauges.Load(backend); ok {
		return g.(prometheus.Gauge)
	}
	g, _ := m.gauges.LoadOrStore(backend, m.inflight.WithLabelValues(backend))
	return g.(prometheus.Gauge)
}

// InFlight returns this dispatcher's requests in flight per backend, as
// spread_inflight counts them.
func (m *metrics) InFlight() map[string]int64 {
	out := map[string]int64{}
	m.gauges.Range(func(k, v any) bool {
		var d dto.Metric
		if v.(prometheus.Gauge).Write(&d) == nil && d.GetGauge().GetValue() > 0 {
			out[k.(string)] = int64(d.GetGauge().GetValue())
		}
		return true
	})
	return out
}

// SetHealth replaces every backend's health with up: backends no longer in
// it lose their spread_backend_up series and their mark on the dashboard.
func (m *metrics) SetHealth(up map[string]bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.backendUp.Reset()
	m.up = map[string]bool{}
	m.upVersion++
	for b, ok := range up {
		v := 0.0
		if ok {
			v = 1
		}
		m.backendUp.WithLabelValues(b).Set(v)
		m.up[b] = ok
	}
}

// marks are the dashboard's tags beside the health marks: the backends
// ejected now, and those slow start ramps, with their Factor.
type marks struct {
	ejected map[string]bool
	factor  map[string]float64
}

// SetEjected sets spread_backend_ejected for every backend of up (the
// list's, as SetHealth has them): 1 for those in ejected, else 0; and the
// dashboard's marks, with each ramping backend's slow start factor.
func (m *metrics) SetEjected(up map[string]bool, ejected map[string]time.Time, factor map[string]float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mk := marks{ejected: map[string]bool{}, factor: factor}
	m.ejectedG.Reset()
	for b := range up {
		_, out := ejected[b]
		v := 0.0
		if out {
			v = 1
			mk.ejected[b] = true
		}
		m.ejectedG.WithLabelValues(b).Set(v)
	}
	if !maps.Equal(mk.ejected, m.marks.ejected) || !maps.Equal(mk.factor, m.marks.factor) {
		m.marks = mk
		m.upVersion++
	}
}

// ejection counts an ejection this dispatcher made (spread_ejections_total).
func (m *metrics) ejection(backend string) { m.ejections.WithLabelValues(backend).Inc() }

// watchHealth copies the shared health view, as the snapshot last read it,
// into the metrics, checking every second for a new snapshot, until ctx is
// done.
func watchHealth(ctx context.Context, pl *pool.Pool, m *metrics) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var last *pool.Snapshot
	for {
		if s := pl.Snapshot(); s != nil && s != last {
			m.SetHealth(s.Health())
			m.SetEjected(s.Health(), pl.Ejected(), pl.Factors())
			last = s
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// look is what the dashboard reads of the metrics at each tick.
type look struct {
	strategy string
	unserved int64
	degraded bool
	// served holds the requests sent to each backend whose count changed
	// since the dashboard last looked (every backend, if it asked for all).
	served map[string]int64
	// up is the health marks, if they changed since the version the
	// dashboard gave (else nil), and upVersion their version.
	up        map[string]bool
	marks     marks // with up
	upVersion uint64
}

// look returns what changed since the dashboard last looked (all of it, if
// all), and the health marks if they changed since upVersion: its cost
// follows the requests since, not the number of backends.
func (m *metrics) look(all bool, upVersion uint64) look {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := look{strategy: m.strategy, unserved: m.unserved, degraded: m.isDegraded, upVersion: m.upVersion}
	if all {
		l.served = maps.Clone(m.served)
	} else {
		l.served = make(map[string]int64, len(m.changed))
		for b := range m.changed {
			l.served[b] = m.served[b]
		}
	}
	clear(m.changed)
	if all || upVersion != m.upVersion {
		l.up, l.marks = maps.Clone(m.up), marks{ejected: maps.Clone(m.marks.ejected), factor: maps.Clone(m.marks.factor)}
	}
	return l
}

// timedPicker is a Picker that records every pick in metrics.
type timedPicker struct {
	balance.Picker
	m *metrics
}

func (p timedPicker) Pick(ctx context.Context, r *http.Request) (balance.Backend, error) {
	start := time.Now()
	b, err := p.Picker.Pick(ctx, r)
	// Failed calls to Redis are reported by the strategies that make them
	// (Env.OnRedisError), including those their fallback then answered.
	p.m.pick.Observe(time.Since(start).Seconds())
	return b, err
}

// Unwrap returns the strategy, for balance.As.
func (p timedPicker) Unwrap() balance.Picker { return p.Picker }
