package main

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spreadlb/spread/internal/rotation"
)

// modeRedirect is the value of the mode label, and of the dashboard's mode,
// for a dispatcher that answers with redirects. It is set once, in serve,
// as the metrics' mode field.
const modeRedirect = "redirect"

// metrics is what the dispatcher tells Prometheus on GET /metrics (admin
// port), and what the dashboard draws. It has its own registry rather than
// Prometheus's global one, so that every test, and every dispatcher in one
// process, counts alone.
//
//	spread_requests_total{backend,mode,status}  counter: requests answered on the main port.
//	    backend is the chosen backend's URL as validated (http://localhost:5000),
//	    "" when no backend was chosen (the 503s); mode is the metrics' mode;
//	    status is the status code sent ("302", "503").
//	spread_pick_duration_seconds                histogram: time spent in Picker.Next,
//	    every call, whether it chose a backend or failed.
//	spread_redis_errors_total                   counter: picks that failed because Redis
//	    did not answer: rotation.ErrUnavailable (refused, reset, broken connection, its
//	    own timeout) or the request's REDIS_TIMEOUT ran out (context.DeadlineExceeded).
//	    Not counted: answers Redis did give (empty list, wrong type, invalid entries),
//	    a client that left (context.Canceled), and the admin port's own reads
//	    (/readyz, the dashboard's LRANGE).
//	spread_degraded                             gauge: 1 while the dispatcher runs degraded
//	    (SetDegraded, called by the fallback when Redis stops and starts answering).
//	spread_backend_up{backend}                  gauge: 0 while the shared health checks have
//	    the backend in the down set, else 1 (SetHealth, from watchHealth every second);
//	    only backends of the list, never a made-up one.
//
// Go runtime (go_*) and process (process_*) metrics come with them.
type metrics struct {
	mode string // the mode label: modeRedirect or modeProxy (MODE)

	reg         *prometheus.Registry
	requests    *prometheus.CounterVec
	pick        prometheus.Histogram
	redisErrors prometheus.Counter
	degraded    prometheus.Gauge
	backendUp   *prometheus.GaugeVec

	// The same facts for the dashboard, kept beside the Prometheus series
	// and updated by the same calls, so that bars and /metrics agree.
	mu         sync.Mutex
	served     map[string]int64 // backend URL -> requests sent there
	unserved   int64            // requests answered without a backend
	up         map[string]bool  // backend URL -> last health, for those SetBackendUp set
	isDegraded bool
}

func newMetrics(mode string) *metrics {
	m := &metrics{
		mode: mode,
		reg:  prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spread_requests_total",
			Help: "Requests answered on the main port, by the backend chosen (\"\" for none), mode and status code.",
		}, []string{"backend", "mode", "status"}),
		pick: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "spread_pick_duration_seconds",
			Help: "Time spent choosing a backend (Picker.Next: one Redis rotation step, more if invalid entries are skipped), failed picks included.",
			// From 100µs, a fast local Redis, to 1s, the default REDIS_TIMEOUT.
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
		redisErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "spread_redis_errors_total",
			Help: "Picks that failed because Redis did not answer (unavailable, or REDIS_TIMEOUT ran out).",
		}),
		degraded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "spread_degraded",
			Help: "1 while the dispatcher runs degraded, else 0.",
		}),
		backendUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "spread_backend_up",
			Help: "1 if the last health check found the backend up, 0 if down; absent until a check has run.",
		}, []string{"backend"}),
		served: map[string]int64{},
		up:     map[string]bool{},
	}
	m.reg.MustRegister(m.requests, m.pick, m.redisErrors, m.degraded, m.backendUp,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// handler serves the registry in Prometheus's exposition format.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// request counts one answered request. backend is "" when none was chosen.
func (m *metrics) request(backend string, status int) {
	m.requests.WithLabelValues(backend, m.mode, strconv.Itoa(status)).Inc()
	m.mu.Lock()
	defer m.mu.Unlock()
	if backend == "" {
		m.unserved++
	} else {
		m.served[backend]++
	}
}

// picked records one call of Picker.Next that took d and returned err.
func (m *metrics) picked(d time.Duration, err error) {
	m.pick.Observe(d.Seconds())
	if errors.Is(err, rotation.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		m.redisErrors.Inc()
	}
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

// SetBackendUp records a health check's verdict on backend (its URL as
// validated), for spread_backend_up and the dashboard's health marks.
func (m *metrics) SetBackendUp(backend string, up bool) {
	v := 0.0
	if up {
		v = 1
	}
	m.backendUp.WithLabelValues(backend).Set(v)
	m.mu.Lock()
	m.up[backend] = up
	m.mu.Unlock()
}

// SetHealth replaces every backend's health with up: backends no longer in
// it lose their spread_backend_up series and their mark on the dashboard.
func (m *metrics) SetHealth(up map[string]bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.backendUp.Reset()
	m.up = map[string]bool{}
	for b, ok := range up {
		v := 0.0
		if ok {
			v = 1
		}
		m.backendUp.WithLabelValues(b).Set(v)
		m.up[b] = ok
	}
}

// watchHealth copies the shared health view, as the snapshot last read it,
// into the metrics every second until ctx is done.
func watchHealth(ctx context.Context, local *rotation.Local, m *metrics) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		if up, ok := local.Health(); ok {
			m.SetHealth(up)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// tally is a copy of what the dashboard draws from the metrics.
type tally struct {
	served   map[string]int64
	unserved int64
	up       map[string]bool
	degraded bool
}

func (m *metrics) tally() tally {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := tally{served: make(map[string]int64, len(m.served)), unserved: m.unserved,
		up: make(map[string]bool, len(m.up)), degraded: m.isDegraded}
	for b, n := range m.served {
		c.served[b] = n
	}
	for b, up := range m.up {
		c.up[b] = up
	}
	return c
}

// timedPicker is a Picker that records every pick in metrics.
type timedPicker struct {
	Picker
	m *metrics
}

func (p timedPicker) Next(ctx context.Context) (*url.URL, error) {
	start := time.Now()
	u, err := p.Picker.Next(ctx)
	p.m.picked(time.Since(start), err)
	return u, err
}
