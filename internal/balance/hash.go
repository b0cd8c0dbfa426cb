package balance

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
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

// HashKeySetting is HASH_KEY.
var HashKeySetting = app.Setting{Name: "HASH_KEY", Default: "ip",
	Usage: "STRATEGY=hash: what to hash: ip (the client address of the connection), header:NAME, cookie:NAME or query:NAME"}

func init() {
	Register(Strategy{
		Name:     "hash",
		Usage:    "rendezvous hashing on HASH_KEY: the same key goes to the same backend; no Redis per request",
		Modes:    []Mode{Redirect, Proxy},
		Settings: []app.Setting{HashKeySetting},
		Configure: func(getenv func(string) string, _ Mode) (Plan, error) {
			key, err := ParseHashKey(HashKeySetting.Get(getenv))
			if err != nil {
				return Plan{}, fmt.Errorf("%s: %w", HashKeySetting.Name, err)
			}
			return Plan{New: func(e Env) (Picker, error) {
				h := NewHash(e.Pool, key)
				h.onFallback = e.OnFallback
				return h, nil
			}}, nil
		},
	})
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
}

type hashNode struct {
	e      pool.Entry
	seed   uint64  // FNV-1a of the URL: the node's identity in the scores
	weight float64 // how many entries the list holds for it
}

// NewHash returns a hash pick over p on key.
func NewHash(p *pool.Pool, key HashKey) *Hash {
	return &Hash{key: key, rr: NewLocal(p), nodes: pool.NewView(p, hashNodes)}
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
	n := nodes[rendezvous(key, nodes)]
	return Backend{URL: n.e.URL, Entry: n.e.Raw}, nil
}

// Fallbacks is how many requests had no key and took a round-robin step.
func (h *Hash) Fallbacks() uint64 { return h.fallbacks.Load() }

// hashNodes are the distinct backends of a snapshot, each weighted by how
// many entries the list holds for it.
func hashNodes(s *pool.Snapshot) []hashNode {
	var nodes []hashNode
	index := map[string]int{}
	for _, e := range s.Eligible {
		u := e.URL.String()
		if i, ok := index[u]; ok {
			nodes[i].weight++
			continue
		}
		index[u] = len(nodes)
		nodes = append(nodes, hashNode{e: e, seed: fnv64(u), weight: 1})
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
		x := (float64(mix64(k^n.seed)>>11) + 0.5) / (1 << 53)
		score := -n.weight / math.Log(x)
		if score > bestScore {
			best, bestScore = i, score
		}
	}
	return best
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
