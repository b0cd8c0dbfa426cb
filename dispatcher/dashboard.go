package main

import (
	"cmp"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/spreadlb/spread/internal/backend"
	"github.com/spreadlb/spread/internal/balance"
)

// The dashboard page: one HTML file, its CSS and script inline, nothing
// fetched from elsewhere, so it works offline. It draws what GET /events
// sends.
//
//go:embed web/index.html
var dashboardPage []byte

// lister is what the dashboard needs of the list when the strategy shows
// no rotation of its own: its entries in order. *store.Store gives LRANGE
// key 0 -1.
type lister interface {
	Entries(ctx context.Context) ([]string, error)
}

// dashboard serves the admin port's live view of the balancing:
//
//	GET /        the page (web/index.html, embedded)
//	GET /events  server-sent events: a snapshot (JSON) on connect, then every
//	             `every`, until the client leaves or done is closed
type dashboard struct {
	m      *metrics       // requests per backend, mode, degraded, health
	list   lister         // the list as Redis holds it
	picker balance.Picker // the strategy: its rotation or its shared in-flight counts, where it shows them
	key    string         // REDIS_KEY, for the page
	// refusal says why the stored strategy is refused, or "" (nil: never).
	refusal func() string
	every   time.Duration // how often /events sends a snapshot
	// done is closed when the server shuts down. http.Server.Shutdown waits
	// for handlers to return and does not cancel their requests, so a
	// stream that did not watch done would hold shutdown up for the whole
	// SHUTDOWN_TIMEOUT.
	done <-chan struct{}
	log  *slog.Logger
}

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
	w.Header().Set(echo.HeaderContentType, "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	flush := http.NewResponseController(w.Writer)
	tick := time.NewTicker(d.every)
	defer tick.Stop()
	for {
		data, err := json.Marshal(d.snapshot(ctx))
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "data: %s\n\n", data); err != nil {
			return nil // the client has gone
		}
		if err := flush.Flush(); err != nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-d.done:
			return nil
		case <-tick.C:
		}
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
	// Rotation is the list in order; the next pick takes the last entry.
	Rotation      []entry `json:"rotation"`
	RotationError string  `json:"rotationError,omitempty"`
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

func (d *dashboard) snapshot(ctx context.Context) snapshot {
	counts := d.m.tally()
	health := func(backend string) *bool {
		if up, ok := counts.up[backend]; ok {
			return &up
		}
		return nil
	}
	rot, nextPick := balance.As[balance.Rotator](d.picker)
	s := snapshot{Mode: d.m.mode, Strategy: counts.strategy, NextPick: nextPick,
		InFlight: d.m.mode == string(balance.Proxy), Degraded: counts.degraded,
		Source: fmt.Sprintf("Redis list %q", d.key), Unserved: counts.unserved, Rotation: []entry{}, Backends: []bar{}}
	if d.refusal != nil {
		s.StrategyNote = d.refusal()
	}
	inflight := d.m.InFlight()
	if shared := sharedInFlight(d.picker); shared != nil {
		inflight, s.SharedInFlight = shared, true
	}

	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var entries []string
	var err error
	if nextPick {
		var r balance.Rotation
		r, err = rot.Rotation(ctx)
		entries = r.Entries
		if r.Local {
			s.Source = fmt.Sprintf("this process's copy of Redis list %q (not shared with other dispatchers)", d.key)
		}
	} else {
		entries, err = d.list.Entries(ctx)
	}
	if err != nil {
		s.RotationError = err.Error()
		d.log.Debug("dashboard: cannot read the rotation", "err", err)
	}
	for i, raw := range entries {
		// An entry is shown as backend.Truncate cuts it: a hostile
		// megabyte would otherwise go to every open dashboard in every
		// event.
		e := entry{URL: backend.Truncate(raw), Next: s.NextPick && i == len(entries)-1}
		// Compare as metrics label them: the URL as validated.
		if u, err := backend.Parse(raw); err == nil {
			e.Valid, e.Up = true, health(u.String())
			e.Ejected, e.Ramp = counts.ejected[u.String()], counts.factor[u.String()]
			if _, ok := counts.served[u.String()]; !ok {
				counts.served[u.String()] = 0 // a bar, empty so far
			}
		}
		s.Rotation = append(s.Rotation, e)
	}
	for b, n := range counts.served {
		// Valid URLs, at most backend.MaxLen bytes, cut as the entries are.
		s.Backends = append(s.Backends, bar{URL: backend.Truncate(b), Requests: n, Up: health(b), InFlight: inflight[b],
			Ejected: counts.ejected[b], Ramp: counts.factor[b]})
	}
	slices.SortFunc(s.Backends, func(a, b bar) int { return cmp.Compare(a.URL, b.URL) })
	return s
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
