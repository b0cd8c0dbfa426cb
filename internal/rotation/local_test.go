package rotation_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/spreadlb/spread/internal/rotation"
)

func localPicks(t *testing.T, l *rotation.Local, n int) []string {
	t.Helper()
	var got []string
	for range n {
		u, err := l.Next(context.Background())
		if err != nil {
			t.Fatalf("pick %d: %v", len(got), err)
		}
		got = append(got, u.String())
	}
	return got
}

// Local picks in the shared rotation's order, from its own snapshot, and
// never moves the list in Redis.
func TestLocalRotatesOverASnapshot(t *testing.T) {
	ctx := context.Background()
	s, srv := newStore(t)
	l := rotation.NewLocal(s, 0)
	if _, err := l.Next(ctx); !errors.Is(err, rotation.ErrUnavailable) {
		t.Errorf("before the first read: got %v, want ErrUnavailable", err)
	}
	if err := s.Replace(ctx, three); err != nil {
		t.Fatal(err)
	}
	if err := l.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	want := []string{three[2], three[1], three[0], three[2], three[1], three[0]}
	if got := localPicks(t, l, 6); !slices.Equal(got, want) {
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
	if err := l.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	want = []string{"http://127.0.0.1:5003", three[2], three[1]}
	if got := localPicks(t, l, 3); !slices.Equal(got, want) {
		t.Errorf("picks after the list changed: got %q, want %q", got, want)
	}
	if err := l.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	want = []string{three[0], "http://127.0.0.1:5003"}
	if got := localPicks(t, l, 2); !slices.Equal(got, want) {
		t.Errorf("picks after an unchanged refresh: got %q, want %q", got, want)
	}
	// Five picks so far over four valid entries: the next is three[2], and
	// Entries shows it last, as LRANGE shows the shared rotation's next.
	want = []string{"http://127.0.0.1:5003", three[0], three[1], three[2]}
	if got, err := l.Entries(ctx); err != nil || !slices.Equal(got, want) {
		t.Errorf("Entries: got (%q, %v), want %q", got, err, want)
	}
	if got := localPicks(t, l, 1); got[0] != three[2] {
		t.Errorf("pick after Entries: got %q, want %q", got[0], three[2])
	}

	// An emptied list empties the rotation; a wrong type is reported.
	srv.Client.Del(ctx, "servers")
	if err := l.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Next(ctx); !errors.Is(err, rotation.ErrNoBackends) {
		t.Errorf("emptied list: got %v, want ErrNoBackends", err)
	}
	srv.Client.Set(ctx, "servers", "x", 0)
	if err := l.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Next(ctx); !errors.Is(err, rotation.ErrWrongType) {
		t.Errorf("string key: got %v, want ErrWrongType", err)
	}
	srv.Client.Del(ctx, "servers")
	srv.Client.RPush(ctx, "servers", "ftp://x")
	if err := l.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Next(ctx); !errors.Is(err, rotation.ErrNoValidBackend) {
		t.Errorf("only invalid entries: got %v, want ErrNoValidBackend", err)
	}
}

// While Redis does not answer, Local keeps picking over the last snapshot.
func TestLocalKeepsItsSnapshotWhenRedisIsGone(t *testing.T) {
	ctx := context.Background()
	s, srv := seededStore(t)
	l := rotation.NewLocal(s, 0)
	if err := l.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	if err := l.Refresh(ctx); !errors.Is(err, rotation.ErrUnavailable) {
		t.Errorf("refresh with Redis stopped: got %v, want ErrUnavailable", err)
	}
	want := []string{three[2], three[1], three[0]}
	if got := localPicks(t, l, 3); !slices.Equal(got, want) {
		t.Errorf("picks with Redis stopped: got %q, want %q", got, want)
	}
}

func TestLocalConcurrentPicksAreExact(t *testing.T) {
	ctx := context.Background()
	s, _ := seededStore(t)
	l := rotation.NewLocal(s, 0)
	if err := l.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	counts := concurrentPicks(t, l, 30, 10)
	for _, b := range three {
		if counts[b] != 100 {
			t.Errorf("%s: got %d picks, want 100 (all: %v)", b, counts[b], counts)
		}
	}
}
