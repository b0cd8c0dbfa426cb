package rotation

import (
	"context"
	"errors"
	"log/slog"
	"net/url"
	"slices"
	"sync/atomic"
	"time"
)

// DefaultRefresh is how often a Local reads the list again.
const DefaultRefresh = time.Second

// Local is a round robin in process over a snapshot of the list: no Redis
// round trip per request, but each process counts for itself, so several
// dispatchers no longer share one rotation. It is the baseline that shows
// what the shared rotation costs (ROTATION=local).
//
// It picks in the order the shared rotation does: for a list seeded A B C it
// gives C, B, A, C, ... The list in Redis is read, never rotated.
type Local struct {
	store   *Store
	refresh time.Duration
	log     *slog.Logger

	snap atomic.Pointer[snapshot]
	n    atomic.Uint64 // picks so far
}

// snapshot is the list as last read: its valid entries that are not marked
// down, or why there are none.
type snapshot struct {
	entries []string   // the list as LRANGE showed it
	down    []string   // the down set as SMEMBERS showed it, sorted
	urls    []*url.URL // its valid entries not marked down, in pick order (last entry first)
	valid   []string   // the same entries as written in the list
	err     error      // set when urls is empty: ErrNoBackends, ErrWrongType, ErrAllDown, ...
}

// NewLocal returns a Local over store's list, read every refresh (a
// non-positive refresh means DefaultRefresh). It holds no snapshot until
// Refresh or Run has read one.
func NewLocal(store *Store, refresh time.Duration) *Local {
	if refresh <= 0 {
		refresh = DefaultRefresh
	}
	return &Local{store: store, refresh: refresh, log: store.log}
}

// Next returns the next backend of the snapshot. Before the first snapshot
// it returns ErrUnavailable; with an empty or invalid list, the error that
// reading it gave.
func (l *Local) Next(context.Context) (*url.URL, error) {
	s := l.snap.Load()
	if s == nil {
		return nil, errNoSnapshot
	}
	if len(s.urls) == 0 {
		return nil, s.err
	}
	i := (l.n.Add(1) - 1) % uint64(len(s.urls))
	return s.urls[i], nil
}

var errNoSnapshot = errors.Join(ErrUnavailable, errors.New("the list has not been read yet"))

// Entries returns this process's rotation as it stands, in the shared
// rotation's terms: the valid entries of the snapshot in list order, turned
// so that the last one is the next pick (where LRANGE shows the next pick
// of the shared rotation).
func (l *Local) Entries(context.Context) ([]string, error) {
	s := l.snap.Load()
	switch {
	case s == nil:
		return nil, errNoSnapshot
	case len(s.valid) == 0 && errors.Is(s.err, ErrNoBackends):
		return nil, nil
	case len(s.valid) == 0:
		return nil, s.err
	}
	n := uint64(len(s.valid))
	next := l.n.Load() % n // s.valid is in pick order: this one goes next
	out := make([]string, n)
	for i := range n {
		out[n-1-i] = s.valid[(next+i)%n]
	}
	return out, nil
}

// Len returns the number of entries in the snapshot, and whether there is
// one.
func (l *Local) Len() (int, bool) {
	if s := l.snap.Load(); s != nil {
		return len(s.entries), true
	}
	return 0, false
}

// Health returns the valid entries of the list as last read, each once and
// written as ParseBackend gives it, and whether the shared health checks
// had it up then (not in the down set). ok is false before the first read.
func (l *Local) Health() (up map[string]bool, ok bool) {
	s := l.snap.Load()
	if s == nil {
		return nil, false
	}
	up = map[string]bool{}
	for _, e := range s.entries {
		if u, err := l.store.parse(e); err == nil {
			_, down := slices.BinarySearch(s.down, e)
			up[u.String()] = !down
		}
	}
	return up, true
}

// Refresh reads the list and its down set once. While Redis does not
// answer, the snapshot it has is kept, so picks go on over the last list it
// read. A list that is empty, missing or not a list replaces the snapshot:
// that is what Redis says the rotation is now. Entries marked down are left
// out of the picks, as the shared rotation steps over them.
func (l *Local) Refresh(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, l.store.stepTimeout)
	defer cancel()
	entries, down, err := l.store.read(ctx)
	if err != nil && !errors.Is(err, ErrWrongType) {
		return err
	}
	slices.Sort(down)
	old := l.snap.Load()
	if err == nil && old != nil && slices.Equal(old.entries, entries) && slices.Equal(old.down, down) {
		return nil
	}
	s := &snapshot{entries: entries, down: down, err: err}
	if err == nil && len(entries) == 0 {
		s.err = ErrNoBackends
	}
	valid := 0
	for i := len(entries) - 1; i >= 0; i-- {
		u, err := l.store.parse(entries[i])
		if err != nil {
			continue
		}
		valid++
		if _, isDown := slices.BinarySearch(down, entries[i]); isDown {
			continue
		}
		s.urls = append(s.urls, u)
		s.valid = append(s.valid, entries[i])
	}
	switch {
	case len(s.urls) > 0 || s.err != nil:
	case valid == 0:
		s.err = ErrNoValidBackend
	default:
		s.err = ErrAllDown
	}
	l.snap.Store(s)
	l.n.Store(0)
	if old == nil || !slices.Equal(old.down, down) || len(old.entries) != len(entries) {
		// The order changes with every shared step; say only what matters.
		l.log.Info("rotation snapshot read", "key", l.store.key, "entries", len(entries), "valid", valid, "down", len(down))
	}
	return nil
}

// Run refreshes the snapshot every refresh interval until ctx is done,
// starting one interval from now: call Refresh first for the first read.
func (l *Local) Run(ctx context.Context) {
	t := time.NewTicker(l.refresh)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := l.Refresh(ctx)
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			l.log.Warn("cannot read the rotation list; keeping the last snapshot", "err", err)
		case err == nil && failing:
			l.log.Info("rotation list readable again")
		}
		failing = err != nil
	}
}
