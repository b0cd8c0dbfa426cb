package balance_test

import (
	"context"
	"net/http"
	"slices"
	"testing"

	"github.com/spreadlb/spread/internal/balance"
)

// loadCases are the strategies that weigh backends by their requests in
// flight per unit of weight, with every setting that changes how they do
// it.
var loadCases = []struct {
	name string
	set  map[string]string
}{
	{"least-conn", nil},
	{"least-conn", map[string]string{"LEAST_CONN_SCOPE": "local"}},
	{"p2c", nil},
}

// At low load, one request at a time (each over before the next), every
// backend has 0 requests in flight at every pick, and the weights must
// still hold: with a list holding A twice and B once, A gets two thirds of
// the requests.
func TestWeightsHoldAtLowLoad(t *testing.T) {
	ctx := context.Background()
	s, srv := newStore(t)
	a, b := three[0], three[1]
	for _, c := range loadCases {
		srv.Client.FlushAll(ctx) // each case afresh
		if err := s.Replace(ctx, []string{a, a, b}); err != nil {
			t.Fatal(err)
		}
		label := c.name + describeSettings(c.set)
		p := newStrategy(t, c.name, c.set, env(s, readPool(t, s), label))
		n := map[string]int{}
		for i := range 300 {
			got, err := p.Pick(ctx, get())
			if err != nil {
				t.Fatalf("%s: pick %d: %v", label, i, err)
			}
			n[got.URL.String()]++
			got.Done(balance.Result{Status: http.StatusOK})
		}
		t.Logf("%s, one request at a time: %s (weight 2) got %d of 300, %s (weight 1) %d", label, a, n[a], b, n[b])
		if n[a] < 170 || n[a] > 230 || n[a]+n[b] != 300 {
			t.Errorf("%s, one request at a time over %s (weight 2) and %s (weight 1): got %v, want about 200 of 300 on %s (170 to 230) and the rest on %s",
				label, a, b, n, a, b)
		}
	}
}

// With equal weights and nothing in flight, least-conn, shared or local,
// rotates exactly: each backend in turn, in pick order.
func TestLeastConnIdleRotatesExactly(t *testing.T) {
	ctx := context.Background()
	s, srv := newStore(t)
	for _, c := range loadCases[:2] {
		srv.Client.FlushAll(ctx)
		if err := s.Replace(ctx, three); err != nil {
			t.Fatal(err)
		}
		label := c.name + describeSettings(c.set)
		p := newStrategy(t, c.name, c.set, env(s, readPool(t, s), label))
		var got []string
		for range 9 {
			b, err := p.Pick(ctx, get())
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, b.URL.String())
			b.Done(balance.Result{Status: http.StatusOK})
		}
		want := []string{three[2], three[1], three[0], three[2], three[1], three[0], three[2], three[1], three[0]}
		if !slices.Equal(got, want) {
			t.Errorf("%s, idle: got %q, want the rotation %q", label, got, want)
		}
	}
}

// The shared script and LEAST_CONN_SCOPE=local break ties alike: over a
// list of weights 3, 1 and 2, idle, both take the same backends in the same
// order, each as often as its weight, and evenly spread.
func TestLeastConnWeightedRotationIsTheSameSharedAndLocal(t *testing.T) {
	ctx := context.Background()
	s, srv := newStore(t)
	list := []string{three[0], three[1], three[0], three[2], three[0], three[2]}
	var orders [][]string
	for _, c := range loadCases[:2] {
		srv.Client.FlushAll(ctx)
		if err := s.Replace(ctx, list); err != nil {
			t.Fatal(err)
		}
		label := c.name + describeSettings(c.set)
		p := newStrategy(t, c.name, c.set, env(s, readPool(t, s), label))
		var got []string
		n := map[string]int{}
		for range 60 {
			b, err := p.Pick(ctx, get())
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, b.URL.String())
			n[b.URL.String()]++
			b.Done(balance.Result{Status: http.StatusOK})
		}
		if n[three[0]] != 30 || n[three[1]] != 10 || n[three[2]] != 20 {
			t.Errorf("%s, 60 idle picks over weights 3, 1, 2: got %v, want 30, 10 and 20", label, n)
		}
		for i := 0; i+6 <= len(got); i += 6 {
			if w := got[i : i+6]; slices.Index(w, three[1]) < 0 {
				t.Errorf("%s: picks %d to %d leave out %s (weight 1 of 6): %q", label, i, i+5, three[1], w)
			}
		}
		orders = append(orders, got)
	}
	if !slices.Equal(orders[0], orders[1]) {
		t.Errorf("idle picks, shared: %q\nlocal: %q\nwant the same order", orders[0], orders[1])
	}
}
