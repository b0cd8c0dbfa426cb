package main

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/spreadlb/spread/internal/redistest"
	"github.com/spreadlb/spread/internal/store"
)

// URL*N seeds a weighted rotation: the list holds each URL N times, ordered
// so that the rotation serves a b a c for weights 2:1:1; LRANGE shows that
// order reversed (the next pick last), and the dispatcher's steps follow it.
func TestSeedWeights(t *testing.T) {
	const a, b, c = "http://a.example:5000", "http://b.example:5001", "http://c.example:5002"
	tests := []struct {
		name  string
		env   map[string]string
		args  []string
		list  []string // LRANGE
		serve []string // what 8 rotation steps land on
		note  bool     // the seeder says a URL must repeat
	}{
		{"2:1:1 serves a b a c", nil, []string{"seed", a + "*2", b, c},
			[]string{c, a, b, a}, []string{a, b, a, c, a, b, a, c}, false},
		{"*1 everywhere serves in the order given", nil, []string{a + "*1", b + "*1", c + "*1"},
			[]string{c, b, a}, []string{a, b, c, a, b, c, a, b}, false},
		{"weights in SERVERS", map[string]string{"SERVERS": b + "*3," + a + "*3"}, []string{"seed"},
			[]string{a, b, a, b, a, b}, []string{b, a, b, a, b, a, b, a}, false},
		{"more than half: a note, and a repeats once", nil, []string{a + "*3", b},
			[]string{a, a, b, a}, []string{a, b, a, a, a, b, a, a}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t)
			out, err := seeder(t, srv, tc.env, tc.args...)
			if err != nil {
				t.Fatalf("seeder %q: %v", tc.args, err)
			}
			if got := lrange(t, srv); !slices.Equal(got, tc.list) {
				t.Errorf("LRANGE: got %q, want %q", got, tc.list)
			}
			if !strings.HasSuffix(out, strings.Join(tc.list, "\n")+"\n") {
				t.Errorf("output %q does not end with the list %q", out, tc.list)
			}
			if got := strings.Contains(out, "must come twice in a row"); got != tc.note {
				t.Errorf("output %q: got a note on repeats %v, want %v", out, got, tc.note)
			}
			rot := store.NewRotation(store.NewStore(srv.Client, "servers", nil))
			var served []string
			for range len(tc.serve) {
				u, err := rot.Next(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				served = append(served, u.String())
			}
			if !slices.Equal(served, tc.serve) {
				t.Errorf("rotation steps: got %q, want %q", served, tc.serve)
			}
		})
	}
}
