package balance

import (
	"context"
	"net/http"

	"github.com/spreadlb/spread/internal/pool"
)

// random: a uniform pick among the pool's eligible entries, with no Redis
// call per request. A backend of weight N is N entries of the list, so it is
// picked N times as often. Hipache's default; the simplest strategy that
// needs no shared state at all, and the worked example of "how to write a
// strategy" in docs/strategies.md.
func init() {
	Register(Strategy{
		Name:  "random",
		Usage: "a uniform pick from the list's eligible entries; no Redis per request",
		Modes: []Mode{Redirect, Proxy},
		Configure: func(func(string) string, Mode) (Plan, error) {
			return Plan{New: func(e Env) (Picker, error) { return NewRandom(e.Pool), nil }}, nil
		},
	})
}

// Random picks uniformly from a pool.
type Random struct {
	entries *pool.View[*weighing]
}

// NewRandom returns a random pick over p.
func NewRandom(p *pool.Pool) *Random { return &Random{entries: pool.NewView(p, weighingOf)} }

// Pick returns one eligible entry, each with the same chance (while slow
// start ramps, a chance in proportion to its Factor).
func (r *Random) Pick(context.Context, *http.Request) (Backend, error) {
	w, err := r.entries.Get()
	if err != nil {
		return Backend{}, err
	}
	e := w.random()
	return Backend{URL: e.URL, Entry: e.Raw}, nil
}
