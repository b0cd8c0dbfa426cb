package main

import (
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// The live load: an open-loop load generator for the lab's console. It
// sends GET requests at Poisson arrivals whose rate may change, or drop to
// 0, while it runs, each as one of a number of users in X-User, to a list of
// URLs (the dispatchers) in turn, and keeps what it saw second by second
// over the last liveHistory seconds: the rate it offered, the answers split
// into ok, errors and timeouts, their latency percentiles, and which backend
// answered (X-Backend).

// liveHistory is how many seconds of the load a liveLoad keeps.
const liveHistory = 120

// maxLiveRate bounds the rate a liveLoad accepts, in requests per second:
// far beyond what one machine running the whole lab can serve, but a bound
// on a typo.
const maxLiveRate = 20000

// maxLate is how far behind its schedule the load may fall before it gives
// the missed arrivals up instead of sending them all at once: after the
// machine stalled, a burst of every request due meanwhile would measure the
// burst, not the strategies. A second's late_ms shows it.
const maxLate = time.Second

// liveOptions are what a liveLoad sends, and where.
type liveOptions struct {
	targets []string      // URLs, taken in turn
	users   int           // distinct X-User values, 1 or more
	timeout time.Duration // a request not answered by then counts as a timeout
	seed    uint64        // of the arrival times and the users
	rate    float64       // requests per second at start; 0 sends nothing until setRate
}

// liveLoad is the live load, running. Its methods may be called from any
// goroutine.
type liveLoad struct {
	opts     liveOptions
	pacer    *livePacer
	attacker *vegeta.Attacker
	rec      *recorder
	drained  chan struct{} // closed once every request sent has ended
}

// startLiveLoad checks o and starts sending.
func startLiveLoad(o liveOptions) (*liveLoad, error) {
	if len(o.targets) == 0 {
		return nil, fmt.Errorf("live load: no target URLs")
	}
	if o.users < 1 {
		return nil, fmt.Errorf("live load: users=%d: want 1 or more", o.users)
	}
	if o.timeout <= 0 {
		return nil, fmt.Errorf("live load: timeout=%v: want a positive duration", o.timeout)
	}
	if err := checkRate(o.rate); err != nil {
		return nil, err
	}
	rec := newRecorder(time.Now)
	l := &liveLoad{
		opts:  o,
		pacer: newLivePacer(o.rate, o.seed, rec.late),
		// No redirects followed: a proxying dispatcher's answer is the
		// backend's. The body is not kept; X-Backend says who answered.
		attacker: vegeta.NewAttacker(vegeta.Timeout(o.timeout), vegeta.Redirects(vegeta.NoFollow),
			vegeta.KeepAlive(true), vegeta.MaxBody(0)),
		rec:     rec,
		drained: make(chan struct{}),
	}
	results := l.attacker.Attack(userTargeter(o.targets, o.users, o.seed, rec.sent), l.pacer, 0, "")
	go func() {
		defer close(l.drained)
		for res := range results {
			rec.record(res)
		}
	}()
	return l, nil
}

// checkRate refuses a rate a liveLoad cannot use, naming the field that an
// API sets it with.
func checkRate(r float64) error {
	if !(r >= 0 && r <= maxLiveRate) { // NaN fails too
		return fmt.Errorf("rate: want a number of requests per second from 0 to %d; got %v", maxLiveRate, r)
	}
	return nil
}

// setRate changes the rate from now on; 0 stops sending until the next
// change. The next arrival is drawn afresh at the new rate, which Poisson
// arrivals allow (they have no memory), so a change takes effect at once.
func (l *liveLoad) setRate(r float64) error {
	if err := checkRate(r); err != nil {
		return err
	}
	l.pacer.setRate(r)
	return nil
}

// rate is the rate asked for, in requests per second.
func (l *liveLoad) rate() float64 { return l.pacer.currentRate() }

// stop stops sending and waits until every request sent has been answered
// or has timed out. The history stays readable.
func (l *liveLoad) stop() {
	l.pacer.close()
	l.attacker.Stop()
	<-l.drained
}

// seconds returns the seconds of the history, oldest first: each of the
// last liveHistory seconds since the load started, the current one last
// with span_s less than 1.
func (l *liveLoad) seconds() []liveSecond { return l.rec.seconds() }

// window sums up the current second and the n-1 before it.
func (l *liveLoad) window(n int) liveWindow { return l.rec.window(n) }

// livePacer paces a vegeta attack at Poisson arrivals of a rate that may
// change. Pace itself waits for the next arrival, so that a change of rate,
// or close, ends the wait at once (vegeta sleeps the wait Pace returns, and
// would send a request when it ends); it then returns 0. Arrivals are kept
// on an absolute schedule: a late one is sent at once, so that the load does
// not slow down when the machine does (up to maxLate behind).
type livePacer struct {
	onHit func(late time.Duration) // called for each arrival, with how late it is sent

	mu      sync.Mutex
	rate    float64
	rng     *rand.Rand
	next    time.Time     // the next arrival; zero: draw it from now
	changed chan struct{} // closed, and replaced, when the rate changes or the pacer closes
	closed  bool

	timer *time.Timer // Pace's; Pace runs in one goroutine, vegeta's
}

var _ vegeta.Pacer = (*livePacer)(nil)

func newLivePacer(rate float64, seed uint64, onHit func(time.Duration)) *livePacer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &livePacer{onHit: onHit, rate: rate, rng: rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)),
		changed: make(chan struct{}), timer: t}
}

// Pace waits until the next arrival and returns 0, or returns stop once
// the pacer is closed. vegeta's elapsed and hits are not needed: the
// schedule is the pacer's own.
func (p *livePacer) Pace(time.Duration, uint64) (time.Duration, bool) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return 0, true
		}
		rate, changed := p.rate, p.changed
		if rate <= 0 {
			p.mu.Unlock()
			<-changed
			continue
		}
		now := time.Now()
		if p.next.IsZero() || now.Sub(p.next) > maxLate {
			p.next = now.Add(expGap(p.rng, rate))
		}
		wait := p.next.Sub(now)
		if wait <= 0 {
			late := -wait
			p.next = p.next.Add(expGap(p.rng, rate))
			p.mu.Unlock()
			p.onHit(late)
			return 0, false
		}
		p.mu.Unlock()
		p.timer.Reset(wait)
		select {
		case <-p.timer.C:
		case <-changed:
			p.timer.Stop()
		}
	}
}

// Rate is the rate asked for now.
func (p *livePacer) Rate(time.Duration) float64 { return p.currentRate() }

func (p *livePacer) currentRate() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rate
}

func (p *livePacer) setRate(r float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || r == p.rate {
		return
	}
	p.rate, p.next = r, time.Time{}
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *livePacer) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		p.closed = true
		close(p.changed)
	}
}

// expGap is an exponentially distributed gap with mean 1/rate: the time to
// the next of many independent arrivals.
func expGap(rng *rand.Rand, rate float64) time.Duration {
	return time.Duration(rng.ExpFloat64() / rate * float64(time.Second))
}

// liveSecond is one second of the live load: what was sent in it, and the
// answers that ended in it. It is the console's data point.
type liveSecond struct {
	T     int64   `json:"t"`      // Unix time of the second's start
	SpanS float64 `json:"span_s"` // 1, or the part gone by of the current second: rates are counts / span_s
	// Offered is how many requests were sent.
	Offered int `json:"offered"`
	// OK, Errors and Timeouts split the answers that ended in the second:
	// a 2xx; any other status or a connection error; no answer within the
	// timeout.
	OK       int `json:"ok"`
	Errors   int `json:"errors"`
	Timeouts int `json:"timeouts"`
	// P50MS, P90MS and P99MS are percentiles of the latency of those
	// answers, errors included, a timeout at the timeout; null if none.
	P50MS *float64 `json:"p50_ms"`
	P90MS *float64 `json:"p90_ms"`
	P99MS *float64 `json:"p99_ms"`
	// Backends counts those answers by the backend that gave them, named in
	// X-Backend (a proxying dispatcher passes it on). Timeouts, and errors
	// of the dispatcher itself, name none.
	Backends map[string]int `json:"backends"`
	// LateMS is how far behind its schedule the latest send of the second
	// was, at most: above a few milliseconds, the load generator (or its
	// machine) could not keep up with the rate.
	LateMS float64 `json:"late_ms"`
}

// liveWindow sums up the last seconds of the live load.
type liveWindow struct {
	SpanS        float64            `json:"span_s"`
	OfferedPerS  float64            `json:"offered_per_s"`
	OKPerS       float64            `json:"ok_per_s"`
	ErrorsPerS   float64            `json:"errors_per_s"`
	TimeoutsPerS float64            `json:"timeouts_per_s"`
	P50MS        *float64           `json:"p50_ms"`
	P90MS        *float64           `json:"p90_ms"`
	P99MS        *float64           `json:"p99_ms"`
	MaxLateMS    float64            `json:"max_late_ms"`
	AnswersNamed int                `json:"answers_named"` // the answers that named a backend: the shares' whole
	Share        map[string]float64 `json:"share"`         // of those, by backend
}

// recorder keeps the per-second buckets of a live load.
type recorder struct {
	now func() time.Time

	mu      sync.Mutex
	start   time.Time
	buckets [liveHistory + 1]bucket // by Unix second modulo its length: the history and the current second
}

// bucket is one second's counts.
type bucket struct {
	sec                           int64 // Unix second; a bucket of another second is stale
	offered, ok, errors, timeouts int
	latencies                     []time.Duration
	sorted                        bool // latencies is sorted: no answer came since the last sort
	backends                      map[string]int
	late                          time.Duration
}

func newRecorder(now func() time.Time) *recorder {
	return &recorder{now: now, start: now()}
}

// at returns the bucket of second sec, emptied if it held an older one.
// r.mu is held.
func (r *recorder) at(sec int64) *bucket {
	b := &r.buckets[sec%int64(len(r.buckets))]
	if b.sec != sec {
		*b = bucket{sec: sec, latencies: b.latencies[:0], sorted: true, backends: b.backends}
		clear(b.backends)
		if b.backends == nil {
			b.backends = map[string]int{}
		}
	}
	return b
}

// sent counts a request going out now.
func (r *recorder) sent() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.at(r.now().Unix()).offered++
}

// late notes how late an arrival was sent.
func (r *recorder) late(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.at(r.now().Unix())
	b.late = max(b.late, d)
}

// record counts an answer (or its absence) that ends now.
func (r *recorder) record(res *vegeta.Result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.at(r.now().Unix())
	switch {
	case res.Error == "" && res.Code >= 200 && res.Code <= 299:
		b.ok++
	case res.Code == 0 && errorKind(res) == "timeout":
		b.timeouts++
	default:
		b.errors++
	}
	b.latencies = append(b.latencies, res.Latency)
	b.sorted = false
	if name := res.Headers.Get("X-Backend"); name != "" {
		b.backends[name]++
	}
}

// since returns the buckets of the seconds from first to the current one,
// those before the start left out, each sorted; and how long they span, up
// to now. r.mu is held.
func (r *recorder) since(first int64) ([]*bucket, time.Time) {
	now := r.now()
	cur := now.Unix()
	first = max(first, r.start.Unix(), cur-liveHistory)
	var bs []*bucket
	for s := first; s <= cur; s++ {
		b := r.at(s)
		if !b.sorted {
			slices.Sort(b.latencies)
			b.sorted = true
		}
		bs = append(bs, b)
	}
	return bs, now
}

// span is how much of second sec has gone by at now, from the recorder's
// start: 1 for a whole second.
func (r *recorder) span(sec int64, now time.Time) float64 {
	from, to := time.Unix(sec, 0), time.Unix(sec+1, 0)
	if r.start.After(from) {
		from = r.start
	}
	if now.Before(to) {
		to = now
	}
	return max(0, to.Sub(from).Seconds())
}

func (r *recorder) seconds() []liveSecond {
	r.mu.Lock()
	defer r.mu.Unlock()
	bs, now := r.since(math.MinInt64)
	out := make([]liveSecond, 0, len(bs))
	for _, b := range bs {
		s := liveSecond{T: b.sec, SpanS: round(r.span(b.sec, now), 3), Offered: b.offered, OK: b.ok,
			Errors: b.errors, Timeouts: b.timeouts, Backends: maps.Clone(b.backends), LateMS: round(ms(b.late), 3)}
		s.P50MS, s.P90MS, s.P99MS = percentilesMS(b.latencies)
		out = append(out, s)
	}
	return out
}

func (r *recorder) window(n int) liveWindow {
	r.mu.Lock()
	defer r.mu.Unlock()
	bs, now := r.since(r.now().Unix() - int64(n) + 1)
	var w liveWindow
	var all []time.Duration
	counts := map[string]int{}
	var offered, ok, errs, timeouts int
	for _, b := range bs {
		w.SpanS += r.span(b.sec, now)
		offered, ok, errs, timeouts = offered+b.offered, ok+b.ok, errs+b.errors, timeouts+b.timeouts
		all = append(all, b.latencies...)
		for k, v := range b.backends {
			counts[k] += v
			w.AnswersNamed += v
		}
		w.MaxLateMS = max(w.MaxLateMS, round(ms(b.late), 3))
	}
	if w.SpanS > 0 {
		w.OfferedPerS = round(float64(offered)/w.SpanS, 1)
		w.OKPerS = round(float64(ok)/w.SpanS, 1)
		w.ErrorsPerS = round(float64(errs)/w.SpanS, 1)
		w.TimeoutsPerS = round(float64(timeouts)/w.SpanS, 1)
	}
	w.SpanS = round(w.SpanS, 3)
	slices.Sort(all)
	w.P50MS, w.P90MS, w.P99MS = percentilesMS(all)
	w.Share = map[string]float64{}
	for k, v := range counts {
		w.Share[k] = round(float64(v)/float64(w.AnswersNamed), 4)
	}
	return w
}

// percentilesMS is p50, p90 and p99 of sorted in milliseconds; nil for
// none.
func percentilesMS(sorted []time.Duration) (p50, p90, p99 *float64) {
	if len(sorted) == 0 {
		return nil, nil, nil
	}
	f := func(q float64) *float64 {
		v := round(ms(percentile(sorted, q)), 3)
		return &v
	}
	return f(0.50), f(0.90), f(0.99)
}
