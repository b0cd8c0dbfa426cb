package balance

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"

	"github.com/spreadlb/spread/internal/pick"

	"github.com/spreadlb/spread/internal/pool"
	"github.com/spreadlb/spread/internal/store"
)

// round-robin: the tutorial's strategy. Every request takes one atomic step
// of the shared rotation in Redis (LMOVE servers servers RIGHT LEFT), so
// every dispatcher on the list serves one exact round robin; concurrent
// requests share a round trip (store's coalescing). Weights are repeated
// entries. ROTATION=local round-robins in this process over the pool
// instead: no Redis per request, each dispatcher counting for itself.
func init() {
	Register(Strategy{
		Name:  "round-robin",
		Usage: "one shared, exact rotation step in Redis per request (ROTATION=local: in this process)",
		Modes: []Mode{Redirect, Proxy},
		New: func(c Config) (Picker, error) {
			local := NewLocal(c.Pool)
			if c.Rotation == "local" {
				return local, nil
			}
			return NewFailover(Shared{store.NewRotation(c.Store)}, local, c), nil
		},
	})
}

// Shared takes one step of the shared rotation in Redis per pick.
type Shared struct{ Rotation *store.Rotation }

// Pick takes the rotation step.
func (s Shared) Pick(ctx context.Context, _ *http.Request) (Backend, error) {
	u, err := s.Rotation.Next(ctx)
	if err != nil {
		return Backend{}, err
	}
	return Backend{URL: u}, nil
}

// Local is a round robin in this process over the pool's eligible entries:
// no Redis round trip per request, but each process counts for itself, so
// several dispatchers no longer share one rotation. It picks in the order
// the shared rotation does (for a list seeded A B C: C, B, A, C, ...) and
// starts again from the top when the list or its down set changes.
type Local struct {
	pool *pool.Pool
	turn atomic.Pointer[localTurn]
}

// localTurn is the position in one snapshot.
type localTurn struct {
	snap *pool.Snapshot
	n    atomic.Uint64 // picks so far
}

// NewLocal returns a round robin over p.
func NewLocal(p *pool.Pool) *Local { return &Local{pool: p} }

// Pick returns the next eligible entry.
func (l *Local) Pick(context.Context, *http.Request) (Backend, error) {
	t, err := l.current()
	if err != nil {
		return Backend{}, err
	}
	e := t.snap.Eligible
	i := (t.n.Add(1) - 1) % uint64(len(e))
	return Backend{URL: e[i].URL, Entry: e[i].Raw}, nil
}

// current returns the turn over the pool's snapshot as it is now.
func (l *Local) current() (*localTurn, error) {
	s, err := l.pool.Current()
	if err != nil {
		return nil, err
	}
	for {
		t := l.turn.Load()
		if t != nil && t.snap == s {
			return t, nil
		}
		if l.turn.CompareAndSwap(t, &localTurn{snap: s}) {
			return l.turn.Load(), nil
		}
	}
}

// Entries returns this process's rotation as it stands, in the shared
// rotation's terms: the eligible entries in list order, turned so that the
// last one is the next pick (where LRANGE shows the next pick of the shared
// rotation). An empty list gives no entries and no error.
func (l *Local) Entries(context.Context) ([]string, error) {
	t, err := l.current()
	switch {
	case errors.Is(err, pick.ErrNoBackends):
		return nil, nil
	case err != nil:
		return nil, err
	}
	e := t.snap.Eligible
	n := uint64(len(e))
	next := t.n.Load() % n // e is in pick order: this one goes next
	out := make([]string, n)
	for i := range n {
		out[n-1-i] = e[(next+i)%n].Raw
	}
	return out, nil
}
