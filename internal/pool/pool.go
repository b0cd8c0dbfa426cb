// Package pool is this process's view of the backends: a snapshot of the
// rotation list and its down set, read from Redis when they change, and the
// one place that decides which entries a strategy may pick. It reads
// through a Source (package store), and never touches Redis itself.
//
// A Pool asks for the list's version (package store bumps it with every
// change of the entries or the down set) every DefaultRefresh, and reads
// the whole list only when the version changed, or every FullEvery in any
// case: an idle dispatcher costs Redis two small commands per check,
// whatever the list's length, and a change reaches every strategy that
// picks from the snapshot within one check.
//
// Its reads are also this process's view of whether Redis answers: while
// they fail (Unavailable), every strategy that picks from the snapshot
// serves without Redis, and the dispatcher says it is degraded.
//
// An entry is eligible when backend.Parse accepts it, the shared health
// checks have not put it in the down set, and no dispatcher has ejected it
// for failing requests (outlier ejection), unless every entry left is
// ejected. Every strategy that picks from the snapshot (random, hash, p2c,
// the local round robin, the fallback while Redis is down) picks among
// Snapshot.Eligible, and nothing else. The shared round robin applies the
// same rules inside its Redis script, where the list moves (store's
// stepScript).
//
// Slow start (SetSlowStart) is decided here too: each eligible entry
// carries a Factor, the share of its weight it gets now, which ramps to 1
// (from a floor, the minimum) over the window from the moment the entry last became
// eligible, in Redis's clock (store's "{servers}:since"). Each strategy
// weighs its entries by their Factor in its own way.
package pool

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spreadlb/spread/internal/pick"

	"github.com/spreadlb/spread/internal/backend"
)

// DefaultRefresh is how often a Pool asks whether the list changed.
const DefaultRefresh = 50 * time.Millisecond

// FullEvery is how often a Pool reads the whole list even though its
// version says it did not change: a safety net for changes made by hand
// (redis-cli LSET), which do not bump the version.
const FullEvery = 30 * time.Second

// ErrNoSnapshot is returned before the list has been read once. It wraps
// pick.ErrUnavailable: until Redis has answered, nothing is known.
var ErrNoSnapshot = errors.Join(pick.ErrUnavailable, errors.New("the list has not been read yet"))

// Entry is one eligible entry of the list.
type Entry struct {
	Raw string   // as the list holds it
	URL *url.URL // as backend.Parse gives it; shared, never modify
	// Factor is the share of its weight the entry gets now, in (0, 1]:
	// below 1 while slow start ramps it, else 1.
	Factor float64
}

// Snapshot is the list as last read. It never changes once published:
// Refresh publishes a new one.
type Snapshot struct {
	Entries []string // the list as LRANGE showed it
	Down    []string // the down set as SMEMBERS showed it, sorted
	// Ejected holds the entries ejected now, each with the end of its
	// ejection (Redis's clock). Pending holds those of them that this
	// dispatcher ejected (Eject) and Redis did not show yet.
	Ejected, Pending map[string]time.Time
	// Since holds when each entry last became eligible, for slow start;
	// empty when no dispatcher keeps the table.
	Since map[string]time.Time
	// Now is Redis's clock at the read.
	Now time.Time
	// Eligible holds the valid entries not marked down nor ejected, in
	// the shared rotation's pick order (the last entry of the list first),
	// repeated entries (weights) included.
	Eligible []Entry
	// Ramping is true when an eligible entry has a Factor below 1.
	Ramping bool
	// Err says why Eligible is empty: pick.ErrNoBackends,
	// pick.ErrWrongType, pick.ErrAllDown or pick.ErrNoValidBackend.
	Err error

	health     sync.Once
	healthView map[string]bool // Health's answer, made on first use
}

// IsEjected reports whether entry is ejected in this snapshot.
func (s *Snapshot) IsEjected(entry string) bool {
	_, ok := s.Ejected[entry]
	return ok
}

// IsDown reports whether the down set holds entry.
func (s *Snapshot) IsDown(entry string) bool {
	_, down := slices.BinarySearch(s.Down, entry)
	return down
}

// Source is where a Pool reads the list: a *store.Store.
type Source interface {
	// Read returns the list as LRANGE shows it and the entries marked
	// down, as one consistent view.
	Read(ctx context.Context) (entries, down []string, err error)
	// Version returns a token that changes whenever the list's entries or
	// its down set change, cheaply.
	Version(ctx context.Context) (string, error)
	// Key names the list, for the log.
	Key() string
	// StepTimeout bounds one read.
	StepTimeout() time.Duration
}

// ExtraSource is a Source that also keeps what ejections and slow start
// need (*store.Store does).
type ExtraSource interface {
	// ReadExtras returns Redis's clock, the entries ejected now with the
	// end of each ejection, and when each entry last became eligible.
	ReadExtras(ctx context.Context) (now time.Time, ejected, since map[string]time.Time, err error)
}

// Pool keeps the snapshot of one Source's list.
type Pool struct {
	src     Source
	refresh time.Duration
	log     *slog.Logger
	snap    atomic.Pointer[Snapshot]

	mu       sync.Mutex // serializes reads
	version  string     // the version of the snapshot's list, "" before the first read
	lastFull time.Time  // when the whole list was last read

	down     atomic.Pointer[outage] // set while reads fail for want of Redis
	onChange atomic.Pointer[func(unavailable bool)]

	// Under mu too:
	local     map[string]time.Time // ejections this dispatcher made, until Redis shows them (Eject)
	slowStart time.Duration        // SLOW_START; 0: off
	minFactor float64              // SLOW_START_MIN, as a fraction
}

// outage is why, and since when, the pool's reads fail.
type outage struct {
	err   error
	since time.Time
}

// New returns a Pool over st's list, read every refresh (a non-positive
// refresh means DefaultRefresh). It holds no snapshot until Refresh or Run
// has read one. A nil log discards its messages.
//
// It asks st for the list's version every refresh, and reads the list when
// that changed.
func New(st Source, refresh time.Duration, log *slog.Logger) *Pool {
	if refresh <= 0 {
		refresh = DefaultRefresh
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Pool{src: st, refresh: refresh, log: log}
}

// Current returns the snapshot as last read if it has an eligible entry,
// else why there is none (ErrNoSnapshot before the first read). A strategy
// that caches what it derives from the entries keys the cache on the
// snapshot it returns: the entries and the key come from one read.
func (p *Pool) Current() (*Snapshot, error) {
	s := p.snap.Load()
	if s == nil {
		return nil, ErrNoSnapshot
	}
	if len(s.Eligible) == 0 {
		return nil, s.Err
	}
	return s, nil
}

// Eligible returns the entries a strategy may pick, in pick order, or why
// there are none (ErrNoSnapshot before the first read).
func (p *Pool) Eligible() ([]Entry, error) {
	s, err := p.Current()
	if err != nil {
		return nil, err
	}
	return s.Eligible, nil
}

// Len returns the number of entries in the snapshot, and whether there is
// one.
func (p *Pool) Len() (int, bool) {
	if s := p.snap.Load(); s != nil {
		return len(s.Entries), true
	}
	return 0, false
}

// Health returns the valid entries of the list as last read, each once and
// written as backend.Parse gives it, and whether the shared health checks
// had it up then (not in the down set). ok is false before the first read.
// The map is made once per snapshot and shared: never modify it.
func (p *Pool) Health() (up map[string]bool, ok bool) {
	s := p.snap.Load()
	if s == nil {
		return nil, false
	}
	return s.Health(), true
}

// Health is Pool.Health for this snapshot.
func (s *Snapshot) Health() map[string]bool {
	s.health.Do(func() {
		s.healthView = map[string]bool{}
		for _, e := range s.Entries {
			if u, err := backend.Parse(e); err == nil {
				s.healthView[u.String()] = !s.IsDown(e)
			}
		}
	})
	return s.healthView
}

// Snapshot returns the snapshot as last read, whatever it holds, or nil
// before the first read.
func (p *Pool) Snapshot() *Snapshot { return p.snap.Load() }

// Unavailable returns why the pool's reads fail for want of Redis (it does
// not answer, or not within its StepTimeout), and since when; nil while
// they succeed. Meanwhile the snapshot stays as last read.
func (p *Pool) Unavailable() (error, time.Time) {
	if o := p.down.Load(); o != nil {
		return o.err, o.since
	}
	return nil, time.Time{}
}

// OnUnavailable makes f hear each change of Unavailable: true when the
// reads start failing for want of Redis, false when they succeed again.
func (p *Pool) OnUnavailable(f func(unavailable bool)) { p.onChange.Store(&f) }

// Report tells the pool how a call to Redis made elsewhere went (the
// dispatcher's /readyz, say), for Unavailable: a failure for want of Redis
// counts as the pool's own reads failing, until the next call that
// succeeds.
func (p *Pool) Report(err error) { p.note(err) }

// note records how a read of Redis went, for Unavailable.
func (p *Pool) note(err error) {
	switch {
	case pick.Unavailable(err):
		if p.down.Load() == nil && p.down.CompareAndSwap(nil, &outage{err, time.Now()}) {
			if f := p.onChange.Load(); f != nil {
				(*f)(true)
			}
		}
	case err == nil || !errors.Is(err, context.Canceled):
		if p.down.Swap(nil) != nil {
			if f := p.onChange.Load(); f != nil {
				(*f)(false)
			}
		}
	}
}

// SetSlowStart turns slow start on (window > 0, SLOW_START) or off (0):
// an entry that became eligible less than window ago gets a share of its
// weight that ramps linearly to all of it, and never less than min
// (SLOW_START_MIN, a fraction), as Envoy's slow start does (with
// aggression 1). It takes effect at the next Refresh.
func (p *Pool) SetSlowStart(window time.Duration, min float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.slowStart, p.minFactor = window, min
}

// extras are what a Refresh reads beside the list and the down set.
type extras struct {
	now            time.Time
	ejected, since map[string]time.Time
}

// publish builds the snapshot of what was read, merged with this
// dispatcher's own ejections, and publishes it unless it equals the
// current one. The caller holds mu.
func (p *Pool) publish(entries, down []string, err error, x extras) {
	old := p.snap.Load()
	ejected := maps.Clone(x.ejected)
	if ejected == nil {
		ejected = map[string]time.Time{}
	}
	pending := map[string]time.Time{}
	for e, until := range p.local {
		if _, seen := x.ejected[e]; seen || !until.After(time.Now()) {
			delete(p.local, e) // Redis has it, or it is over
			continue
		}
		ejected[e], pending[e] = until, until
	}
	since := x.since
	if p.slowStart <= 0 {
		since = nil // nothing ramps: snapshots need not change with the clock
	}
	s := &Snapshot{Entries: entries, Down: down, Ejected: ejected, Pending: pending, Since: since, Now: x.now, Err: err}
	if err == nil && len(entries) == 0 {
		s.Err = pick.ErrNoBackends
	}
	valid := 0
	var outs []Entry // eligible but for an ejection
	for i := len(entries) - 1; i >= 0; i-- {
		u, err := backend.Parse(entries[i])
		if err != nil {
			continue
		}
		valid++
		if s.IsDown(entries[i]) {
			continue
		}
		e := Entry{Raw: entries[i], URL: u, Factor: p.factor(entries[i], since, x.now)}
		s.Ramping = s.Ramping || e.Factor < 1
		if s.IsEjected(entries[i]) {
			outs = append(outs, e)
			continue
		}
		s.Eligible = append(s.Eligible, e)
	}
	if len(s.Eligible) == 0 && len(outs) > 0 {
		// Ejections take a backend out of a pool that has others, never
		// the last ones: rather all of them than none.
		s.Eligible = outs
	}
	if !slices.ContainsFunc(s.Eligible, func(e Entry) bool { return e.Factor < 1 }) {
		s.Ramping = false
	}
	switch {
	case len(s.Eligible) > 0 || s.Err != nil:
	case valid == 0:
		s.Err = pick.ErrNoValidBackend
	default:
		s.Err = pick.ErrAllDown
	}
	if err == nil && old != nil && old.same(s) {
		return
	}
	p.snap.Store(s)
	if old == nil || !slices.Equal(old.Down, down) || len(old.Entries) != len(entries) {
		// The order changes with every shared step; say only what matters.
		p.log.Info("rotation snapshot read", "key", p.src.Key(), "entries", len(entries), "valid", valid, "down", len(down))
	}
	var was map[string]time.Time
	if old != nil {
		was = old.Ejected
	}
	for _, e := range slices.Sorted(maps.Keys(ejected)) {
		if _, ok := was[e]; !ok && slices.Contains(entries, e) {
			p.log.Warn("backend ejected: skipped, as if down, until its ejection ends", "entry", backend.Truncate(e),
				"for", ejected[e].Sub(x.now).Round(time.Second))
		}
	}
	for _, e := range slices.Sorted(maps.Keys(was)) {
		if _, ok := ejected[e]; !ok && slices.Contains(entries, e) {
			p.log.Info("backend back from ejection", "entry", backend.Truncate(e))
		}
	}
}

// same reports whether s picks as t does: the same entries, down set,
// ejections, and factors.
func (s *Snapshot) same(t *Snapshot) bool {
	return slices.Equal(s.Entries, t.Entries) && slices.Equal(s.Down, t.Down) && maps.Equal(s.Ejected, t.Ejected) &&
		maps.Equal(s.Pending, t.Pending) &&
		slices.EqualFunc(s.Eligible, t.Eligible, func(a, b Entry) bool { return a.Raw == b.Raw && a.Factor == b.Factor })
}

// factor is the share of its weight entry gets at now under slow start:
// 1 when slow start is off or no table is kept, min while the entry's time
// is not in the table yet (it has just joined or come back), and from its
// time on, max(min, elapsed/window) up to 1: Envoy's slow start with its
// default aggression, 1.
func (p *Pool) factor(entry string, since map[string]time.Time, now time.Time) float64 {
	if p.slowStart <= 0 || len(since) == 0 {
		return 1
	}
	t, ok := since[entry]
	if !ok {
		return p.minFactor
	}
	return min(1, max(p.minFactor, float64(now.Sub(t))/float64(p.slowStart)))
}

// Eject takes entry out of this dispatcher's snapshot until until, at once,
// ahead of the next read (which finds it in Redis, where the caller ejects
// it for every dispatcher).
func (p *Pool) Eject(entry string, until time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.snap.Load()
	if s == nil {
		return
	}
	if p.local == nil {
		p.local = map[string]time.Time{}
	}
	p.local[entry] = until
	p.publish(s.Entries, s.Down, nil, extras{now: s.Now, ejected: s.fromRedis(), since: s.Since})
}

// fromRedis is Ejected without Pending: the ejections as Redis showed them.
func (s *Snapshot) fromRedis() map[string]time.Time {
	out := maps.Clone(s.Ejected)
	for e := range s.Pending {
		delete(out, e)
	}
	return out
}

// Factors returns the slow start factor of each eligible entry below 1,
// written as backend.Parse gives it (the smallest, for an entry listed
// more than once): the backends ramping now.
func (p *Pool) Factors() map[string]float64 {
	out := map[string]float64{}
	s := p.snap.Load()
	if s == nil || !s.Ramping {
		return out
	}
	for _, e := range s.Eligible {
		if f, ok := out[e.URL.String()]; e.Factor < 1 && (!ok || e.Factor < f) {
			out[e.URL.String()] = e.Factor
		}
	}
	return out
}

// Uneject undoes Eject: Redis refused the ejection (EJECT_MAX_PERCENT).
// An ejection Redis holds stays until the next read says otherwise.
func (p *Pool) Uneject(entry string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.snap.Load()
	if _, ok := p.local[entry]; !ok || s == nil {
		return
	}
	delete(p.local, entry)
	p.publish(s.Entries, s.Down, nil, extras{now: s.Now, ejected: s.fromRedis(), since: s.Since})
}

// Ejected returns the valid entries ejected now, each once and written as
// backend.Parse gives it, with the end of its ejection.
func (p *Pool) Ejected() map[string]time.Time {
	s := p.snap.Load()
	out := map[string]time.Time{}
	if s == nil {
		return out
	}
	for e, until := range s.Ejected {
		if u, err := backend.Parse(e); err == nil && slices.Contains(s.Entries, e) {
			out[u.String()] = until
		}
	}
	return out
}

// Refresh reads the list and its down set once. While Redis does not
// answer, the snapshot it has is kept, so picks go on over the last list it
// read. A list that is empty, missing or not a list replaces the snapshot:
// that is what Redis says the rotation is now.
func (p *Pool) Refresh(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.read(ctx, "")
}

// Check asks whether the list changed since it was last read, and reads it
// if so, or if it was last read FullEvery ago.
func (p *Pool) Check(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	tctx, cancel := context.WithTimeout(ctx, p.src.StepTimeout())
	v, err := p.src.Version(tctx)
	cancel()
	p.note(err)
	if err != nil {
		return err
	}
	if v == p.version && p.snap.Load() != nil && time.Since(p.lastFull) < FullEvery && !p.due() {
		return nil
	}
	return p.read(ctx, v)
}

// due reports a snapshot that time alone makes stale: an ejection in it
// has ended, or slow start ramps an entry and it was read a second ago or
// more. The caller holds mu.
func (p *Pool) due() bool {
	s := p.snap.Load()
	if s.Ramping && time.Since(p.lastFull) >= rampEvery {
		return true
	}
	now := s.Now.Add(time.Since(p.lastFull))
	for _, until := range s.Ejected {
		if !until.After(now) {
			return true
		}
	}
	return false
}

// rampEvery is how often a snapshot in which an entry ramps is read again,
// for the Factors to follow the clock.
const rampEvery = time.Second

// read reads the list and its down set, the version first (v, if the
// caller has it; else it asks): a change between the two makes the next
// check read again, never miss it. The caller holds mu.
func (p *Pool) read(ctx context.Context, v string) error {
	ctx, cancel := context.WithTimeout(ctx, p.src.StepTimeout())
	defer cancel()
	if v == "" {
		var err error
		v, err = p.src.Version(ctx)
		p.note(err)
		if err != nil {
			return err
		}
	}
	entries, down, err := p.src.Read(ctx)
	p.note(err)
	if err != nil && !errors.Is(err, pick.ErrWrongType) {
		return err
	}
	x := extras{now: time.Now()}
	if es, ok := p.src.(ExtraSource); ok {
		now, ejected, since, xerr := es.ReadExtras(ctx)
		p.note(xerr)
		if xerr != nil && !errors.Is(xerr, pick.ErrWrongType) {
			return xerr
		}
		x = extras{now: now, ejected: ejected, since: since}
	}
	p.version, p.lastFull = v, time.Now()
	slices.Sort(down)
	p.publish(entries, down, err, x)
	return nil
}

// Run checks the list every refresh interval (Check) until ctx is done,
// starting one interval from now: call Refresh first for the first read.
func (p *Pool) Run(ctx context.Context) {
	t := time.NewTicker(p.refresh)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := p.Check(ctx)
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			p.log.Warn("cannot read the rotation list; keeping the last snapshot", "err", err)
		case err == nil && failing:
			p.log.Info("rotation list readable again")
		}
		failing = err != nil
	}
}

// View is a value derived from the pool's snapshot, such as a strategy's
// table of candidates: made once per snapshot, on first use, and kept
// until the pool reads a different one. The value and the snapshot it came
// from are one atomic pair, so a view never pairs one snapshot's key with
// another's entries.
type View[T any] struct {
	pool   *Pool
	derive func(*Snapshot) T
	cur    atomic.Pointer[derived[T]]
}

type derived[T any] struct {
	snap *Snapshot
	v    T
}

// NewView returns a view of p's snapshots through derive, which gets a
// snapshot with at least one eligible entry.
func NewView[T any](p *Pool, derive func(*Snapshot) T) *View[T] {
	return &View[T]{pool: p, derive: derive}
}

// Get returns the value derived from the pool's current snapshot, or why
// there is none (Pool.Current's error). Concurrent calls on a new snapshot
// agree on one value.
func (v *View[T]) Get() (T, error) {
	s, err := v.pool.Current()
	if err != nil {
		var zero T
		return zero, err
	}
	for {
		d := v.cur.Load()
		if d != nil && d.snap == s {
			return d.v, nil
		}
		next := &derived[T]{snap: s, v: v.derive(s)}
		if v.cur.CompareAndSwap(d, next) {
			return next.v, nil
		}
	}
}
