package pool_test

import (
	"context"
	"errors"
	"maps"
	"slices"
	"testing"

	"github.com/spreadlb/spread/internal/pick"

	"github.com/spreadlb/spread/internal/pool"
	"github.com/spreadlb/spread/internal/redistest"
	"github.com/spreadlb/spread/internal/store"
)

// The pool decides what is eligible: valid entries not marked down, in
// the shared rotation's pick order, repeats kept; and why nothing is.
func TestEligible(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	s := store.NewStore(srv.Client, "servers", nil)
	p := pool.New(s, 0, nil)
	if _, err := p.Eligible(); !errors.Is(err, pool.ErrNoSnapshot) || !errors.Is(err, pick.ErrUnavailable) {
		t.Errorf("before the first read: got %v, want ErrNoSnapshot", err)
	}
	a, b, c := "http://127.0.0.1:5000", "http://127.0.0.1:5001", "http://127.0.0.1:5002"
	srv.Client.RPush(ctx, "servers", a, "ftp://x", b, a, c)
	srv.Client.SAdd(ctx, s.DownKey(), b)
	if err := p.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := p.Eligible()
	if err != nil {
		t.Fatal(err)
	}
	var raw []string
	for _, e := range got {
		raw = append(raw, e.Raw)
		if e.URL.String() != e.Raw {
			t.Errorf("entry %q parsed as %q", e.Raw, e.URL)
		}
	}
	if want := []string{c, a, a}; !slices.Equal(raw, want) {
		t.Errorf("eligible: got %q, want %q (last entry first, the invalid and the down one left out)", raw, want)
	}
	if up, ok := p.Health(); !ok || !maps.Equal(up, map[string]bool{a: true, b: false, c: true}) {
		t.Errorf("Health: got (%v, %v)", up, ok)
	}
	if n, ok := p.Len(); n != 5 || !ok {
		t.Errorf("Len: got (%d, %v), want (5, true)", n, ok)
	}

	for _, tc := range []struct {
		name  string
		setup func()
		want  error
	}{
		{"every valid entry down", func() { srv.Client.SAdd(ctx, s.DownKey(), a, c) }, pick.ErrAllDown},
		{"only invalid entries", func() { srv.Client.Del(ctx, "servers"); srv.Client.RPush(ctx, "servers", "ftp://x") }, pick.ErrNoValidBackend},
		{"empty", func() { srv.Client.Del(ctx, "servers") }, pick.ErrNoBackends},
		{"not a list", func() { srv.Client.Set(ctx, "servers", "x", 0) }, pick.ErrWrongType},
	} {
		tc.setup()
		if err := p.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Eligible(); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
}
