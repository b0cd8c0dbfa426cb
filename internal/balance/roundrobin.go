package balance

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/spreadlb/spread/internal/app"
	"github.com/spreadlb/spread/internal/pick"
	"github.com/spreadlb/spread/internal/pool"
)

// round-robin: the tutorial's strategy. Every request takes one atomic step
// of the shared rotation in Redis (LMOVE servers servers RIGHT LEFT), so
// every dispatcher on the list serves one exact round robin; concurrent
// requests share a round trip (package batch). Weights are repeated
// entries. ROTATION=local round-robins in this process over the pool
// instead: no Redis per request, each dispatcher counting for itself.

// RotationSetting is ROTATION.
var RotationSetting = app.Setting{Name: "ROTATION", Default: "redis",
	Usage: "STRATEGY=round-robin: redis: one shared, exact rotation step in Redis per request; local: round robin in this process over a snapshot of the list, read again when it changes"}

func init() {
	Register(Strategy{
		Name:     "round-robin",
		Usage:    "one shared, exact rotation step in Redis per request (ROTATION=local: in this process)",
		Modes:    []Mode{Redirect, Proxy},
		Settings: []app.Setting{RotationSetting},
		Configure: func(getenv func(string) string, _ Mode) (Plan, error) {
			switch v := RotationSetting.Get(getenv); v {
			case "local":
				return Plan{New: func(e Env) (Picker, error) { return NewLocal(e.Pool), nil }}, nil
			case "redis":
				return Plan{Needs: []Need{NeedRotation}, New: func(e Env) (Picker, error) {
					return NewFailover(NewSharedOver(e.Rotation, e.Pool), NewLocal(e.Pool), e), nil
				}}, nil
			default:
				return Plan{}, fmt.Errorf("%s=%q: want redis or local", RotationSetting.Name, v)
			}
		},
	})
}

// Shared takes one step of the shared rotation in Redis per pick.
//
// The step script skips, inside Redis, the entries that are down or
// ejected; over a pool it is also told what the pool knows ahead of Redis
// (RedisRotation.SetHints), once per snapshot: the entries this dispatcher
// has just ejected, and slow start's shares, which the script honours by
// taking a ramping entry that a step lands on only with its share's
// probability (store's stepScript). So the rotation stays one shared,
// exact turn for the entries at full weight, and a ramping one gets its
// share of the turns.
type Shared struct {
	steps RedisRotation
	hints *pool.View[*stepHints] // nil: no pool
	last  atomic.Pointer[stepHints]
}

// stepHints are one snapshot's hints for the step script.
type stepHints struct {
	ejected []string
	ramp    map[string]float64
}

// NewShared returns picks that are steps of r.
func NewShared(r RedisRotation) *Shared { return &Shared{steps: r} }

// NewSharedOver returns picks that are steps of r, told the ejections and
// slow start's shares of p's snapshots.
func NewSharedOver(r RedisRotation, p *pool.Pool) *Shared {
	return &Shared{steps: r, hints: pool.NewView(p, hintsOf)}
}

// hintsOf derives a snapshot's hints: the entries this dispatcher ejected
// that Redis did not show yet (the script reads the others live, and so
// sees an ejection end at once), and while some entry ramps, each eligible
// entry's factor over the largest (so that the entry furthest along is
// taken every time).
func hintsOf(s *pool.Snapshot) *stepHints {
	h := &stepHints{}
	for e := range s.Pending {
		h.ejected = append(h.ejected, e)
	}
	if !s.Ramping {
		return h
	}
	top := 0.0
	for _, e := range s.Eligible {
		top = max(top, e.Factor)
	}
	h.ramp = map[string]float64{}
	for _, e := range s.Eligible {
		if f := e.Factor / top; f < 1 {
			h.ramp[e.Raw] = f
		}
	}
	return h
}

// Pick takes the rotation step.
func (s *Shared) Pick(ctx context.Context, _ *http.Request) (Backend, error) {
	if s.hints != nil {
		if h, err := s.hints.Get(); err == nil && s.last.Swap(h) != h {
			s.steps.SetHints(h.ejected, h.ramp)
		}
	}
	e, u, err := s.steps.NextEntry(ctx)
	if err != nil {
		return Backend{}, err
	}
	return Backend{URL: u, Entry: e}, nil
}

// Rotation is the end of the list as Redis holds it: the next pick is its
// last entry.
func (s *Shared) Rotation(ctx context.Context, n int) (Rotation, error) {
	e, total, err := s.steps.Tail(ctx, n)
	return Rotation{Entries: e, Len: int(total)}, err
}

// Local is a round robin in this process over the pool's eligible entries:
// no Redis round trip per request, but each process counts for itself, so
// several dispatchers no longer share one rotation. It picks in the order
// the shared rotation does (for a list seeded A B C: C, B, A, C, ...) and
// starts again from the top when the list or its down set changes.
type Local struct {
	turns *pool.View[*localTurn]
}

// localTurn is the position in one snapshot's eligible entries.
type localTurn struct {
	e []pool.Entry
	n atomic.Uint64 // picks so far

	// While slow start ramps: a smooth weighted round robin (nginx's)
	// over the entries' Factors, under mu.
	mu              sync.Mutex
	weight, current []float64
	total           float64
}

// localTurnOf derives a snapshot's turn.
func localTurnOf(s *pool.Snapshot) *localTurn {
	t := &localTurn{e: s.Eligible}
	if s.Ramping {
		t.current = make([]float64, len(s.Eligible))
		for _, e := range s.Eligible {
			t.weight = append(t.weight, e.Factor)
			t.total += e.Factor
		}
	}
	return t
}

// NewLocal returns a round robin over p.
func NewLocal(p *pool.Pool) *Local {
	return &Local{turns: pool.NewView(p, localTurnOf)}
}

// Pick returns the next eligible entry.
func (l *Local) Pick(context.Context, *http.Request) (Backend, error) {
	t, err := l.turns.Get()
	if err != nil {
		return Backend{}, err
	}
	i := (t.n.Add(1) - 1) % uint64(len(t.e))
	if t.weight != nil {
		i = uint64(t.weighted())
	}
	return Backend{URL: t.e[i].URL, Entry: t.e[i].Raw}, nil
}

// weighted is the smooth weighted round robin's next index: every entry
// gains its weight, the one ahead is taken and loses the total.
func (t *localTurn) weighted() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	best := 0
	for i, w := range t.weight {
		t.current[i] += w
		if t.current[i] > t.current[best] {
			best = i
		}
	}
	t.current[best] -= t.total
	return best
}

// Rotation returns the end of this process's rotation as it stands, in
// the shared rotation's terms: the last n of the eligible entries in list
// order, turned so that the last one is the next pick (where LRANGE shows
// the next pick of the shared rotation). An empty list gives no entries
// and no error.
func (l *Local) Rotation(_ context.Context, n int) (Rotation, error) {
	t, err := l.turns.Get()
	switch {
	case errors.Is(err, pick.ErrNoBackends):
		return Rotation{Local: true}, nil
	case err != nil:
		return Rotation{Local: true}, err
	}
	size := uint64(len(t.e))
	shown := min(uint64(max(n, 0)), size)
	next := t.n.Load() % size // t.e is in pick order: this one goes next
	out := make([]string, shown)
	for i := range shown {
		out[shown-1-i] = t.e[(next+i)%size].Raw
	}
	return Rotation{Entries: out, Len: len(t.e), Local: true}, nil
}
