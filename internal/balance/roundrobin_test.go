package balance_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/spreadlb/spread/internal/pick"

	"github.com/spreadlb/spread/internal/balance"
	"github.com/spreadlb/spread/internal/pool"
)

// Local picks in the shared rotation's order, from its own snapshot, and
// never moves the list in Redis.
func TestLocalRotatesOverASnapshot(t *testing.T) {
	ctx := context.Background()
	s, srv := newStore(t)
	p := pool.New(s, 0, nil)
	l := balance.NewLocal(p)
	if _, err := l.Pick(ctx, nil); !errors.Is(err, pick.ErrUnavailable) {
		t.Errorf("before the first read: got %v, want ErrUnavailable", err)
	}
	if err := s.Replace(ctx, three); err != nil {
		t.Fatal(err)
	}
	if err := p.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	want := []string{three[2], three[1], three[0], three[2], three[1], three[0]}
	if got := picks(t, l, 6); !slices.Equal(got, want) {
		t.Errorf("picks: got %q, want %q", got, want)
	}
	if n := lmoveCalls(t, srv); n != 0 {
		t.Errorf("local mode made %d LMOVE calls, want 0", n)
	}
	if got, _ := s.Entries(ctx); !slices.Equal(got, three) {
		t.Errorf("list after local picks: got %q, want it unmoved, %q", got, three)
	}

	// A changed list is picked up at the next refresh, invalid entries
	// skipped; an unchanged one keeps the position.
	srv.Client.RPush(ctx, "servers", "javascript:alert(1)", "http://127.0.0.1:5003")
	if err := p.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	want = []string{"http://127.0.0.1:5003", three[2], three[1]}
	if got := picks(t, l, 3); !slices.Equal(got, want) {
		t.Errorf("picks after the list changed: got %q, want %q", got, want)
	}
	if err := p.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	want = []string{three[0], "http://127.0.0.1:5003"}
	if got := picks(t, l, 2); !slices.Equal(got, want) {
		t.Errorf("picks after an unchanged refresh: got %q, want %q", got, want)
	}
	// Five picks so far over four valid entries: the next is three[2], and
	// Entries shows it last, as LRANGE shows the shared rotation's next.
	want = []string{"http://127.0.0.1:5003", three[0], three[1], three[2]}
	if got, err := l.Rotation(ctx, 10); err != nil || !slices.Equal(got.Entries, want) || !got.Local || got.Len != 4 {
		t.Errorf("Rotation: got (%+v, %v), want %q of 4, local", got, err, want)
	}
	// The end of it only: the next two picks, the very next last.
	if got, err := l.Rotation(ctx, 2); err != nil || !slices.Equal(got.Entries, want[2:]) || got.Len != 4 {
		t.Errorf("Rotation(2): got (%+v, %v), want %q of 4", got, err, want[2:])
	}
	if got := picks(t, l, 1); got[0] != three[2] {
		t.Errorf("pick after Entries: got %q, want %q", got[0], three[2])
	}

	// An emptied list empties the rotation; a wrong type is reported.
	srv.Client.Del(ctx, "servers")
	if err := p.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Pick(ctx, nil); !errors.Is(err, pick.ErrNoBackends) {
		t.Errorf("emptied list: got %v, want ErrNoBackends", err)
	}
	srv.Client.Set(ctx, "servers", "x", 0)
	if err := p.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Pick(ctx, nil); !errors.Is(err, pick.ErrWrongType) {
		t.Errorf("string key: got %v, want ErrWrongType", err)
	}
	srv.Client.Del(ctx, "servers")
	srv.Client.RPush(ctx, "servers", "ftp://x")
	if err := p.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Pick(ctx, nil); !errors.Is(err, pick.ErrNoValidBackend) {
		t.Errorf("only invalid entries: got %v, want ErrNoValidBackend", err)
	}
}

// While Redis does not answer, Local keeps picking over the last snapshot.
func TestLocalKeepsItsSnapshotWhenRedisIsGone(t *testing.T) {
	ctx := context.Background()
	s, srv := seededStore(t)
	p := pool.New(s, 0, nil)
	l := balance.NewLocal(p)
	if err := p.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	if err := p.Refresh(ctx); !errors.Is(err, pick.ErrUnavailable) {
		t.Errorf("refresh with Redis stopped: got %v, want ErrUnavailable", err)
	}
	want := []string{three[2], three[1], three[0]}
	if got := picks(t, l, 3); !slices.Equal(got, want) {
		t.Errorf("picks with Redis stopped: got %q, want %q", got, want)
	}
}

func TestLocalConcurrentPicksAreExact(t *testing.T) {
	ctx := context.Background()
	s, _ := seededStore(t)
	p := pool.New(s, 0, nil)
	l := balance.NewLocal(p)
	if err := p.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	counts := concurrentPicks(t, l, 30, 10)
	for _, b := range three {
		if counts[b] != 100 {
			t.Errorf("%s: got %d picks, want 100 (all: %v)", b, counts[b], counts)
		}
	}
}

// Local leaves down entries out of its snapshot too.
func TestLocalSkipsDownEntries(t *testing.T) {
	ctx := context.Background()
	s, srv := seededStore(t)
	srv.Client.SAdd(ctx, s.DownKey(), three[2])
	p := pool.New(s, 0, nil)
	l := balance.NewLocal(p)
	if err := p.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := picks(t, l, 4), []string{three[1], three[0], three[1], three[0]}; !slices.Equal(got, want) {
		t.Errorf("picks: got %q, want %q", got, want)
	}
	srv.Client.SAdd(ctx, s.DownKey(), three[0], three[1])
	if err := p.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Pick(ctx, nil); !errors.Is(err, pick.ErrAllDown) {
		t.Errorf("all down: got %v, want ErrAllDown", err)
	}
	srv.Client.Del(ctx, s.DownKey())
	if err := p.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := picks(t, l, 3), []string{three[2], three[1], three[0]}; !slices.Equal(got, want) {
		t.Errorf("picks once back up: got %q, want %q", got, want)
	}
	if n, ok := p.Len(); n != 3 || !ok {
		t.Errorf("Len: got (%d, %v), want (3, true)", n, ok)
	}
	// A down set of the wrong type reads as empty.
	srv.Client.Set(ctx, s.DownKey(), "x", 0)
	srv.Client.LPush(ctx, "servers", "http://127.0.0.1:5003")
	if err := p.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got := picks(t, l, 4); len(slices.Compact(slices.Sorted(slices.Values(got)))) != 4 {
		t.Errorf("picks with a down set of the wrong type: got %q, want all four entries", got)
	}
}
