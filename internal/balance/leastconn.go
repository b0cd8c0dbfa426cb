package balance

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/url"
	"os"
	"sync/atomic"

	"github.com/spreadlb/spread/internal/pick"

	"github.com/spreadlb/spread/internal/pool"
	"github.com/spreadlb/spread/internal/store"
)

// least-conn: each request goes to the eligible backend with the fewest
// requests in flight, counted across every dispatcher on the list, in Redis
// (store.Inflight). The pick and its count are one script, so two
// dispatchers never both take the last idle backend; ties go in rotation
// order, so an idle pool still rotates. A backend of weight N counts as N
// backends (its load is divided by N). Proxy mode only: a redirecting
// dispatcher never sees a request end.
//
// Cost: one Redis round trip to pick and one to release, each shared with
// the concurrent picks and releases. While Redis is down, picks fall back
// to p2c over this dispatcher's own counts (Failover).
func init() {
	Register(Strategy{
		Name:  "least-conn",
		Usage: "MODE=proxy: the backend with the fewest requests in flight, counted in Redis across every dispatcher",
		Modes: []Mode{Proxy},
		New: func(c Config) (Picker, error) {
			in := c.Store.NewInflight(dispatcherID(c.ID), true)
			lc := &LeastConn{pool: c.Pool, in: in}
			return NewFailover(lc, &P2C{pool: c.Pool, in: in}, c), nil
		},
	})
}

// LeastConn picks the backend with the fewest requests in flight.
type LeastConn struct {
	pool  *pool.Pool
	in    *store.Inflight
	cands atomic.Pointer[candidates]
}

// NewLeastConn returns a least-connections pick over p, counting in in.
func NewLeastConn(p *pool.Pool, in *store.Inflight) *LeastConn {
	return &LeastConn{pool: p, in: in}
}

// Pick takes the least loaded backend and counts the request to it.
func (l *LeastConn) Pick(ctx context.Context, _ *http.Request) (Backend, error) {
	c, err := current(l.pool, &l.cands)
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
func (l *LeastConn) Done(b Backend, _ error) { l.in.Release(b.Entry) }

// Run renews this dispatcher's counts in Redis until ctx is done.
func (l *LeastConn) Run(ctx context.Context) { l.in.Keepalive(ctx) }

// InFlight returns the requests in flight by entry, every dispatcher's, as
// last read.
func (l *LeastConn) InFlight() map[string]int64 { return l.in.Shared() }

// candidates are the distinct eligible entries of one snapshot, in pick
// order, each with its weight (how often the list holds it).
type candidates struct {
	snap *pool.Snapshot
	list []store.Candidate
	urls map[string]*url.URL // entry -> its URL
}

// current returns the candidates of p's snapshot as it is now, cached in c.
func current(p *pool.Pool, c *atomic.Pointer[candidates]) (*candidates, error) {
	s, err := p.Current()
	if err != nil {
		return nil, err
	}
	if cs := c.Load(); cs != nil && cs.snap == s {
		return cs, nil
	}
	cs := &candidates{snap: s, urls: map[string]*url.URL{}}
	index := map[string]int{}
	for _, e := range s.Eligible {
		if i, ok := index[e.Raw]; ok {
			cs.list[i].Weight++
			continue
		}
		index[e.Raw] = len(cs.list)
		cs.list = append(cs.list, store.Candidate{Entry: e.Raw, Weight: 1})
		cs.urls[e.Raw] = e.URL
	}
	c.Store(cs)
	return cs, nil
}

// dispatcherID is id, or the host name and a random suffix.
func dispatcherID(id string) string {
	if id != "" {
		return id
	}
	host, _ := os.Hostname()
	b := make([]byte, 6)
	rand.Read(b)
	return host + "/" + hex.EncodeToString(b)
}
