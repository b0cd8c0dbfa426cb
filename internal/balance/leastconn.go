package balance

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"sync"

	"github.com/spreadlb/spread/internal/app"
	"github.com/spreadlb/spread/internal/backend"
	"github.com/spreadlb/spread/internal/pick"
	"github.com/spreadlb/spread/internal/pool"
)

// least-conn: each request goes to the eligible backend with the fewest
// requests in flight, counted across every dispatcher on the list, in Redis
// (Env.Inflight). The pick and its count are one script, so two
// dispatchers never both take the last idle backend. A backend of weight N
// counts as N backends (its load is divided by N), and ties go in a
// weighted rotation (see dueAt), as nginx's least_conn breaks them: an
// idle or lightly loaded pool, where every load is 0, still rotates, each
// backend taken as often as its weight says. Proxy mode only: a
// redirecting dispatcher never sees a request end.
//
// Cost: one Redis round trip to pick and one to release, each shared with
// the concurrent picks and releases. While Redis is down, picks fall back
// to p2c over this dispatcher's own counts (Failover).
//
// LEAST_CONN_SCOPE=local counts only this dispatcher's own requests, as
// nginx, HAProxy and Envoy do: no Redis on the request path, and each
// dispatcher blind to the others' load. It is there to compare the two
// (the lab's herd scenario).

// LeastConnScopeSetting is LEAST_CONN_SCOPE.
var LeastConnScopeSetting = app.Setting{Name: "LEAST_CONN_SCOPE", Default: "shared",
	Usage: "STRATEGY=least-conn: shared: requests in flight counted across every dispatcher, in Redis; local: this dispatcher's own only, as nginx, HAProxy and Envoy count them"}

func init() {
	Register(Strategy{
		Name:     "least-conn",
		Usage:    "MODE=proxy: the backend with the fewest requests in flight, counted in Redis across every dispatcher",
		Modes:    []Mode{Proxy},
		Settings: []app.Setting{LeastConnScopeSetting},
		Configure: func(getenv func(string) string, _ Mode) (Plan, error) {
			switch v := LeastConnScopeSetting.Get(getenv); v {
			case "local":
				return Plan{New: func(e Env) (Picker, error) { return NewLocalLeastConn(e.Pool), nil }}, nil
			case "shared":
			default:
				return Plan{}, fmt.Errorf("%s=%q: want shared or local", LeastConnScopeSetting.Name, v)
			}
			return Plan{Needs: []Need{NeedInflight}, New: func(e Env) (Picker, error) {
				in := e.Inflight()
				in.SetEager(true)
				c := pool.NewView(e.Pool, candidatesOf)
				return NewFailover(&LeastConn{cands: c, in: in}, &P2C{cands: c, in: in}, e), nil
			}}, nil
		},
	})
}

// LeastConn picks the backend with the fewest requests in flight.
type LeastConn struct {
	cands *pool.View[*candidates]
	in    Counts
}

// Pick takes the least loaded backend and counts the request to it.
func (l *LeastConn) Pick(ctx context.Context, _ *http.Request) (Backend, error) {
	c, err := l.cands.Get()
	if err != nil {
		return Backend{}, err
	}
	entry, err := l.in.Pick(ctx, c.list)
	if err != nil {
		return Backend{}, err
	}
	u := c.urls[entry]
	if u == nil {
		// Redis returns one of the candidates this pick sent, so this
		// cannot happen; refuse rather than send a client somewhere
		// unchecked.
		l.in.Release(entry)
		return Backend{}, pick.ErrNoValidBackend
	}
	return Backend{URL: u, Entry: entry, by: l}, nil
}

// Done releases the request's count.
func (l *LeastConn) Done(b Backend, _ Result) { l.in.Release(b.Entry) }

// InFlight returns the requests in flight by entry, every dispatcher's, as
// last read.
func (l *LeastConn) InFlight() map[string]int64 { return l.in.Shared() }

// LocalLeastConn picks the backend with the fewest of this dispatcher's own
// requests in flight (LEAST_CONN_SCOPE=local). Ties go in weighted
// rotation order (dueAt), as the shared script breaks them.
type LocalLeastConn struct {
	cands *pool.View[*candidates]

	mu   sync.Mutex
	own  map[string]int64 // requests in flight by entry
	turn int64            // the rotation's cursor (dueAt): where the next tie-break starts
}

// NewLocalLeastConn returns a least-connections pick over p that counts
// only its own requests.
func NewLocalLeastConn(p *pool.Pool) *LocalLeastConn {
	return &LocalLeastConn{cands: pool.NewView(p, candidatesOf), own: map[string]int64{}}
}

// Pick takes the least loaded backend, per unit of weight, the one due
// first in the weighted rotation among equals, and counts the request to
// it.
func (l *LocalLeastConn) Pick(context.Context, *http.Request) (Backend, error) {
	c, err := l.cands.Get()
	if err != nil {
		return Backend{}, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	n, m := int64(len(c.list)), int64(c.maxWeight)
	best, bestDue := -1, int64(0)
	for k := range n {
		i := int((l.turn + k) % n)
		w, d := int64(c.list[i].Weight), dueAt(l.turn, k, n, int64(c.list[i].Weight), m)
		if best < 0 {
			best, bestDue = i, d
			continue
		}
		a, b := l.own[c.list[i].URL]*int64(c.list[best].Weight), l.own[c.list[best].URL]*w
		if a < b || a == b && d < bestDue {
			best, bestDue = i, d
		}
	}
	l.turn = (bestDue + 1) % (m * n)
	e := c.list[best].URL
	l.own[e]++
	return Backend{URL: c.urls[e], Entry: e, by: l}, nil
}

// Done releases the request's count.
func (l *LocalLeastConn) Done(b Backend, _ Result) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.own[b.Entry]--; l.own[b.Entry] <= 0 {
		delete(l.own, b.Entry)
	}
}

// dueAt is when the candidate k places after cursor t's place is next due
// in the weighted rotation that breaks least-connections' ties, over a
// list of n candidates whose largest weight is m: the first cursor at or
// after t that is at its place in a round it takes part in. Of the
// candidates tied for least loaded, the pick is the one due first, and the
// cursor moves past it.
//
// Cursor t is place t mod n of round t / n. A candidate of weight w takes
// part in w rounds of every m, spread evenly (round r, when ⌊(r+1)w/m⌋ >
// ⌊rw/m⌋), so that over m rounds it is taken w times, and a candidate of
// the largest weight in every round. With equal weights every candidate
// takes part in every round: the rotation is the plain one, the candidates
// in turn. The shared script (store's inflightScript) computes the same.
func dueAt(t, k, n, w, m int64) int64 {
	c := t + k     // its place, in this round or the next
	q := c / n % m // the round, within the m that repeat
	// The first round from q on that it takes part in: q' = ⌈jm/w⌉ − 1 for
	// the next j = ⌊qw/m⌋ + 1, below m since j ≤ w.
	j := q*w/m + 1
	return c + ((j*m+w-1)/w-1-q)*n
}

// candidates are the distinct eligible entries of one snapshot, in pick
// order, each with its weight (how often the list holds it): what the
// strategies that weigh backends by their load choose among.
type candidates struct {
	list      []backend.Weighted  // URL: the entry as the list holds it
	urls      map[string]*url.URL // entry -> its URL
	maxWeight int                 // the largest weight in list
	cum       []int               // running sums of the weights; nil when they are all equal
}

// candidatesOf derives a snapshot's candidates (a pool.View's derive):
// each entry weighs as often as the list holds it, times its slow start
// Factor while the snapshot ramps (ramp.go).
func candidatesOf(s *pool.Snapshot) *candidates {
	cs := &candidates{urls: map[string]*url.URL{}}
	index := map[string]int{}
	var factors []float64
	for _, e := range s.Eligible {
		if i, ok := index[e.Raw]; ok {
			cs.list[i].Weight++
			continue
		}
		index[e.Raw] = len(cs.list)
		cs.list = append(cs.list, backend.Weighted{URL: e.Raw, Weight: 1})
		factors = append(factors, e.Factor)
		cs.urls[e.Raw] = e.URL
	}
	equal, sum := true, 0
	for i := range cs.list {
		w := max(1, rampedWeight(cs.list[i].Weight, factors[i], s.Ramping))
		cs.list[i].Weight = w
		cs.maxWeight = max(cs.maxWeight, w)
		equal = equal && w == cs.list[0].Weight
		sum += w
		cs.cum = append(cs.cum, sum)
	}
	if equal {
		cs.cum = nil
	}
	return cs
}

// DispatcherID is id, or the host name and a random suffix: a dispatcher's
// name among those sharing a list.
func DispatcherID(id string) string {
	if id != "" {
		return id
	}
	host, _ := os.Hostname()
	b := make([]byte, 6)
	rand.Read(b)
	return host + "/" + hex.EncodeToString(b)
}
