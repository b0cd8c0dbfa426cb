package backend

import (
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strconv"
	"strings"
)

// Weights. A weighted rotation is still a plain list: a backend of weight N
// appears N times in it, so LMOVE, the tally and `redis-cli LRANGE` need
// nothing new. What weights add is the order of those entries, chosen by
// Spread so that the copies of a backend are spread over the rotation and,
// whenever that is possible, no backend is served twice in a row, not even
// where the rotation wraps around.

// MaxWeight is the largest weight a URL may be given.
const MaxWeight = 100

// ErrInvalidWeight is returned (wrapped, naming the argument) for a `*N`
// suffix whose N is not a whole number from 1 to MaxWeight.
var ErrInvalidWeight = errors.New("invalid weight")

// Weighted is a backend URL and its share of the backend.
type Weighted struct {
	URL    string
	Weight int // 1 to MaxWeight
}

// String writes w as ParseWeighted reads it: "URL*N", or "URL" for weight 1.
func (w Weighted) String() string {
	if w.Weight == 1 {
		return w.URL
	}
	return w.URL + "*" + strconv.Itoa(w.Weight)
}

// ParseWeighted reads "URL*N", a URL with a trailing weight N (1 to
// MaxWeight), or a plain "URL" of weight 1. Everything after the last '*'
// is the weight, so a URL that holds a '*' itself must be given a weight
// ("http://a.example/x*y*1"). The URL is not validated here: Parse
// does that, and Store.Replace applies it before writing.
func ParseWeighted(arg string) (Weighted, error) {
	i := strings.LastIndexByte(arg, '*')
	if i < 0 {
		return Weighted{URL: arg, Weight: 1}, nil
	}
	n, digits := strconv.Atoi(arg[i+1:])
	if digits != nil || n < 1 || n > MaxWeight || strings.TrimLeft(arg[i+1:], "0123456789") != "" {
		return Weighted{}, fmt.Errorf("%w in %q: the part after the last * must be a whole number from 1 to %d", ErrInvalidWeight, arg, MaxWeight)
	}
	return Weighted{URL: arg[:i], Weight: n}, nil
}

// HasWeight reports whether arg carries a "*N" suffix (a valid one or not).
func HasWeight(arg string) bool { return strings.Contains(arg, "*") }

// Spread returns the order in which a rotation of ws serves its entries:
// each URL as many times as its weight, spread out. Copies of one URL given
// twice are added up; URLs of equal weight keep the order they were given
// in. separated reports whether no URL comes twice in a row, counting the
// wrap from the last entry back to the first; that is possible exactly when
// no URL has more than half of the total weight. When it is not, Spread
// still makes the fewest repeats there can be: the heaviest URL, h times out
// of n, follows itself 2h-n times per round and no other URL ever does.
//
// How: let m be the largest weight, held by URL A (the first of the
// heaviest). Write every entry in a row S, heaviest URL first, each URL's
// copies together: A A A B B C ... (n entries). Deal S into m columns, the
// i-th entry going to column i mod m; serve the columns one after another,
// each top to bottom. Then:
//
//   - every column starts with A (S starts with A's m copies), so A's turns
//     are evenly spaced: columns differ in length by at most one;
//   - two entries one below the other in a column are m apart in S, so they
//     are different URLs: equal ones would be a run of m+1 > m copies;
//   - if m ≤ n/2, the other n-m ≥ m entries give every column a second
//     entry, so each column ends with a URL other than A, and the next
//     column (or, at the wrap, the first) starts with A. So no URL comes
//     twice in a row anywhere in the cycle.
//
// If m > n/2, A must follow itself somewhere: each of the n-m other entries
// separates at most one pair of A's turns, out of m. Dealing them one per
// column leaves exactly 2m-n columns holding A alone, which is that bound.
//
// Dealing entry i to column i mod m would put the copies of a URL in
// neighbouring columns (B B B into columns 0, 1, 2, all near the start).
// So the residues are mapped to columns by a van der Corput permutation,
// which scatters any run of consecutive residues over the rotation; the
// argument above holds for any permutation, since each column still gets
// the entries of one residue in the order of S.
//
// For a, b, c of weights 2, 1, 1 the rotation serves a b a c: a comes
// every other turn and never twice in a row, also from the last turn to
// the first (a plain smooth weighted round robin serves a b c a, which
// repeats a at the wrap).
func Spread(ws []Weighted) (serve []string, separated bool) {
	// Add up repeated URLs, keeping the order of first appearance.
	var urls []string
	weight := map[string]int{}
	n := 0
	for _, w := range ws {
		if w.Weight < 1 {
			continue
		}
		if _, seen := weight[w.URL]; !seen {
			urls = append(urls, w.URL)
		}
		weight[w.URL] += w.Weight
		n += w.Weight
	}
	if n == 0 {
		return nil, true
	}
	// Heaviest first; equal weights keep their order.
	slices.SortStableFunc(urls, func(a, b string) int { return weight[b] - weight[a] })
	s := make([]string, 0, n)
	for _, u := range urls {
		for range weight[u] {
			s = append(s, u)
		}
	}
	m := weight[urls[0]]
	perm := vanDerCorput(m)
	columns := make([][]string, m)
	for i, u := range s {
		c := perm[i%m]
		columns[c] = append(columns[c], u)
	}
	serve = make([]string, 0, n)
	for _, col := range columns {
		serve = append(serve, col...)
	}
	return serve, 2*m <= n
}

// ListOrder returns the list to store for a rotation that serves entries in
// the order serve: LMOVE takes from the right, so the serve order is the
// list read from its end backwards, and the list is that order reversed.
// LRANGE then shows the next pick last, as for any list.
func ListOrder(serve []string) []string {
	list := slices.Clone(serve)
	slices.Reverse(list)
	return list
}

// vanDerCorput returns a permutation of 0..m-1 that sends i to the rank of
// the bit-reversed fraction of i among those of 0..m-1, so that any run of
// consecutive i lands on columns scattered over 0..m-1 (0, 2, 1, 3 for 4).
func vanDerCorput(m int) []int {
	idx := make([]int, m)
	for i := range idx {
		idx[i] = i
	}
	rev := func(i int) uint { return bits.Reverse(uint(i)) }
	slices.SortFunc(idx, func(a, b int) int {
		ra, rb := rev(a), rev(b)
		switch {
		case ra < rb:
			return -1
		case ra > rb:
			return 1
		}
		return 0
	})
	perm := make([]int, m)
	for rank, i := range idx {
		perm[i] = rank
	}
	return perm
}
