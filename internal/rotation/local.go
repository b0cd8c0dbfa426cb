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

// snapshot is the list as last read: its valid entries, or why there are
// none.
type snapshot struct {
	entries []string   // the list as LRANGE showed it
	urls    []*url.URL // its valid entries, in pick order (last entry first)
	valid   []string   // the same entries as written in the list
	err     error      // set when urls is empty: ErrNoBackends, ErrWrongType, ...
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

// Refresh reads the list once. While Redis does not answer, the snapshot
// it has is kept, so picks go on over the last list it read. A list that
// is empty, missing or not a list replaces the snapshot: that is what Redis
// says the rotation is now.
func (l *Local) Refresh(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, l.store.stepTimeout)
	defer cancel()
	entries, err := l.store.Entries(ctx)
	if err != nil && !errors.Is(err, ErrWrongType) {
		return err
	}
	old := l.snap.Load()
	if err == nil && old != nil && slices.Equal(old.entries, entries) {
		return nil
	}
	s := &snapshot{entries: entries, err: err}
	if err == nil && len(entries) == 0 {
		s.err = ErrNoBackends
	}
	for i := len(entries) - 1; i >= 0; i-- {
		u, err := ParseBackend(entries[i])
		if err != nil {
			l.log.Warn("skipping invalid rotation entry", "key", l.store.key, "err", err)
			continue
		}
		s.urls = append(s.urls, u)
		s.valid = append(s.valid, entries[i])
	}
	if len(s.urls) == 0 && s.err == nil {
		s.err = ErrNoValidBackend
	}
	l.snap.Store(s)
	l.n.Store(0)
	l.log.Info("rotation snapshot read", "key", l.store.key, "entries", len(entries), "valid", len(s.urls))
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
