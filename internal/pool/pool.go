// Package pool is this process's view of the backends: a snapshot of the
// rotation list and its down set, read from Redis every second, and the one
// place that decides which entries a strategy may pick. It reads through a
// Source (package store), and never touches Redis itself.
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
	"sync/atomic"
	"time"

	"github.com/spreadlb/spread/internal/pick"

	"github.com/spreadlb/spread/internal/backend"
)

// DefaultRefresh is how often a Pool reads the list again.
const DefaultRefresh = time.Second

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
}

// New returns a Pool over st's list, read every refresh (a non-positive
// refresh means DefaultRefresh). It holds no snapshot until Refresh or Run
// has read one. A nil log discards its messages.
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
func (p *Pool) Health() (up map[string]bool, ok bool) {
	s := p.snap.Load()
	if s == nil {
		return nil, false
	}
	up = map[string]bool{}
	for _, e := range s.Entries {
		if u, err := backend.Parse(e); err == nil {
			up[u.String()] = !s.IsDown(e)
		}
	}
	return up, true
}

// Refresh reads the list and its down set once. While Redis does not
// answer, the snapshot it has is kept, so picks go on over the last list it
// read. A list that is empty, missing or not a list replaces the snapshot:
// that is what Redis says the rotation is now.
func (p *Pool) Refresh(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, p.src.StepTimeout())
	defer cancel()
	entries, down, err := p.src.Read(ctx)
	if err != nil && !errors.Is(err, pick.ErrWrongType) {
		return err
	}
	slices.Sort(down)
	old := p.snap.Load()
	if err == nil && old != nil && slices.Equal(old.Entries, entries) && slices.Equal(old.Down, down) {
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

// Run refreshes the snapshot every refresh interval until ctx is done,
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
		err := p.Refresh(ctx)
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
