package balance

import (
	"math"
	"math/rand/v2"
	"slices"

	"github.com/spreadlb/spread/internal/pool"
)

// Slow start (SLOW_START), the one rule: package pool gives each eligible
// entry a Factor, the share of its weight it gets now (below 1 while it
// ramps, after joining or coming back from down or an ejection), and every
// strategy weighs the entry by it, each in its own terms:
//
//	round-robin  the step script takes a ramping entry with probability
//	             Factor/the largest Factor (roundrobin.go, store's stepScript);
//	             ROTATION=local: a smooth weighted round robin over Factors
//	random       a pick in proportion to the Factors (weighing)
//	hash         the entry's rendezvous weight is multiplied by its Factor, so
//	             the newcomer wins only that share of the keys it would, and
//	             only keys it would win move; modulo and bounded loads weigh
//	             the same way
//	least-conn, p2c, least-time
//	             the candidate's weight (its load or cost is divided by it)
//	             is multiplied by its Factor (candidatesOf); least-conn's
//	             ties go in a weighted rotation (dueAt) and p2c draws its
//	             two candidates by weight, so that where every load is 0
//	             (idle, or one request at a time) the Factor weighs too.
//	             least-time's cost is (in flight + 1) ÷ weight × time: with
//	             equal times and nothing in flight, the heavier candidate
//	             always costs less, so a ramping one gets no request until
//	             requests overlap
//
// While nothing ramps (Snapshot.Ramping is false: the usual case), every
// strategy picks exactly as it does without slow start.

// rampScale turns Factors into the whole weights of backend.Weighted while
// a snapshot ramps: weights stay in proportion, to 1%.
const rampScale = 100

// rampedWeight is the whole weight of an entry listed count times with
// factor f, in a snapshot that ramps (or not).
func rampedWeight(count int, f float64, ramping bool) int {
	if !ramping {
		return count
	}
	return max(1, int(math.Round(float64(count)*f*rampScale)))
}

// weighing is one snapshot's eligible entries and, while it ramps, the
// running sums of their Factors (a pool.View's value): what a pick in
// proportion to the Factors needs.
type weighing struct {
	e   []pool.Entry
	cum []float64 // nil when the snapshot does not ramp: a uniform pick
}

// weighingOf derives a snapshot's weighing.
func weighingOf(s *pool.Snapshot) *weighing {
	w := &weighing{e: s.Eligible}
	if !s.Ramping {
		return w
	}
	w.cum = make([]float64, len(s.Eligible))
	sum := 0.0
	for i, e := range s.Eligible {
		sum += e.Factor
		w.cum[i] = sum
	}
	return w
}

// at is the entry that x, in [0, 1), falls on when the entries share
// [0, 1) in proportion to their Factors, or equally when nothing ramps.
func (w *weighing) at(x float64) pool.Entry {
	n := len(w.e)
	if w.cum == nil {
		return w.e[min(int(x*float64(n)), n-1)]
	}
	i, _ := slices.BinarySearch(w.cum, x*w.cum[n-1])
	return w.e[min(i, n-1)]
}

// random is at a random point.
func (w *weighing) random() pool.Entry { return w.at(rand.Float64()) }
