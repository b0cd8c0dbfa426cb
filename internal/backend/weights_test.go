package backend_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/spreadlb/spread/internal/backend"
)

func TestParseWeighted(t *testing.T) {
	good := []struct {
		arg  string
		want backend.Weighted
	}{
		{"http://a:5000", backend.Weighted{URL: "http://a:5000", Weight: 1}},
		{"http://a:5000*2", backend.Weighted{URL: "http://a:5000", Weight: 2}},
		{"http://a:5000*1", backend.Weighted{URL: "http://a:5000", Weight: 1}},
		{"http://a:5000*100", backend.Weighted{URL: "http://a:5000", Weight: 100}},
		{"http://a/x*y*3", backend.Weighted{URL: "http://a/x*y", Weight: 3}},
	}
	for _, tc := range good {
		got, err := backend.ParseWeighted(tc.arg)
		if err != nil || got != tc.want {
			t.Errorf("ParseWeighted(%q): got (%+v, %v), want %+v", tc.arg, got, err, tc.want)
		}
	}
	for _, arg := range []string{
		"http://a:5000*0", "http://a:5000*101", "http://a:5000*", "http://a:5000*x",
		"http://a:5000*-1", "http://a:5000*+2", "http://a:5000*2 ", "http://a:5000*1.5",
		"http://a/x*y", "*2x", "http://a:5000*99999999999999999999",
	} {
		_, err := backend.ParseWeighted(arg)
		if !errors.Is(err, backend.ErrInvalidWeight) || !strings.Contains(err.Error(), fmt.Sprintf("%q", arg)) {
			t.Errorf("ParseWeighted(%q): got %v, want ErrInvalidWeight naming the argument", arg, err)
		}
	}
}

// w builds a weighted list from "url*N" strings, for short tables.
func w(t *testing.T, args ...string) []backend.Weighted {
	t.Helper()
	var ws []backend.Weighted
	for _, a := range args {
		x, err := backend.ParseWeighted(a)
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, x)
	}
	return ws
}

func TestSpreadServesInThisOrder(t *testing.T) {
	tests := []struct {
		weights   []string
		want      string // the serve order, space-separated
		separated bool
	}{
		{[]string{"a*2", "b", "c"}, "a b a c", true}, // the example
		{[]string{"a", "b", "c"}, "a b c", true},
		{[]string{"b", "a*2", "c"}, "a b a c", true}, // heaviest first, then as given
		{[]string{"a*3", "b*3"}, "a b a b a b", true},
		{[]string{"a*2", "b*2", "c*2"}, "a b c a b c", true},
		{[]string{"a*3", "b", "c", "d"}, "a b a d a c", true},
		{[]string{"a*5", "b*3", "c*2"}, "a b a c a b a b a c", true},
		{[]string{"a", "a", "b*2"}, "a b a b", true}, // a URL given twice adds up
		{[]string{"a"}, "a", false},
		{[]string{"a*3"}, "a a a", false},
		{[]string{"a*3", "b"}, "a b a a", false}, // a must repeat: once, not more
		{[]string{"a*5", "b", "c"}, "a b a a a c a", false},
	}
	for _, tc := range tests {
		serve, separated := backend.Spread(w(t, tc.weights...))
		if got := strings.Join(serve, " "); got != tc.want || separated != tc.separated {
			t.Errorf("Spread(%q): got %q (separated %v), want %q (separated %v)", tc.weights, got, separated, tc.want, tc.separated)
		}
	}
}

// The list stored is the serve order reversed, because LMOVE takes from
// the right: LRANGE shows the next pick last.
func TestListOrderIsServeOrderReversed(t *testing.T) {
	serve, _ := backend.Spread(w(t, "a*2", "b", "c"))
	if got, want := backend.ListOrder(serve), []string{"c", "a", "b", "a"}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if !slices.Equal(serve, []string{"a", "b", "a", "c"}) {
		t.Errorf("ListOrder changed its argument: %q", serve)
	}
}

// Every combination of up to four URLs with weights up to 7 (and a few
// large ones): each URL is served exactly its weight; when no URL has more
// than half of the total, no URL is served twice in a row, counting the
// wrap; when one has more, only that one repeats, as few times as can be;
// and the heaviest URL's turns are evenly spaced (gaps differ by at most 1).
func TestSpreadProperties(t *testing.T) {
	names := []string{"a", "b", "c", "d"}
	var cases [][]int
	var gen func(prefix []int)
	gen = func(prefix []int) {
		if len(prefix) > 0 {
			cases = append(cases, slices.Clone(prefix))
		}
		if len(prefix) == len(names) {
			return
		}
		for wt := 1; wt <= 7; wt++ {
			gen(append(prefix, wt))
		}
	}
	gen(nil)
	cases = append(cases, []int{100, 100}, []int{100, 99, 1}, []int{100, 1, 1}, []int{50, 30, 20}, []int{37, 12, 12, 11, 2})
	for _, weights := range cases {
		var ws []backend.Weighted
		want := map[string]int{}
		total, heaviest, top := 0, "", 0
		for i, wt := range weights {
			name := fmt.Sprintf("u%d", i)
			ws = append(ws, backend.Weighted{URL: name, Weight: wt})
			want[name] = wt
			total += wt
			if wt > top {
				heaviest, top = name, wt
			}
		}
		serve, separated := backend.Spread(ws)
		got := map[string]int{}
		for _, u := range serve {
			got[u]++
		}
		if len(serve) != total || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("weights %v: got counts %v, want %v", weights, got, want)
			continue
		}
		possible := 2*top <= total
		if separated != possible {
			t.Errorf("weights %v: got separated %v, want %v", weights, separated, possible)
		}
		repeats := map[string]int{} // URL -> times it follows itself, cyclically
		var turns []int             // positions of the heaviest URL
		for i, u := range serve {
			if u == serve[(i+1)%total] {
				repeats[u]++
			}
			if u == heaviest {
				turns = append(turns, i)
			}
		}
		wantRepeats := map[string]int{}
		if !possible {
			wantRepeats[heaviest] = 2*top - total
		}
		if fmt.Sprint(repeats) != fmt.Sprint(wantRepeats) {
			t.Errorf("weights %v: serve %q: got repeats %v, want %v", weights, serve, repeats, wantRepeats)
		}
		lo, hi := total, 0
		for i, p := range turns {
			gap := (turns[(i+1)%len(turns)] - p + total) % total
			if len(turns) == 1 {
				gap = total
			}
			lo, hi = min(lo, gap), max(hi, gap)
		}
		if hi-lo > 1 {
			t.Errorf("weights %v: serve %q: the heaviest URL's gaps run from %d to %d, want them within 1", weights, serve, lo, hi)
		}
	}
}
