package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/spreadlb/spread/internal/backend"
)

// weighted is what `seeder seed` writes for arguments of which at least one
// has a weight, "URL*N" (1 ≤ N ≤ 100; a URL without one weighs 1): the
// list to store, and what to tell the user about it.
type weighted struct {
	list      []string // the list as LRANGE will show it: the serve order reversed
	serve     []string // the order the rotation serves the entries in
	separated bool     // no URL comes twice in a row, wrap included
	heaviest  string   // the URL that repeats when separated is false
}

// hasWeights reports whether any argument has a "*N" suffix: then the
// seeder, not the order of the arguments, orders the list.
func hasWeights(args []string) bool {
	return slices.ContainsFunc(args, backend.HasWeight)
}

// weigh parses every argument as URL or URL*N, normalizes each URL (so that
// two spellings of one backend add their weights) and spreads the entries
// with backend.Spread. A bad weight is an error naming its argument; the
// URLs themselves are validated by parseSeed.
func weigh(args []string) (weighted, error) {
	var ws []backend.Weighted
	for _, a := range args {
		w, err := backend.ParseWeighted(a)
		if err != nil {
			return weighted{}, err
		}
		w.URL = normalize(w.URL)
		ws = append(ws, w)
	}
	serve, separated := backend.Spread(ws)
	return weighted{list: backend.ListOrder(serve), serve: serve, separated: separated, heaviest: serve[0]}, nil
}

// describe is what `seed` prints about a weighted list written at key.
func (w weighted) describe(key string) string {
	urls := len(slices.Compact(slices.Sorted(slices.Values(w.serve))))
	s := fmt.Sprintf("seeded %q with %s for %s\n", key, count(len(w.serve), "entry", "entries"), count(urls, "weighted URL", "weighted URLs"))
	s += fmt.Sprintf("the rotation serves %s, then again", strings.Join(w.serve, " "))
	if !w.separated && urls > 1 {
		s += fmt.Sprintf("\nnote: %s has more than half of the weight, so it must come twice in a row somewhere; the order above repeats it as little as possible", w.heaviest)
	}
	return s
}
