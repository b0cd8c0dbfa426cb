package main

import (
	"context"
	"strings"
	"testing"

	"github.com/spreadlb/spread/internal/redistest"
	"github.com/spreadlb/spread/internal/store"
)

// seeder strategy stores a strategy for every dispatcher, prints it, and
// clears it; a name or setting no dispatcher could run is refused with
// exit status 2, and nothing is stored.
func TestStrategyCommand(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	ctx := context.Background()
	st := store.NewStore(srv.Client, "servers", nil)
	stored := func() (store.StoredStrategy, bool) {
		t.Helper()
		s, _, ok, err := st.Strategy(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return s, ok
	}

	if out, err := seeder(t, srv, nil, "strategy"); err != nil || !strings.Contains(out, "none stored") {
		t.Errorf("strategy with none stored: got (%q, %v), want none stored", out, err)
	}
	for _, bad := range [][]string{
		{"strategy", "fastest"},
		{"strategy", "hash", "HASH_KEY=body:x"},
		{"strategy", "hash", "ROTATION=local"},
		{"strategy", "hash", "HASH_KEY"},
		{"strategy", "--clear", "now"},
	} {
		out, err := seeder(t, srv, nil, bad...)
		if err == nil || exitCode(err) != exitUsage {
			t.Errorf("%q: got (%q, %v), want exit status 2", bad, out, err)
		}
		if _, ok := stored(); ok {
			t.Fatalf("%q stored a strategy, want nothing stored", bad)
		}
	}

	out, err := seeder(t, srv, nil, "strategy", "hash", "HASH_KEY=header:X-User")
	if err != nil || !strings.Contains(out, "runs hash HASH_KEY=header:X-User within a second") {
		t.Fatalf("strategy hash: got (%q, %v)", out, err)
	}
	if s, ok := stored(); !ok || s.Name != "hash" || s.Settings["HASH_KEY"] != "header:X-User" || s.By != "seeder" {
		t.Errorf("stored: got %+v (%v), want hash with HASH_KEY=header:X-User by seeder", s, ok)
	}
	if out, err := seeder(t, srv, nil, "strategy"); err != nil || !strings.HasPrefix(out, "hash HASH_KEY=header:X-User\nstored by seeder at ") {
		t.Errorf("strategy: got (%q, %v), want it printed as typed, then who stored it", out, err)
	}
	if out, err := seeder(t, srv, nil, "strategy", "least-conn"); err != nil || !strings.Contains(out, "MODE=redirect refuse it") {
		t.Errorf("strategy least-conn: got (%q, %v), want it stored, with a note on redirecting dispatchers", out, err)
	}
	if out, err := seeder(t, srv, nil, "strategy", "--clear"); err != nil || !strings.HasPrefix(out, "cleared") {
		t.Errorf("strategy --clear: got (%q, %v), want cleared", out, err)
	}
	if _, ok := stored(); ok {
		t.Error("after --clear a strategy is still stored")
	}
	if out, err := seeder(t, srv, nil, "strategy", "--clear"); err != nil || !strings.Contains(out, "no strategy was stored") {
		t.Errorf("strategy --clear again: got (%q, %v), want no strategy was stored", out, err)
	}
}
