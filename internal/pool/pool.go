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
// An entry is eligible when backend.Parse accepts it and the shared health
// checks have not put it in the down set. Every strategy that picks from
// the snapshot (random, hash, p2c, the local round robin, the fallback while
// Redis is down) picks among Snapshot.Eligible, and nothing else. The shared
// round robin applies the same two rules inside its Redis script, where the
// list moves (store's stepScript).
package pool

import (
	"context"
	"errors"
	"log/slog"
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
}

// Snapshot is the list as last read. It never changes once published:
// Refresh publishes a new one.
type Snapshot struct {
	Entries []string // the list as LRANGE showed it
	Down    []string // the down set as SMEMBERS showed it, sorted
	// Eligible holds the valid entries not marked down, in the shared
	// rotation's pick order (the last entry of the list first), repeated
	// entries (weights) included.
	Eligible []Entry
	// Err says why Eligible is empty: pick.ErrNoBackends,
	// pick.ErrWrongType, pick.ErrAllDown or pick.ErrNoValidBackend.
	Err error

	health     sync.Once
	healthView map[string]bool // Health's answer, made on first use
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
	if v == p.version && p.snap.Load() != nil && time.Since(p.lastFull) < FullEvery {
		return nil
	}
	return p.read(ctx, v)
}

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
	p.version, p.lastFull = v, time.Now()
	slices.Sort(down)
	old := p.snap.Load()
	if err == nil && old != nil && old.Err == nil && slices.Equal(old.Entries, entries) && slices.Equal(old.Down, down) {
		return nil
	}
	s := &Snapshot{Entries: entries, Down: down, Err: err}
	if err == nil && len(entries) == 0 {
		s.Err = pick.ErrNoBackends
	}
	valid := 0
	for i := len(entries) - 1; i >= 0; i-- {
		u, err := backend.Parse(entries[i])
		if err != nil {
			continue
		}
		valid++
		if s.IsDown(entries[i]) {
			continue
		}
		s.Eligible = append(s.Eligible, Entry{Raw: entries[i], URL: u})
	}
	switch {
	case len(s.Eligible) > 0 || s.Err != nil:
	case valid == 0:
		s.Err = pick.ErrNoValidBackend
	default:
		s.Err = pick.ErrAllDown
	}
	p.snap.Store(s)
	if old == nil || !slices.Equal(old.Down, down) || len(old.Entries) != len(entries) {
		// The order changes with every shared step; say only what matters.
		p.log.Info("rotation snapshot read", "key", p.src.Key(), "entries", len(entries), "valid", valid, "down", len(down))
	}
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
