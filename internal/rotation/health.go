package rotation

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
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Active health checks, shared through Redis.
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

// Health defaults, also the dispatcher's settings' defaults.
const (
	DefaultHealthInterval = 2 * time.Second
	DefaultHealthTimeout  = time.Second
	DefaultHealthFalls    = 2
	DefaultHealthRises    = 2
)

// HealthPath is what a probe GETs on each origin.
const HealthPath = "/healthz"

// maxProbes bounds the probes in flight at once.
const maxProbes = 32

// HealthConfig says how often and how patiently backends are probed. Zero
// fields take the defaults.
type HealthConfig struct {
	Interval time.Duration // between rounds of probes; default DefaultHealthInterval
	Timeout  time.Duration // for one probe; default DefaultHealthTimeout
	Falls    int           // failures in a row that mark an origin down; default DefaultHealthFalls
	Rises    int           // successes in a row that bring a down origin back; default DefaultHealthRises
	// Client sends the probes; nil means one that follows no redirect and
	// keeps no connection open between probes.
	Client *http.Client
}

// Health probes the backends of a Store's list and keeps its down set. Its
// methods are meant for one goroutine (Run).
type Health struct {
	store  *Store
	cfg    HealthConfig
	id     string // this checker's value in the lease
	lease  string // key of the lease
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

// NewHealth returns a checker of store's list. Call Run, or Round for one
// round.
func NewHealth(store *Store, cfg HealthConfig) *Health {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultHealthInterval
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultHealthTimeout
	}
	if cfg.Falls <= 0 {
		cfg.Falls = DefaultHealthFalls
	}
	if cfg.Rises <= 0 {
		cfg.Rises = DefaultHealthRises
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
	return &Health{
		store: store, cfg: cfg, log: store.log,
		id:    host + "/" + hex.EncodeToString(b),
		lease: sibling(store.key, "lease"),
		ttl:   2*cfg.Interval + cfg.Timeout,
	}
}

// LeaseKey returns the Redis key of the lease: "{servers}:lease".
func (h *Health) LeaseKey() string { return h.lease }

// Holder reports whether this checker held the lease at its last round.
func (h *Health) Holder() bool { return h.holder }

// Run does a round now and then every interval until ctx is done, then
// releases the lease if it holds it.
func (h *Health) Run(ctx context.Context) {
	t := time.NewTicker(h.cfg.Interval)
	defer t.Stop()
	failing := false
	for {
		err := h.Round(ctx)
		switch {
		case ctx.Err() != nil:
		case err != nil && !failing:
			h.log.Warn("health checks paused: cannot reach redis; the down set stays as it was", "err", err)
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

// claimScript takes or renews the lease KEYS[1] for ARGV[1] for ARGV[2]
// milliseconds, as SET NX PX would for a newcomer, and if this checker
// holds it returns {1, list KEYS[2], down set KEYS[3], probe hash KEYS[4]};
// else {0}. Keys of the wrong type read as empty.
// A lease key of the wrong type (put there by hand) counts as free: SET
// replaces it.
var claimScript = redis.NewScript(`
local ok, holder = pcall(redis.call, "GET", KEYS[1])
if ok and holder and holder ~= ARGV[1] then return {0} end
redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
local function read(cmd, key, ...)
  local ok, v = pcall(redis.call, cmd, key, ...)
  if ok then return v end
  return {}
end
return {1, read("LRANGE", KEYS[2], 0, -1), read("SMEMBERS", KEYS[3]), read("HGETALL", KEYS[4])}
`)

// publishScript replaces the down set KEYS[2] with ARGV[3...] and renews
// the lease KEYS[1] for ARGV[2] ms, if ARGV[1] still holds it; it returns 1
// then, else 0 and writes nothing.
var publishScript = redis.NewScript(`
local ok, holder = pcall(redis.call, "GET", KEYS[1])
if not ok or holder ~= ARGV[1] then return 0 end
redis.call("PEXPIRE", KEYS[1], ARGV[2])
redis.call("DEL", KEYS[2])
for i = 3, #ARGV, 1000 do
  redis.call("SADD", KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
return 1
`)

// releaseScript deletes the lease KEYS[1] if ARGV[1] holds it.
var releaseScript = redis.NewScript(`
local ok, holder = pcall(redis.call, "GET", KEYS[1])
if ok and holder == ARGV[1] then return redis.call("DEL", KEYS[1]) end
return 0
`)

// Round is one round of health checks: take or renew the lease; if this
// checker holds it, probe every origin of the list once, in parallel, and
// write the entries whose origin is down as the down set. Without the
// lease it does nothing. It returns an error only when Redis fails.
func (h *Health) Round(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, h.store.stepTimeout)
	res, err := claimScript.Run(rctx, h.store.rdb,
		[]string{h.lease, h.store.key, h.store.down, h.store.probes}, h.id, h.ttl.Milliseconds()).Slice()
	cancel()
	if err != nil {
		return h.store.classify(err)
	}
	if len(res) != 4 {
		h.lost()
		return nil
	}
	if !h.holder {
		h.log.Info("health checks: this dispatcher probes the backends now", "lease", h.lease)
		h.holder, h.state = true, map[string]*originHealth{}
	}
	entries, down := stringsOf(res[1]), stringsOf(res[2])
	probes := map[string]string{}
	for kv := stringsOf(res[3]); len(kv) >= 2; kv = kv[2:] {
		probes[kv[0]] = kv[1]
	}

	// The origins of the valid entries, each with its entries.
	byOrigin := map[string][]string{}
	for _, e := range entries {
		u, err := h.store.parse(e)
		if err != nil {
			continue
		}
		o := origin(u)
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

	var downEntries []any
	for _, o := range slices.Sorted(maps.Keys(h.state)) {
		if h.state[o].down {
			for _, e := range byOrigin[o] {
				downEntries = append(downEntries, e)
			}
		}
	}
	rctx, cancel = context.WithTimeout(ctx, h.store.stepTimeout)
	defer cancel()
	args := append([]any{h.id, h.ttl.Milliseconds()}, downEntries...)
	held, err := publishScript.Run(rctx, h.store.rdb, []string{h.lease, h.store.down}, args...).Int()
	if err != nil {
		return h.store.classify(err)
	}
	if held == 0 {
		h.lost()
	}
	return nil
}

// errReported is what a reported failure counts as.
var errReported = errors.New("a dispatcher could not connect to it (reported)")

// takeReports reads and clears the failures reported since the last round,
// in one MULTI: origin -> how many.
func (h *Health) takeReports(ctx context.Context) (map[string]string, error) {
	rctx, cancel := context.WithTimeout(ctx, h.store.stepTimeout)
	defer cancel()
	var all *redis.MapStringStringCmd
	_, err := h.store.rdb.TxPipelined(rctx, func(p redis.Pipeliner) error {
		all = p.HGetAll(rctx, h.store.reports)
		p.Del(rctx, h.store.reports)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return all.Val(), nil
}

// ReportFailure tells the health checks that connecting to entry's origin
// failed (a proxying dispatcher calls it): the lease holder counts it as one
// failed check in its next round. An entry that does not parse is ignored.
func (s *Store) ReportFailure(ctx context.Context, entry string) error {
	u, err := s.parse(entry)
	if err != nil {
		return nil
	}
	return s.classify(s.rdb.HIncrBy(ctx, s.reports, origin(u), 1).Err())
}

// lost notes that another checker holds the lease.
func (h *Health) lost() {
	if h.holder {
		h.log.Info("health checks: another dispatcher probes the backends now", "lease", h.lease)
	}
	h.holder, h.state = false, nil
}

// record counts one probe's result against origin o and logs a change of
// verdict.
func (h *Health) record(o string, entries []string, err error) {
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
// maps it to a valid origin, else o itself; then HealthPath.
func (h *Health) probeURL(o string, probes map[string]string) string {
	if p, ok := probes[o]; ok {
		if po, err := ParseOrigin(p); err == nil {
			return po + HealthPath
		} else if st := h.state[o]; st == nil || st.probe != o+HealthPath {
			h.log.Warn("ignoring an invalid probe address", "origin", o, "err", err)
		}
	}
	return o + HealthPath
}

// probe GETs url and returns nil for a 2xx or 3xx answer within Timeout.
func (h *Health) probe(ctx context.Context, url string) error {
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
func (h *Health) release() {
	if !h.holder {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.store.stepTimeout)
	defer cancel()
	if err := releaseScript.Run(ctx, h.store.rdb, []string{h.lease}, h.id).Err(); err != nil {
		h.log.Warn("could not release the health check lease; it expires by itself", "lease", h.lease, "ttl", h.ttl, "err", err)
	}
	h.holder, h.state = false, nil
}

// Down returns the entries marked down, sorted.
func (s *Store) Down(ctx context.Context) ([]string, error) {
	down, err := s.rdb.SMembers(ctx, s.down).Result()
	if err != nil {
		return nil, s.classify(err)
	}
	slices.Sort(down)
	return down, nil
}

// origin is u's scheme, host and port, as probes and the probe hash name
// them: "http://localhost:5000".
func origin(u *url.URL) string {
	return u.Scheme + "://" + strings.ToLower(u.Host)
}

// ParseOrigin checks that s is a backend origin (an absolute http or https
// URL with a host, an optional port and no path other than "/", as
// ParseBackend checks it) and returns it as probes name it:
// "http://localhost:5000".
func ParseOrigin(s string) (string, error) {
	u, err := ParseBackend(s)
	if err != nil {
		return "", err
	}
	if u.Path != "" && u.Path != "/" {
		return "", fmt.Errorf("%w %q: an origin has no path", ErrInvalidURL, s)
	}
	return origin(u), nil
}

// Probes returns the probe hash: origin -> the origin probed instead.
func (s *Store) Probes(ctx context.Context) (map[string]string, error) {
	m, err := s.rdb.HGetAll(ctx, s.probes).Result()
	return m, s.classify(err)
}

// SetProbe makes the health checks probe probe instead of origin (both
// origins, validated).
func (s *Store) SetProbe(ctx context.Context, origin, probe string) error {
	o, p, err := parseProbe(origin, probe)
	if err != nil {
		return err
	}
	return s.classify(s.rdb.HSet(ctx, s.probes, o, p).Err())
}

// RemoveProbe removes origin's probe address: it is probed at its own
// address again. An origin without one gives ErrNotInList.
func (s *Store) RemoveProbe(ctx context.Context, origin string) error {
	o, err := ParseOrigin(origin)
	if err != nil {
		o = origin // let a hand-made, invalid field be removed too
	}
	n, err := s.rdb.HDel(ctx, s.probes, o).Result()
	if err != nil {
		return s.classify(err)
	}
	if n == 0 {
		return fmt.Errorf("%q: %w %q", origin, ErrNotInList, s.probes)
	}
	return nil
}

func parseProbe(origin, probe string) (string, string, error) {
	o, err := ParseOrigin(origin)
	if err != nil {
		return "", "", err
	}
	p, err := ParseOrigin(probe)
	if err != nil {
		return "", "", err
	}
	return o, p, nil
}

// ReplaceWithProbes is Replace, and also makes the probe hash exactly
// probes (origin -> probe origin), in the same MULTI/EXEC. Every URL and
// origin is validated first; if any fails, nothing is written. A nil
// probes leaves the probe hash as it is (that is Replace).
func (s *Store) ReplaceWithProbes(ctx context.Context, urls []string, probes map[string]string) error {
	if len(urls) == 0 {
		return ErrNoURLs
	}
	if err := validateAll(urls); err != nil {
		return err
	}
	var hash []any
	for _, o := range slices.Sorted(maps.Keys(probes)) {
		o, p, err := parseProbe(o, probes[o])
		if err != nil {
			return err
		}
		hash = append(hash, o, p)
	}
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, s.key, s.tally)
		p.RPush(ctx, s.key, toArgs(urls)...)
		if probes != nil {
			p.Del(ctx, s.probes)
			if len(hash) > 0 {
				p.HSet(ctx, s.probes, hash...)
			}
		}
		return nil
	})
	return s.classify(err)
}
