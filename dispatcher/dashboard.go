package main

import (
	"bytes"
	"cmp"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/spreadlb/spread/internal/backend"
	"github.com/spreadlb/spread/internal/balance"
	"github.com/spreadlb/spread/internal/pool"
)

// The dashboard page: one HTML file, its CSS and script inline, nothing
// fetched from elsewhere, so it works offline. It draws what GET /events
// sends.
//
//go:embed web/index.html
var dashboardPage []byte

// dashboard serves the admin port's live view of the balancing:
//
//	GET /        the page (web/index.html, embedded)
//	GET /events  server-sent events: the whole state on connect ("state"),
//	             then what changed ("delta"), checked every `every`, until
//	             the client leaves or done is closed
//
// One loop, running while at least one stream is open, makes the state and
// works out what changed, once for every stream: so an open dashboard costs
// what changes, not what the list holds, and another one costs the bytes
// it is sent. It reads the list from the pool's snapshot (read when it
// changes), and of the shared rotation only its end (rotationShown
// entries). At most maxStreams streams are open at once (ADMIN_MAX_STREAMS);
// the next gets a 503 saying so.
type dashboard struct {
	m      *metrics       // requests per backend, mode, degraded, health
	pool   *pool.Pool     // the list as last read
	picker balance.Picker // the strategy: its rotation or its shared in-flight counts, where it shows them
	key    string         // REDIS_KEY, for the page
	// refusal says why the stored strategy is refused, or "" (nil: never).
	refusal func() string
	// degraded says why the dispatcher serves without Redis, or "" (nil:
	// the metrics' mark alone).
	degraded   func() string
	every      time.Duration // how often the state is checked for changes
	maxStreams int           // ADMIN_MAX_STREAMS; 0 means defaultMaxStreams
	// done is closed when the server shuts down. http.Server.Shutdown waits
	// for handlers to return and does not cancel their requests, so a
	// stream that did not watch done would hold shutdown up for the whole
	// SHUTDOWN_TIMEOUT.
	done <-chan struct{}
	log  *slog.Logger

	starting sync.Mutex // one stream at a time starts the loop
	mu       sync.Mutex
	streams  map[*eventStream]bool
	running  bool   // the loop runs
	state    *view  // as last sent
	full     []byte // state as JSON, made when a stream needs it
}

// eventStream is one open GET /events.
type eventStream struct {
	deltas chan []byte // the changes, as JSON, in order
	behind bool        // a change did not fit in deltas: send the whole state next (under dashboard.mu)
}

// rotationShown is how many entries of the rotation the page shows: the
// next picks, however long the list.
const rotationShown = 64

// defaultMaxStreams is ADMIN_MAX_STREAMS's default.
const defaultMaxStreams = 16

// keepAliveEvery is how often a quiet stream gets a comment, so that
// proxies in between do not close it.
const keepAliveEvery = 15 * time.Second

func (d *dashboard) mount(e *echo.Echo) {
	e.GET("/", d.page)
	e.GET("/events", d.events)
}

func (d *dashboard) page(c echo.Context) error {
	// The page may use only itself and /events: a browser refuses anything else.
	c.Response().Header().Set("Content-Security-Policy",
		"default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'")
	return c.HTMLBlob(http.StatusOK, dashboardPage)
}

func (d *dashboard) events(c echo.Context) error {
	ctx, w := c.Request().Context(), c.Response()
	st, full, ok := d.join(ctx)
	if !ok {
		c.Response().Header().Set("Retry-After", "5")
		return c.String(http.StatusServiceUnavailable, fmt.Sprintf(
			"too many dashboards: at most %d /events streams at once (ADMIN_MAX_STREAMS); close one, or raise ADMIN_MAX_STREAMS\n", d.max()))
	}
	defer d.leave(st)
	w.Header().Set(echo.HeaderContentType, "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	flush := http.NewResponseController(w.Writer)
	keepAlive := time.NewTicker(keepAliveEvery)
	defer keepAlive.Stop()
	kind, data := "state", full
	for {
		var err error
		if data != nil {
			_, err = fmt.Fprintf(w, "event: %s\ndata: %s\n\n", kind, data)
		} else {
			_, err = io.WriteString(w, ": keep-alive\n\n")
		}
		if err != nil || flush.Flush() != nil {
			return nil // the client has gone
		}
		select {
		case <-ctx.Done():
			return nil
		case <-d.done:
			return nil
		case <-keepAlive.C:
			kind, data = "", nil
		case delta := <-st.deltas:
			kind, data = "delta", delta
			d.mu.Lock()
			if st.behind {
				// Changes were dropped for this stream: the whole state
				// instead, and only the changes after it.
				st.behind = false
				for len(st.deltas) > 0 {
					<-st.deltas
				}
				kind, data = "state", d.fullJSON()
			}
			d.mu.Unlock()
		}
	}
}

func (d *dashboard) max() int {
	if d.maxStreams > 0 {
		return d.maxStreams
	}
	return defaultMaxStreams
}

// join opens a stream and returns it with the state as JSON, starting the
// loop if it does not run; ok is false when maxStreams are open.
func (d *dashboard) join(ctx context.Context) (st *eventStream, full []byte, ok bool) {
	// The whole state is made afresh only to start the loop, and by one
	// stream at a time: making it takes the metrics' changes since their
	// last look, which the loop must not miss.
	d.starting.Lock()
	defer d.starting.Unlock()
	d.mu.Lock()
	if len(d.streams) >= d.max() {
		d.mu.Unlock()
		return nil, nil, false
	}
	running := d.running
	d.mu.Unlock()
	var fresh *view
	if !running {
		fresh = d.newView(ctx)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.streams) >= d.max() {
		return nil, nil, false
	}
	if !d.running {
		if fresh != nil {
			d.state, d.full = fresh, nil
		}
		d.running = true
		go d.run()
	}
	if d.streams == nil {
		d.streams = map[*eventStream]bool{}
	}
	st = &eventStream{deltas: make(chan []byte, 16)}
	d.streams[st] = true
	return st, d.fullJSON(), true
}

// leave closes a stream.
func (d *dashboard) leave(st *eventStream) {
	d.mu.Lock()
	delete(d.streams, st)
	d.mu.Unlock()
}

// fullJSON is the state as JSON. The caller holds mu.
func (d *dashboard) fullJSON() []byte {
	if d.full == nil {
		b, err := json.Marshal(d.state.snapshot())
		if err != nil {
			d.log.Error("dashboard: cannot encode the state", "err", err)
			b = []byte("{}")
		}
		d.full = b
	}
	return d.full
}

// run makes the state every d.every while a stream is open, and sends
// each stream what changed.
func (d *dashboard) run() {
	t := time.NewTicker(d.every)
	defer t.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-d.done:
		case <-stop:
		}
		cancel()
	}()
	for {
		select {
		case <-d.done:
			d.mu.Lock()
			d.running = false
			d.mu.Unlock()
			return
		case <-t.C:
		}
		// What changed is gathered first (it may wait on Redis), then
		// applied under mu, where a joining stream reads the state.
		d.mu.Lock()
		upVer := d.state.upVer
		d.mu.Unlock()
		in := d.gather(ctx, upVer, false)
		d.mu.Lock()
		delta := d.apply(d.state, in, false)
		if len(d.streams) == 0 {
			d.running = false
			d.mu.Unlock()
			return
		}
		if delta != nil {
			d.full = nil
			msg, err := json.Marshal(delta)
			if err == nil {
				for st := range d.streams {
					select {
					case st.deltas <- msg:
					default:
						st.behind = true
					}
				}
			}
		}
		d.mu.Unlock()
	}
}

// snapshot is what one event carries, and all the page shows.
type snapshot struct {
	Mode     string `json:"mode"`
	Strategy string `json:"strategy"`
	// StrategyNote says why a stored strategy does not run here, if so.
	StrategyNote string `json:"strategyNote,omitempty"`
	// SharedInFlight says whether the in-flight counts are every
	// dispatcher's (balance.InFlightCounter), not this one's alone.
	SharedInFlight bool `json:"sharedInflight"`
	// NextPick says whether the rotation's last entry is the next pick:
	// true for a strategy that shows its rotation (balance.Rotator).
	NextPick bool `json:"nextPick"`
	// InFlight says whether the bars carry requests in flight (MODE=proxy).
	InFlight bool   `json:"inflight"`
	Degraded bool   `json:"degraded"`
	Source   string `json:"source"`
	// Backends are the bars: every backend that has been sent requests or
	// is in the rotation, by URL.
	Backends []bar `json:"backends"`
	// Unserved counts the requests answered without a backend (503).
	Unserved int64 `json:"unserved"`
	// Rotation is the end of the list, in order (at most rotationShown
	// entries); the next pick takes the last entry.
	Rotation []entry `json:"rotation"`
	// RotationLength is how many entries the whole list holds.
	RotationLength int    `json:"rotationLength"`
	RotationError  string `json:"rotationError,omitempty"`
	// DegradedReason says why the dispatcher serves without Redis, if so.
	DegradedReason string `json:"degradedReason,omitempty"`
}

type bar struct {
	URL      string `json:"url"`
	Requests int64  `json:"requests"`
	Up       *bool  `json:"up"` // nil until a health check has run: the page shows nothing
	// InFlight is the requests in flight to the backend now: every
	// dispatcher's for strategies that count across dispatchers (as last read from Redis), this
	// dispatcher's for the other strategies; 0 in redirect mode.
	InFlight int64 `json:"inflight"`
	// Ejected: a dispatcher ejected it for failing requests; it is skipped
	// until the ejection ends.
	Ejected bool `json:"ejected"`
	// Ramp is the share of its weight slow start gives it now, below 1;
	// 0 when it is not ramping.
	Ramp float64 `json:"ramp,omitempty"`
}

type entry struct {
	URL   string `json:"url"`   // as the list holds it
	Valid bool   `json:"valid"` // false: backend.Parse refuses it, picks skip it
	Next  bool   `json:"next"`  // round-robin's last entry: the next pick lands here
	Up    *bool  `json:"up"`
	// Ejected and Ramp are the backend's, as on its bar.
	Ejected bool    `json:"ejected"`
	Ramp    float64 `json:"ramp,omitempty"`
}

// view is the dashboard's state as the loop keeps it, updated at each
// tick from what changed: the bars, by backend URL, and every other field.
type view struct {
	fields   snapshot                   // all but the bars (Backends nil)
	js       map[string]json.RawMessage // fields, as the page has them
	bars     map[string]bar             // by backend URL (bar.URL is it cut for showing)
	list     *pool.Snapshot             // the list the bars were made from
	up       map[string]bool            // health marks, as the metrics last had them
	marks    marks                      // ejected and ramping backends, with them
	upVer    uint64
	inflight map[string]int64
}

// snapshot returns the state as the page draws it: the bars sorted by URL.
func (v *view) snapshot() *snapshot {
	s := v.fields
	s.Backends = make([]bar, 0, len(v.bars))
	for _, b := range v.bars {
		s.Backends = append(s.Backends, b)
	}
	slices.SortFunc(s.Backends, func(a, b bar) int { return cmp.Compare(a.URL, b.URL) })
	return &s
}

// snapshot is the whole state now.
func (d *dashboard) snapshot(ctx context.Context) *snapshot { return d.newView(ctx).snapshot() }

// newView makes the whole state.
func (d *dashboard) newView(ctx context.Context) *view {
	v := &view{bars: map[string]bar{}}
	d.apply(v, d.gather(ctx, 0, true), true)
	return v
}

// news is what the dashboard gathers at each tick.
type news struct {
	look     look             // the metrics' counts that changed, and the health marks if they did
	inflight map[string]int64 // requests in flight by backend URL
	shared   bool             // counted across every dispatcher
	list     *pool.Snapshot   // the list as the pool last read it
	rotator  bool             // the strategy shows a rotation
	rotation balance.Rotation // its end
	rotErr   error
	refusal  string
	degraded string
}

// gather reads what may have changed since the metrics' last look (all of
// it, if all), and the health marks if they changed since upVer. It
// touches no view, and may wait on Redis (the end of the rotation).
func (d *dashboard) gather(ctx context.Context, upVer uint64, all bool) news {
	n := news{look: d.m.look(all, upVer), inflight: d.m.InFlight()}
	if s := sharedInFlight(d.picker); s != nil {
		n.inflight, n.shared = s, true
	}
	if d.pool != nil {
		n.list = d.pool.Snapshot()
	}
	if rot, ok := balance.As[balance.Rotator](d.picker); ok {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		n.rotator = true
		n.rotation, n.rotErr = rot.Rotation(ctx, rotationShown)
	}
	if d.refusal != nil {
		n.refusal = d.refusal()
	}
	if d.degraded != nil && n.look.degraded {
		n.degraded = d.degraded()
	}
	return n
}

// apply brings v up to date with n, all of it if all, else what changed
// since the last update, and returns the changes for the page (see the
// events handler): the fields that changed, "backends" (the bars that
// changed) and "gone" (the bars removed); nil when nothing changed. Its
// cost follows what changed: the requests since the last update, the
// requests in flight, the end of the rotation; it goes over every bar only
// when the list or the health marks changed.
func (d *dashboard) apply(v *view, n news, all bool) map[string]any {
	l, inflight := n.look, n.inflight
	if l.up != nil {
		v.up, v.marks, v.upVer = l.up, l.marks, l.upVersion
	}
	health := func(url string) *bool {
		if up, ok := v.up[url]; ok {
			return &up
		}
		return nil
	}
	changed := map[string]bool{}
	set := func(url string, b bar) {
		if old, ok := v.bars[url]; !ok || !sameBar(old, b) {
			v.bars[url] = b
			changed[url] = true
		}
	}
	ensure := func(url string) { // a bar, empty so far
		if _, ok := v.bars[url]; !ok {
			set(url, bar{URL: backend.Truncate(url), Up: health(url), InFlight: inflight[url],
				Ejected: v.marks.ejected[url], Ramp: v.marks.factor[url]})
		}
	}

	// Every backend of the list has a bar, and every backend sent
	// requests: the list as the pool last read it.
	list := n.list
	var gone []string
	if list != v.list {
		var entries map[string]bool
		if list != nil {
			entries = list.Health()
		}
		for url := range entries {
			ensure(url)
		}
		if !all {
			for url, b := range v.bars {
				if _, ok := entries[url]; !ok && b.Requests == 0 {
					delete(v.bars, url)
					delete(changed, url)
					gone = append(gone, b.URL)
				}
			}
		}
		v.list = list
	}
	for url, n := range l.served {
		ensure(url)
		b := v.bars[url]
		b.Requests = n
		set(url, b)
	}
	if l.up != nil {
		for url, b := range v.bars {
			b.Up, b.Ejected, b.Ramp = health(url), v.marks.ejected[url], v.marks.factor[url]
			set(url, b)
		}
	}
	for url := range v.inflight {
		if _, ok := inflight[url]; !ok {
			inflight[url] = 0 // no longer in flight
		}
	}
	for url, n := range inflight {
		if b, ok := v.bars[url]; ok {
			b.InFlight = n
			set(url, b)
		}
	}
	v.inflight = inflight

	// The other fields, and the end of the rotation.
	f := snapshot{Mode: d.m.mode, Strategy: l.strategy, NextPick: n.rotator, SharedInFlight: n.shared,
		InFlight: d.m.mode == string(balance.Proxy), Degraded: l.degraded, StrategyNote: n.refusal,
		DegradedReason: n.degraded, Source: fmt.Sprintf("Redis list %q", d.key), Unserved: l.unserved, Rotation: []entry{}}
	var entries []string
	var err error
	if n.rotator {
		entries, f.RotationLength, err = n.rotation.Entries, n.rotation.Len, n.rotErr
		if n.rotation.Local {
			f.Source = fmt.Sprintf("this process's copy of Redis list %q (not shared with other dispatchers)", d.key)
		}
	} else if list != nil {
		entries, f.RotationLength = list.Entries[max(0, len(list.Entries)-rotationShown):], len(list.Entries)
	} else {
		err = pool.ErrNoSnapshot
	}
	if err != nil {
		f.RotationError = err.Error()
		d.log.Debug("dashboard: cannot read the rotation", "err", err)
	}
	for i, raw := range entries {
		// An entry is shown as backend.Truncate cuts it: a hostile
		// megabyte would otherwise go to every open dashboard.
		e := entry{URL: backend.Truncate(raw), Next: f.NextPick && i == len(entries)-1}
		// Compare as metrics label them: the URL as validated.
		if u, err := backend.Parse(raw); err == nil {
			e.Valid, e.Up = true, health(u.String())
			e.Ejected, e.Ramp = v.marks.ejected[u.String()], v.marks.factor[u.String()]
			ensure(u.String())
		}
		f.Rotation = append(f.Rotation, e)
	}
	b, err := json.Marshal(f)
	var js map[string]json.RawMessage
	if err == nil {
		err = json.Unmarshal(b, &js)
	}
	if err != nil {
		d.log.Error("dashboard: cannot encode the state", "err", err)
		return nil
	}
	delete(js, "backends")

	out := map[string]any{}
	for k, val := range js {
		if !bytes.Equal(v.js[k], val) {
			out[k] = val
		}
	}
	for k := range v.js {
		if _, ok := js[k]; !ok {
			out[k] = nil // an omitempty field now empty
		}
	}
	v.fields, v.js = f, js
	if len(changed) > 0 {
		bars := make([]bar, 0, len(changed))
		for url := range changed {
			bars = append(bars, v.bars[url])
		}
		slices.SortFunc(bars, func(a, b bar) int { return cmp.Compare(a.URL, b.URL) })
		out["backends"] = bars
	}
	if len(gone) > 0 {
		slices.Sort(gone)
		out["gone"] = gone
	}
	if all || len(out) == 0 {
		return nil
	}
	return out
}

// sameBar reports whether a and b show the same.
func sameBar(a, b bar) bool {
	return a.URL == b.URL && a.Requests == b.Requests && a.InFlight == b.InFlight && a.Ejected == b.Ejected && a.Ramp == b.Ramp &&
		(a.Up == nil) == (b.Up == nil) && (a.Up == nil || *a.Up == *b.Up)
}

// sharedInFlight returns the requests in flight by backend URL that a
// strategy counts across every dispatcher (balance.InFlightCounter), or nil.
func sharedInFlight(p balance.Picker) map[string]int64 {
	c, ok := balance.As[balance.InFlightCounter](p)
	if !ok {
		return nil
	}
	out := map[string]int64{}
	for entry, n := range c.InFlight() {
		if u, err := backend.Parse(entry); err == nil {
			out[u.String()] += n
		}
	}
	return out
}
