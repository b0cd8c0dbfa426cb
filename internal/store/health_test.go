package store_test

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strconv"
	"testing"

	"github.com/spreadlb/spread/internal/pick"
)

// Down entries are stepped over inside the rotation step: the healthy
// entries keep an exact round robin, and the list keeps its members and
// order.
func TestNextStepsOverDownEntries(t *testing.T) {
	ctx := context.Background()
	s, srv := newStore(t)
	four := append(slices.Clone(three), "http://127.0.0.1:5003")
	if err := s.Replace(ctx, four); err != nil {
		t.Fatal(err)
	}
	srv.Client.SAdd(ctx, s.DownKey(), four[1], four[3])

	counts := concurrentPicks(t, rot(s), 20, 10)
	want := map[string]int{four[0]: 100, four[2]: 100}
	if !maps.Equal(counts, want) {
		t.Errorf("picks with two of four entries down: got %v, want %v", counts, want)
	}
	got, _ := s.Entries(ctx)
	if !slices.Equal(got, four) {
		t.Errorf("list after 200 picks (two full turns of four each): got %q, want %q", got, four)
	}
	tally, _ := s.Tally(ctx)
	if want := map[string]int64{four[0]: 100, four[2]: 100}; !maps.Equal(tally, want) {
		t.Errorf("tally: got %v, want only the picks %v", tally, want)
	}

	// Every entry down: 503's error, and the list is as it was.
	srv.Client.SAdd(ctx, s.DownKey(), four[0], four[2])
	if _, err := rot(s).Next(ctx); !errors.Is(err, pick.ErrAllDown) {
		t.Errorf("all down: got %v, want pick.ErrAllDown", err)
	}
	if got, _ := s.Entries(ctx); !slices.Equal(got, four) {
		t.Errorf("list after an all-down pick: got %q, want %q", got, four)
	}
	// A down set of the wrong type is ignored.
	srv.Client.Del(ctx, s.DownKey())
	srv.Client.Set(ctx, s.DownKey(), "x", 0)
	expectPicks(t, s, []string{four[3], four[2], four[1], four[0]})
}

// A pick with nothing down is one LMOVE, as before health checks.
func TestNextWithNothingDownIsOneLMOVE(t *testing.T) {
	ctx := context.Background()
	s, srv := seededStore(t)
	expectPicks(t, s, []string{three[2], three[1], three[0]})
	if n := lmoveCalls(t, srv); n != 3 {
		t.Errorf("got %d LMOVE calls for 3 picks, want 3", n)
	}
	srv.Client.SAdd(ctx, s.DownKey(), three[1])
	expectPicks(t, s, []string{three[2], three[0]})
	if n := lmoveCalls(t, srv); n != 6 {
		t.Errorf("got %d LMOVE calls after 2 more picks, one over a down entry, want 6", n)
	}
}

// Invalid entries met once are stepped over inside the rotation step after
// that: under concurrency a pick does not meet them again and again while
// the others move the list, so no pick gives up on a list that has valid
// entries, and the valid ones share the turns exactly.
func TestInvalidEntriesAreSkippedInTheStep(t *testing.T) {
	ctx := context.Background()
	s, srv := newStore(t)
	list := []string{three[0]}
	for i := range 5 {
		list = append(list, "javascript:alert("+strconv.Itoa(i)+")")
	}
	list = append(list, three[1])
	for i := range 5 {
		list = append(list, "//evil"+strconv.Itoa(i)+".example")
	}
	list = append(list, three[2])
	if err := srv.Client.RPush(ctx, "servers", list).Err(); err != nil {
		t.Fatal(err)
	}
	counts := concurrentPicks(t, rot(s), 30, 10)
	if want := map[string]int{three[0]: 100, three[1]: 100, three[2]: 100}; !maps.Equal(counts, want) {
		t.Errorf("300 picks: got %v, want %v", counts, want)
	}
	// 100 turns of the 13 entries: each LMOVE is a pick or a skip.
	if n := lmoveCalls(t, srv); n != 1300 {
		t.Errorf("got %d LMOVE calls, want 1300 (100 turns of 13 entries)", n)
	}
	if n := rot(s).Skipped(); n != 1000 {
		t.Errorf("Skipped: got %d, want 1000 (10 invalid entries, 100 turns)", n)
	}
	if got, _ := s.Entries(ctx); !slices.Equal(got, list) {
		t.Errorf("the list after 100 turns: got %q, want it as it was", got)
	}

	// Only invalid entries: pick.ErrNoValidBackend, not a loop.
	srv.Client.Del(ctx, "servers")
	srv.Client.RPush(ctx, "servers", list[1], list[7])
	if _, err := rot(s).Next(ctx); !errors.Is(err, pick.ErrNoValidBackend) {
		t.Errorf("only known-invalid entries: got %v, want pick.ErrNoValidBackend", err)
	}
	// Invalid and down entries only: all down.
	srv.Client.RPush(ctx, "servers", three[0])
	srv.Client.SAdd(ctx, s.DownKey(), three[0])
	if _, err := rot(s).Next(ctx); !errors.Is(err, pick.ErrAllDown) {
		t.Errorf("invalid and down entries only: got %v, want pick.ErrAllDown", err)
	}
}
