package balance

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/spreadlb/spread/internal/app"
	"github.com/spreadlb/spread/internal/pool"
)

// hash: consistent hashing on a key taken from the request (HASH_KEY), so
// that the same client, user or session always lands on the same backend
// while the pool is unchanged: the sticky-sessions lesson. It uses
// rendezvous (highest random weight) hashing: every backend scores the key,
// and the highest score wins. Removing a backend moves only the keys it
// held; adding one takes from each of the others about its fair share. A
// backend of weight N (N entries in the list) scores as N backends would.
// The scores use a fixed hash (FNV-1a), so every dispatcher sends a key to
// the same backend. No Redis call per request.
//
// A request without the key (no such header, say) takes a step of this
// process's round robin instead, counted in Fallbacks.
//
// HASH_BALANCE_FACTOR bounds the loads (consistent hashing with bounded
// loads, Mirrokni, Thorup and Zadimoghaddam; HAProxy's hash-balance-factor):
// no backend takes more than ceil(FACTOR × the average) of the requests in
// flight, counted across every dispatcher as p2c counts them (the others'
// as last read, this one's exact). A key whose backend is full goes to the
// next backend in that key's own rendezvous order, so it is still
// deterministic, and a key keeps its backend while the pool is not busy.
// Proxy mode only: a redirecting dispatcher never sees a request end.

// HashKeySetting is HASH_KEY.
var HashKeySetting = app.Setting{Name: "HASH_KEY", Default: "ip",
	Usage: "STRATEGY=hash: what to hash: ip (the client address of the connection), header:NAME, cookie:NAME or query:NAME"}

// HashMethodSetting is HASH_METHOD.
var HashMethodSetting = app.Setting{Name: "HASH_METHOD", Default: "rendezvous",
	Usage: "STRATEGY=hash: rendezvous: a backend leaving moves only its own keys; modulo: the key's hash modulo the number of backends, which moves most keys when one joins or leaves: for teaching only (the lab's churn scenario)"}

// HashBalanceFactorSetting is HASH_BALANCE_FACTOR.
var HashBalanceFactorSetting = app.Setting{Name: "HASH_BALANCE_FACTOR", Default: "",
	Usage: "STRATEGY=hash, MODE=proxy: bounded loads: no backend takes more than ceil(FACTOR × the average) of the requests in flight, counted across dispatchers, and a key whose backend is full goes to the next in its own order; a number of 1 or more, such as 1.25; empty: off"}

func init() {
	Register(Strategy{
		Name:     "hash",
		Usage:    "rendezvous hashing on HASH_KEY: the same key goes to the same backend; no Redis per request",
		Modes:    []Mode{Redirect, Proxy},
		Settings: []app.Setting{HashKeySetting, HashMethodSetting, HashBalanceFactorSetting},
		Variants: []Variant{{Name: "hash-bounded", Settings: map[string]string{HashBalanceFactorSetting.Name: "1.25"}}},
		Configure: func(getenv func(string) string, m Mode) (Plan, error) {
			key, err := ParseHashKey(HashKeySetting.Get(getenv))
			if err != nil {
				return Plan{}, fmt.Errorf("%s: %w", HashKeySetting.Name, err)
			}
			factor, err := parseBalanceFactor(HashBalanceFactorSetting.Get(getenv), m)
			if err != nil {
				return Plan{}, err
			}
			modulo := false
			switch v := HashMethodSetting.Get(getenv); v {
			case "rendezvous":
			case "modulo":
				if factor > 0 {
					return Plan{}, fmt.Errorf("%s=modulo and %s: want one or the other: bounded loads walk a key's rendezvous order", HashMethodSetting.Name, HashBalanceFactorSetting.Name)
				}
				modulo = true
			default:
				return Plan{}, fmt.Errorf("%s=%q: want rendezvous or modulo", HashMethodSetting.Name, v)
			}
			if factor == 0 {
				return Plan{New: func(e Env) (Picker, error) {
					h := NewHash(e.Pool, key)
					h.onFallback, h.modulo = e.OnFallback, modulo
					return h, nil
				}}, nil
			}
			return Plan{Needs: []Need{NeedInflight}, New: func(e Env) (Picker, error) {
				h := NewHash(e.Pool, key)
				h.onFallback = e.OnFallback
				return NewBoundedHash(h, e.Inflight(), factor), nil
			}}, nil
		},
	})
}

// parseBalanceFactor reads HASH_BALANCE_FACTOR: empty (0, off), or a number
// of 1 or more, in proxy mode only.
func parseBalanceFactor(v string, m Mode) (float64, error) {
	if v == "" {
		return 0, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || !(f >= 1) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%s=%q: want a number of 1 or more, such as 1.25, or empty for no bound", HashBalanceFactorSetting.Name, v)
	}
	if m != Proxy {
		return 0, fmt.Errorf("%s=%s needs MODE=proxy (MODE is %q): bounding loads counts requests in flight, and a redirecting dispatcher never sees a request end; leave it empty in MODE=redirect",
			HashBalanceFactorSetting.Name, v, m)
	}
	return f, nil
}

// HashKey takes the key to hash from a request; ok is false when the
// request has none.
type HashKey func(r *http.Request) (key string, ok bool)

// ErrBadHashKey is returned (wrapped, with the reason) for a HASH_KEY that
// does not parse.
var ErrBadHashKey = errors.New("invalid hash key")

// ParseHashKey reads HASH_KEY: "ip" (or empty: the client address of the
// connection, never a header a client could forge), "header:NAME",
// "cookie:NAME" or "query:NAME".
func ParseHashKey(s string) (HashKey, error) {
	kind, name, hasName := strings.Cut(s, ":")
	bad := func(why string) error {
		return fmt.Errorf("%w %q: %s; want ip, header:NAME, cookie:NAME or query:NAME", ErrBadHashKey, s, why)
	}
	if kind == "ip" || s == "" {
		if hasName {
			return nil, bad("ip takes no name")
		}
		return clientIP, nil
	}
	if !hasName {
		return nil, bad("unknown kind")
	}
	if name == "" || strings.IndexFunc(name, func(r rune) bool { return !isTokenRune(r) }) >= 0 {
		return nil, bad("the name must be a non-empty token of letters, digits and !#$%&'*+-.^_`|~")
	}
	switch kind {
	case "header":
		name = http.CanonicalHeaderKey(name)
		return func(r *http.Request) (string, bool) {
			v := r.Header.Get(name)
			return v, v != ""
		}, nil
	case "cookie":
		return func(r *http.Request) (string, bool) {
			c, err := r.Cookie(name)
			if err != nil || c.Value == "" {
				return "", false
			}
			return c.Value, true
		}, nil
	case "query":
		return func(r *http.Request) (string, bool) {
			v := r.URL.Query().Get(name)
			return v, v != ""
		}, nil
	}
	return nil, bad("unknown kind")
}

func clientIP(r *http.Request) (string, bool) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return host, host != ""
}

func isTokenRune(r rune) bool {
	return r < 0x7f && r > ' ' && !strings.ContainsRune("\"(),/:;<=>?@[\\]{}", r)
}

// Hash picks by rendezvous hashing on a request key.
type Hash struct {
	key       HashKey
	rr        *Local
	nodes     *pool.View[[]hashNode]
	fallbacks atomic.Uint64
	// onFallback, if set, hears each request without the key
	// (Env.OnFallback).
	onFallback func()
	// modulo picks the key's hash modulo the number of backends
	// (HASH_METHOD=modulo), for teaching only.
	modulo  bool
	entries *pool.View[*weighing] // modulo's entries, weighed while slow start ramps
}

type hashNode struct {
	e      pool.Entry
	seed   uint64  // FNV-1a of the URL: the node's identity in the scores
	weight float64 // how many entries the list holds for it
}

// NewHash returns a hash pick over p on key.
func NewHash(p *pool.Pool, key HashKey) *Hash {
	return &Hash{key: key, rr: NewLocal(p), nodes: pool.NewView(p, hashNodes), entries: pool.NewView(p, weighingOf)}
}

// Pick returns the backend with the highest score for the request's key, or
// a round-robin step for a request without one.
func (h *Hash) Pick(ctx context.Context, r *http.Request) (Backend, error) {
	key, ok := "", false
	if r != nil {
		key, ok = h.key(r)
	}
	if !ok {
		h.fallbacks.Add(1)
		if h.onFallback != nil {
			h.onFallback()
		}
		return h.rr.Pick(ctx, r)
	}
	nodes, err := h.nodes.Get()
	if err != nil {
		return Backend{}, err
	}
	if h.modulo {
		// Over the entries, so that a backend of weight N gets N shares;
		// while slow start ramps, over their Factors.
		w, err := h.entries.Get()
		if err != nil {
			return Backend{}, err
		}
		x := w.e[mix64(fnv64(key))%uint64(len(w.e))]
		if w.cum != nil {
			x = w.at(float64(mix64(fnv64(key))>>11) / (1 << 53))
		}
		return Backend{URL: x.URL, Entry: x.Raw}, nil
	}
	n := nodes[rendezvous(key, nodes)]
	return Backend{URL: n.e.URL, Entry: n.e.Raw}, nil
}

// Fallbacks is how many requests had no key and took a round-robin step.
func (h *Hash) Fallbacks() uint64 { return h.fallbacks.Load() }

// BoundedHash is Hash with bounded loads (HASH_BALANCE_FACTOR).
type BoundedHash struct {
	*Hash
	in     Counts
	factor float64
}

// NewBoundedHash bounds h's loads by factor, counting in in.
func NewBoundedHash(h *Hash, in Counts, factor float64) *BoundedHash {
	in.SetEager(false)
	return &BoundedHash{Hash: h, in: in, factor: factor}
}

// Pick returns the first backend in the key's rendezvous order that has
// room under the bound, and counts the request to it; a request without
// the key takes a round-robin step, counted too.
func (b *BoundedHash) Pick(ctx context.Context, r *http.Request) (Backend, error) {
	key, ok := "", false
	if r != nil {
		key, ok = b.key(r)
	}
	if !ok {
		bk, err := b.Hash.Pick(ctx, r)
		if err != nil {
			return bk, err
		}
		b.in.Add(bk.Entry)
		bk.by = b
		return bk, nil
	}
	nodes, err := b.nodes.Get()
	if err != nil {
		return Backend{}, err
	}
	n := nodes[b.choose(key, nodes)]
	b.in.Add(n.e.Raw)
	return Backend{URL: n.e.URL, Entry: n.e.Raw, by: b}, nil
}

// choose returns the index of the node that key goes to: the highest
// scoring one whose load, with this request, stays within its bound,
// ceil(factor × (requests in flight + 1) × its weight ÷ every weight).
// Some node always has room, since the bounds add up to at least factor
// × (in flight + 1).
func (b *BoundedHash) choose(key string, nodes []hashNode) int {
	k := fnv64(key)
	scores := make([]float64, len(nodes))
	loads := make([]int64, len(nodes))
	var total int64
	var weights float64
	for i, n := range nodes {
		scores[i] = score(k, n)
		loads[i] = b.in.Load(n.e.Raw)
		total += loads[i]
		weights += n.weight
	}
	first := -1
	for range nodes {
		best := -1
		for i := range nodes {
			if !math.IsInf(scores[i], -1) && (best < 0 || scores[i] > scores[best]) {
				best = i
			}
		}
		if best < 0 {
			break
		}
		if first < 0 {
			first = best
		}
		bound := math.Ceil(b.factor * float64(total+1) * nodes[best].weight / weights)
		if float64(loads[best]+1) <= bound {
			return best
		}
		scores[best] = math.Inf(-1) // full: the next in this key's order
	}
	return first
}

// Done releases the request's count.
func (b *BoundedHash) Done(bk Backend, _ Result) { b.in.Release(bk.Entry) }

// Run sends this dispatcher's counts and reads the others' every
// P2CRefresh until ctx is done.
func (b *BoundedHash) Run(ctx context.Context) { syncEvery(ctx, b.in, P2CRefresh) }

// InFlight returns the requests in flight by entry, every dispatcher's, as
// last read.
func (b *BoundedHash) InFlight() map[string]int64 { return b.in.Shared() }

// hashNodes are the distinct backends of a snapshot, each weighted by how
// many entries the list holds for it, times its slow start Factor (1 when
// it does not ramp).
func hashNodes(s *pool.Snapshot) []hashNode {
	var nodes []hashNode
	index := map[string]int{}
	for _, e := range s.Eligible {
		u := e.URL.String()
		if i, ok := index[u]; ok {
			nodes[i].weight += e.Factor
			continue
		}
		index[u] = len(nodes)
		nodes = append(nodes, hashNode{e: e, seed: fnv64(u), weight: e.Factor})
	}
	return nodes
}

// rendezvous returns the index of the node that key goes to: the highest of
// -weight / ln(x), where x in (0, 1) is a hash of the key and the node. For
// equal weights that is simply the highest hash; with weights, each node
// wins a share of the keys proportional to its weight.
func rendezvous(key string, nodes []hashNode) int {
	k := fnv64(key)
	best, bestScore := 0, math.Inf(-1)
	for i, n := range nodes {
		if s := score(k, n); s > bestScore {
			best, bestScore = i, s
		}
	}
	return best
}

// score is node n's score for the key whose hash is k.
func score(k uint64, n hashNode) float64 {
	x := (float64(mix64(k^n.seed)>>11) + 0.5) / (1 << 53)
	return -n.weight / math.Log(x)
}

// fnv64 is FNV-1a, 64 bits: fixed, so that every dispatcher agrees.
func fnv64(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// mix64 is splitmix64's finalizer: it spreads the bits of a combined hash,
// so that nearby seeds give unrelated scores.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
