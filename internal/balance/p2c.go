package balance

import (
	"context"
	"math/rand/v2"
	"net/http"
	"slices"
	"time"

	"github.com/spreadlb/spread/internal/backend"
	"github.com/spreadlb/spread/internal/pool"
)

// p2c: the power of two choices, as Envoy's least-request balancer does it.
// Each request looks at two different eligible backends chosen at random,
// in proportion to their weights, and goes to the one with fewer requests
// in flight per unit of weight, the first chosen if they are equal: so an
// idle or lightly loaded pool, where every load is 0, is shared by weight.
// The counts are the other dispatchers' as last read from Redis, refreshed
// every P2CRefresh, plus this process's own, exact: no Redis round trip on
// the request path. Almost as good as least-connections under load, and it
// avoids least-connections' herd: stale counts cannot send every dispatcher
// to the same "least loaded" backend at once. Proxy mode only.
func init() {
	Register(Strategy{
		Name:  "p2c",
		Usage: "MODE=proxy: the less loaded of two random backends, by requests in flight; no Redis per request",
		Modes: []Mode{Proxy},
		Configure: func(func(string) string, Mode) (Plan, error) {
			return Plan{Needs: []Need{NeedInflight}, New: func(e Env) (Picker, error) {
				return NewP2C(e.Pool, e.Inflight()), nil
			}}, nil
		},
	})
}

// P2CRefresh is how often p2c sends its counts to Redis and reads the
// other dispatchers'.
const P2CRefresh = 100 * time.Millisecond

// P2C picks the less loaded of two random backends.
type P2C struct {
	cands *pool.View[*candidates]
	in    Counts
}

// NewP2C returns a power-of-two-choices pick over p, counting in in.
func NewP2C(p *pool.Pool, in Counts) *P2C {
	in.SetEager(false)
	return &P2C{cands: pool.NewView(p, candidatesOf), in: in}
}

// Pick compares two backends drawn by weight and counts the request to
// the less loaded one.
func (p *P2C) Pick(context.Context, *http.Request) (Backend, error) {
	return pickTwo(p.cands, p.in, p, (*candidates).twoByWeight, func(a, b backend.Weighted) bool {
		// a's load per weight is below b's: la/wa < lb/wb.
		return p.in.Load(a.URL)*int64(b.Weight) < p.in.Load(b.URL)*int64(a.Weight)
	})
}

// pickOfTwo is the power of two choices over cands: two different random
// candidates, drawn uniformly, the first unless better says the second is
// better, counted in in and heard of by by. One candidate alone is the
// pick.
func pickOfTwo(cands *pool.View[*candidates], in Counts, by Finisher, better func(a, b backend.Weighted) bool) (Backend, error) {
	return pickTwo(cands, in, by, func(c *candidates) (int, int) { return twoOf(len(c.list)) }, better)
}

// pickTwo is pickOfTwo with the two candidates' indexes drawn by draw.
func pickTwo(cands *pool.View[*candidates], in Counts, by Finisher, draw func(*candidates) (int, int), better func(a, b backend.Weighted) bool) (Backend, error) {
	c, err := cands.Get()
	if err != nil {
		return Backend{}, err
	}
	best := c.list[0]
	if len(c.list) > 1 {
		i, j := draw(c)
		best = c.list[i]
		if better(c.list[j], best) {
			best = c.list[j]
		}
	}
	in.Add(best.URL)
	return Backend{URL: c.urls[best.URL], Entry: best.URL, by: by}, nil
}

// twoOf returns two different random indexes below n (n > 1).
func twoOf(n int) (int, int) {
	i := rand.IntN(n)
	j := rand.IntN(n - 1)
	if j >= i {
		j++
	}
	return i, j
}

// twoByWeight returns the indexes of two different candidates drawn at
// random in proportion to their weights: the first among all of them, the
// second among the others (len(c.list) > 1). With equal weights, the draw
// is uniform.
func (c *candidates) twoByWeight() (int, int) {
	if c.cum == nil {
		return twoOf(len(c.list))
	}
	total := c.cum[len(c.cum)-1]
	i := c.weightAt(rand.IntN(total))
	w := c.list[i].Weight
	x := rand.IntN(total - w) // a point on the others' weights: skip i's
	if x >= c.cum[i]-w {
		x += w
	}
	return i, c.weightAt(x)
}

// weightAt is the index of the candidate whose share of the running sum of
// the weights holds x, in [0, the sum).
func (c *candidates) weightAt(x int) int {
	i, _ := slices.BinarySearch(c.cum, x+1)
	return i
}

// Done releases the request's count.
func (p *P2C) Done(b Backend, _ Result) { p.in.Release(b.Entry) }

// Run sends this dispatcher's counts and reads the others' every
// P2CRefresh until ctx is done.
func (p *P2C) Run(ctx context.Context) { syncEvery(ctx, p.in, P2CRefresh) }

// syncEvery syncs in every d until ctx is done.
func syncEvery(ctx context.Context, in Counts, d time.Duration) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		in.Sync(ctx)
	}
}

// InFlight returns the requests in flight by entry, every dispatcher's, as
// last read.
func (p *P2C) InFlight() map[string]int64 { return p.in.Shared() }
