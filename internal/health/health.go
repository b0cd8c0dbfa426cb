// Package health runs the active health checks, shared through Redis.
//
// Every interval, the backends of the list are probed: one GET of
// ORIGIN/healthz per origin (scheme, host and port), however many entries
// share that origin. Falls failures in a row mark an origin down, Rises
// successes in a row bring it back. The verdict is written to Redis as a
// set of entries, the down set ("{servers}:down"), which the rotation step
// reads in the same script as its LMOVEs (stepScript): down entries are
// stepped over, and stay in the list, in their place.
//
// Several dispatchers share one view, and one of them probes at a time: a
// lease in Redis ("{servers}:lease", SET NX PX, renewed by its holder every
// round) names the dispatcher that probes. The others only read the down
// set, through their picks. If the holder stops (or stops reaching Redis),
// the lease expires after 2×interval + timeout and the next dispatcher to
// try takes it over; a dispatcher that shuts down releases it at once.
// This keeps the probes at one per origin per interval whatever the number
// of dispatchers, and the falls/rises counts in one place. The holder
// writes the whole down set each round, in a script that first checks it
// still holds the lease, so a holder that lost it (paused, say) cannot
// overwrite its successor's view.
//
// The probe address: the entries are addresses clients use, which the
// dispatcher may not reach (in compose, clients use localhost:5000 and the
// dispatcher reaches backend1:5000). The hash "{servers}:probe" maps an
// origin to the origin to probe instead (`seeder probe`).
package health

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"slices"
	"time"

	"github.com/spreadlb/spread/internal/pick"

	"github.com/spreadlb/spread/internal/backend"
	"github.com/spreadlb/spread/internal/store"
)

// Defaults, also the dispatcher's settings' defaults.
const (
	DefaultInterval = 2 * time.Second
	DefaultTimeout  = time.Second
	DefaultFalls    = 2
	DefaultRises    = 2
)

// Path is what a probe GETs on each origin.
const Path = "/healthz"

// maxProbes bounds the probes in flight at once.
const maxProbes = 32

// Config says how often and how patiently backends are probed. Zero
// fields take the defaults.
type Config struct {
	Interval time.Duration // between rounds of probes; default DefaultInterval
	Timeout  time.Duration // for one probe; default DefaultTimeout
	Falls    int           // failures in a row that mark an origin down; default DefaultFalls
	Rises    int           // successes in a row that bring a down origin back; default DefaultRises
	// Client sends the probes; nil means one that follows no redirect and
	// keeps no connection open between probes.
	Client *http.Client
	// Log receives changes of verdict and of lease holder; nil discards them.
	Log *slog.Logger
}

// Checker probes the backends of a Store's list and keeps its down set. Its
// methods are meant for one goroutine (Run).
type Checker struct {
	store  *store.Store
	cfg    Config
	id     string // this checker's value in the lease
	ttl    time.Duration
	log    *slog.Logger
	holder bool                     // holds the lease as of the last round
	state  map[string]*originHealth // by origin, while holder
}

// originHealth is the verdict on one origin and the results against it so
// far.
type originHealth struct {
	down   bool
	streak int    // results in a row that contradict down
	probe  string // URL probed
}

// New returns a checker of store's list. Call Run, or Round for one
// round.
func New(st *store.Store, cfg Config) *Checker {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Falls <= 0 {
		cfg.Falls = DefaultFalls
	}
	if cfg.Rises <= 0 {
		cfg.Rises = DefaultRises
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{
			Transport:     &http.Transport{DisableKeepAlives: true},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	host, _ := os.Hostname()
	b := make([]byte, 6)
	rand.Read(b)
	return &Checker{
		store: st, cfg: cfg, log: cfg.Log,
		id:  host + "/" + hex.EncodeToString(b),
		ttl: 2*cfg.Interval + cfg.Timeout,
	}
}

// ID is this checker's value in the lease: the lease holder's name, which
// the registrations' reconciler (package members) shows to the lease.
func (h *Checker) ID() string { return h.id }

// LeaseKey returns the Redis key of the lease: "{servers}:lease".
func (h *Checker) LeaseKey() string { return h.store.LeaseKey() }

// Holder reports whether this checker held the lease at its last round.
func (h *Checker) Holder() bool { return h.holder }

// Run does a round now and then every interval until ctx is done, then
// releases the lease if it holds it.
func (h *Checker) Run(ctx context.Context) {
	t := time.NewTicker(h.cfg.Interval)
	defer t.Stop()
	failing := false
	for {
		err := h.Round(ctx)
		switch {
		case ctx.Err() != nil:
		case err != nil && !failing:
			if errors.Is(err, pick.ErrNoPermission) {
				h.log.Error("health checks paused: the redis user may not run a command they need; the down set stays as it was", "err", err)
			} else {
				h.log.Warn("health checks paused: cannot reach redis; the down set stays as it was", "err", err)
			}
		case err == nil && failing:
			h.log.Info("health checks resumed")
		}
		failing = err != nil
		select {
		case <-ctx.Done():
			h.release()
			return
		case <-t.C:
		}
	}
}

// Round is one round of health checks: take or renew the lease; if this
// checker holds it, probe every origin of the list once, in parallel, and
// write the entries whose origin is down as the down set. Without the
// lease it does nothing. It returns an error only when Redis fails.
func (h *Checker) Round(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, h.store.StepTimeout())
	held, view, err := h.store.ClaimLease(rctx, h.id, h.ttl)
	cancel()
	if err != nil {
		return err
	}
	if !held {
		h.lost()
		return nil
	}
	if !h.holder {
		h.log.Info("health checks: this dispatcher probes the backends now", "lease", h.store.LeaseKey())
		h.holder, h.state = true, map[string]*originHealth{}
	}
	entries, down, probes := view.Entries, view.Down, view.Probes

	// The origins of the valid entries, each with its entries.
	byOrigin := map[string][]string{}
	for _, e := range entries {
		u, err := backend.Parse(e)
		if err != nil {
			continue
		}
		o := backend.Origin(u)
		if !slices.Contains(byOrigin[o], e) {
			byOrigin[o] = append(byOrigin[o], e)
		}
	}
	for o := range h.state {
		if _, ok := byOrigin[o]; !ok {
			delete(h.state, o)
		}
	}
	for o, es := range byOrigin {
		st := h.state[o]
		if st == nil {
			// New to this checker (or to the list): start from what the
			// down set says, so that a new lease holder goes on from its
			// predecessor's view.
			st = &originHealth{down: slices.ContainsFunc(es, func(e string) bool { return slices.Contains(down, e) })}
			h.state[o] = st
		}
		st.probe = h.probeURL(o, probes)
	}

	// Failures that dispatchers met while proxying (ReportFailure) count
	// first, one each per round, so that a failing probe right after
	// marks the backend down a round sooner; a passing probe still wins.
	if reported, err := h.takeReports(ctx); err == nil {
		for _, o := range slices.Sorted(maps.Keys(reported)) {
			if _, ok := h.state[o]; ok {
				h.record(o, byOrigin[o], errReported)
			}
		}
	}

	// Probe the origins in parallel, maxProbes at a time: a round of a
	// list of a few backends takes at most Timeout, and a hostile list of
	// thousands of origins cannot start thousands of connections at once.
	type result struct {
		origin string
		err    error
	}
	results := make(chan result, len(h.state))
	sem := make(chan struct{}, maxProbes)
	for o, st := range h.state {
		go func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			results <- result{o, h.probe(ctx, st.probe)}
		}()
	}
	for range len(h.state) {
		r := <-results
		h.record(r.origin, byOrigin[r.origin], r.err)
	}
	if ctx.Err() != nil {
		return nil // shutting down: the probes were cut short, not failed
	}

	var downEntries []string
	for _, o := range slices.Sorted(maps.Keys(h.state)) {
		if h.state[o].down {
			downEntries = append(downEntries, byOrigin[o]...)
		}
	}
	rctx, cancel = context.WithTimeout(ctx, h.store.StepTimeout())
	defer cancel()
	held, err = h.store.PublishDown(rctx, h.id, h.ttl, downEntries)
	if err != nil {
		return err
	}
	if !held {
		h.lost()
	}
	return nil
}

// errReported is what a reported failure counts as.
var errReported = errors.New("a dispatcher could not connect to it (reported)")

// takeReports reads and clears the failures reported since the last round.
func (h *Checker) takeReports(ctx context.Context) (map[string]string, error) {
	rctx, cancel := context.WithTimeout(ctx, h.store.StepTimeout())
	defer cancel()
	return h.store.TakeReports(rctx)
}

// lost notes that another checker holds the lease.
func (h *Checker) lost() {
	if h.holder {
		h.log.Info("health checks: another dispatcher probes the backends now", "lease", h.store.LeaseKey())
	}
	h.holder, h.state = false, nil
}

// record counts one probe's result against origin o and logs a change of
// verdict.
func (h *Checker) record(o string, entries []string, err error) {
	st := h.state[o]
	if (err != nil) != st.down {
		st.streak++
	} else {
		st.streak = 0
	}
	switch {
	case !st.down && st.streak >= h.cfg.Falls:
		st.down, st.streak = true, 0
		h.log.Warn("backend down: skipped by the rotation until it passes its health checks again",
			"origin", o, "probe", st.probe, "entries", entries, "failures", h.cfg.Falls, "err", err)
	case st.down && st.streak >= h.cfg.Rises:
		st.down, st.streak = false, 0
		h.log.Info("backend up: back in the rotation", "origin", o, "probe", st.probe, "entries", entries, "successes", h.cfg.Rises)
	}
}

// probeURL is where origin o is probed: its probe address if the probe hash
// maps it to a valid origin, else o itself; then Path.
func (h *Checker) probeURL(o string, probes map[string]string) string {
	if p, ok := probes[o]; ok {
		if po, err := backend.ParseOrigin(p); err == nil {
			return po + Path
		} else if st := h.state[o]; st == nil || st.probe != o+Path {
			h.log.Warn("ignoring an invalid probe address", "origin", o, "err", err)
		}
	}
	return o + Path
}

// probe GETs url and returns nil for a 2xx or 3xx answer within Timeout.
func (h *Checker) probe(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "spread-dispatcher-healthcheck")
	resp, err := h.cfg.Client.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 399 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// release gives the lease up, so that another dispatcher takes over the
// probes at its next round instead of when the lease expires.
func (h *Checker) release() {
	if !h.holder {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.store.StepTimeout())
	defer cancel()
	if err := h.store.ReleaseLease(ctx, h.id); err != nil {
		h.log.Warn("could not release the health check lease; it expires by itself", "lease", h.store.LeaseKey(), "ttl", h.ttl, "err", err)
	}
	h.holder, h.state = false, nil
}
