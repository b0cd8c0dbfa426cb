package store_test

import (
	"context"
	"errors"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/spreadlb/spread/internal/pick"

	"github.com/spreadlb/spread/internal/backend"
	"github.com/spreadlb/spread/internal/redistest"
	"github.com/spreadlb/spread/internal/store"
)

var three = []string{"http://127.0.0.1:5000", "http://127.0.0.1:5001", "http://127.0.0.1:5002"}

func newStore(t *testing.T) (*store.Store, *redistest.Server) {
	t.Helper()
	srv := redistest.Start(t)
	return store.NewStore(srv.Client, "servers", nil), srv
}

// rotations holds each test Store's Rotation, made on first use (after
// any SetStepTimeout), so that its counts add up across a test.
var rotations sync.Map

// rot is s's Rotation.
func rot(s *store.Store) *store.Rotation {
	r, _ := rotations.LoadOrStore(s, store.NewRotation(s))
	return r.(*store.Rotation)
}

// seededStore is newStore with the list seeded with three.
func seededStore(t *testing.T) (*store.Store, *redistest.Server) {
	t.Helper()
	s, srv := newStore(t)
	if err := s.Replace(context.Background(), three); err != nil {
		t.Fatal(err)
	}
	return s, srv
}

// concurrentPicks takes each picks from p in each of clients goroutines at
// once and counts them per backend.
func concurrentPicks(t *testing.T, p interface {
	Next(context.Context) (*url.URL, error)
}, clients, each int) map[string]int {
	t.Helper()
	var mu sync.Mutex
	counts := map[string]int{}
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for range each {
				u, err := p.Next(context.Background())
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				counts[u.String()]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return counts
}

// expectPicks takes len(want) picks and checks each.
func expectPicks(t *testing.T, s *store.Store, want []string) {
	t.Helper()
	for i, w := range want {
		u, err := rot(s).Next(context.Background())
		if err != nil {
			t.Fatalf("pick %d: %v", i, err)
		}
		if got := u.String(); got != w {
			t.Errorf("pick %d: got %q, want %q", i, got, w)
		}
	}
}

func TestReplaceAndNextRotateFromTheRight(t *testing.T) {
	ctx := context.Background()
	s, srv := seededStore(t)
	// LMOVE servers servers RIGHT LEFT takes the last entry first.
	want := []string{three[2], three[1], three[0], three[2], three[1], three[0]}
	expectPicks(t, s, want)
	// Two full turns leave the list as seeded.
	got, err := srv.Client.LRange(ctx, "servers", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, three) {
		t.Errorf("LRANGE after two turns: got %q, want %q", got, three)
	}
	calls, err := srv.Client.Info(ctx, "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(calls, "cmdstat_lmove:calls=6,") {
		t.Errorf("want exactly 6 LMOVE calls in INFO commandstats, got:\n%s", calls)
	}
}

// On a Redis older than 6.2 there is no LMOVE: the store falls back to
// RPOPLPUSH, the same step under its old name. Renaming LMOVE away makes
// today's server answer as an old one does.
func TestFallbackToRPOPLPUSH(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t, "--rename-command", "LMOVE", "")
	s := store.NewStore(srv.Client, "servers", nil)
	if err := s.Replace(ctx, three); err != nil {
		t.Fatal(err)
	}
	errorsBefore := errorCount(t, srv)
	want := []string{three[2], three[1], three[0], three[2]}
	expectPicks(t, s, want)
	calls, err := srv.Client.Info(ctx, "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(calls, "cmdstat_rpoplpush:calls=4,") {
		t.Errorf("want exactly 4 RPOPLPUSH calls, got:\n%s", calls)
	}
	// The first LMOVE is refused, and LMOVE is not tried again.
	if n := errorCount(t, srv) - errorsBefore; n != 1 {
		t.Errorf("got %d refused commands during 4 picks, want 1", n)
	}
}

// errorCount is how many commands the server has answered with an ERR.
func errorCount(t *testing.T, srv *redistest.Server) int {
	t.Helper()
	info, err := srv.Client.Info(context.Background(), "errorstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	_, after, _ := strings.Cut(info, "errorstat_ERR:count=")
	n, _ := strconv.Atoi(strings.TrimSpace(strings.SplitN(after, "\n", 2)[0]))
	return n
}

func TestReplaceIsIdempotentAndAllOrNothing(t *testing.T) {
	ctx := context.Background()
	s, srv := newStore(t)
	for range 2 {
		if err := s.Replace(ctx, three); err != nil {
			t.Fatal(err)
		}
	}
	bad := []string{"http://127.0.0.1:6000", "javascript:alert(1)"}
	if err := s.Replace(ctx, bad); !errors.Is(err, backend.ErrInvalidURL) {
		t.Fatalf("Replace with a bad URL: got %v, want ErrInvalidURL", err)
	}
	if err := s.Replace(ctx, nil); !errors.Is(err, store.ErrNoURLs) {
		t.Fatalf("Replace with nothing: got %v, want ErrNoURLs", err)
	}
	got, _ := srv.Client.LRange(ctx, "servers", 0, -1).Result()
	if !slices.Equal(got, three) {
		t.Errorf("list after rejected writes: got %q, want %q", got, three)
	}
}

func TestAddRemove(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	if err := s.Replace(ctx, three[:2]); err != nil {
		t.Fatal(err)
	}
	n, err := s.Add(ctx, three[2])
	if err != nil || n != 3 {
		t.Fatalf("Add: got (%d, %v), want (3, nil)", n, err)
	}
	if _, err := s.Add(ctx, "//evil.example"); !errors.Is(err, backend.ErrInvalidURL) {
		t.Errorf("Add of a scheme-relative URL: got %v, want ErrInvalidURL", err)
	}
	// The added entry is the next pick.
	u, err := rot(s).Next(ctx)
	if err != nil || u.String() != three[2] {
		t.Errorf("Next after Add: got (%v, %v), want %q", u, err, three[2])
	}
	removed, err := s.Remove(ctx, three[0])
	if err != nil || removed != 1 {
		t.Errorf("Remove: got (%d, %v), want (1, nil)", removed, err)
	}
	if _, err := s.Remove(ctx, three[0]); !errors.Is(err, store.ErrNotInList) {
		t.Errorf("Remove of a missing entry: got %v, want ErrNotInList", err)
	}
	entries, _ := s.Entries(ctx)
	if want := []string{three[2], three[1]}; !slices.Equal(entries, want) {
		t.Errorf("Entries: got %q, want %q", entries, want)
	}
}

func TestNextErrors(t *testing.T) {
	ctx := context.Background()
	s, srv := newStore(t)

	if _, err := rot(s).Next(ctx); !errors.Is(err, pick.ErrNoBackends) {
		t.Errorf("missing key: got %v, want pick.ErrNoBackends", err)
	}
	srv.Client.Set(ctx, "servers", "not a list", 0)
	if _, err := rot(s).Next(ctx); !errors.Is(err, pick.ErrWrongType) {
		t.Errorf("string key: got %v, want pick.ErrWrongType", err)
	}
	srv.Client.Del(ctx, "servers")
	srv.Client.RPush(ctx, "servers", "javascript:alert(1)", "http://ok.example:5000", "//evil.example")
	for i := range 4 {
		u, err := rot(s).Next(ctx)
		if err != nil || u.String() != "http://ok.example:5000" {
			t.Errorf("poisoned list, pick %d: got (%v, %v), want only the valid entry", i, u, err)
		}
	}
	if n, _ := srv.Client.LLen(ctx, "servers").Result(); n != 3 {
		t.Errorf("skipping must not remove entries: got length %d, want 3", n)
	}
	srv.Client.Del(ctx, "servers")
	srv.Client.RPush(ctx, "servers", "javascript:alert(1)", "ftp://x")
	if _, err := rot(s).Next(ctx); !errors.Is(err, pick.ErrNoValidBackend) {
		t.Errorf("all entries invalid: got %v, want pick.ErrNoValidBackend", err)
	}
	srv.Stop()
	if _, err := rot(s).Next(ctx); !errors.Is(err, pick.ErrUnavailable) {
		t.Errorf("redis stopped: got %v, want pick.ErrUnavailable", err)
	}
}

// Concurrent picks from many goroutines (as from many dispatchers) still
// share one exact round robin.
func TestConcurrentPicksAreExact(t *testing.T) {
	s, _ := seededStore(t)
	counts := concurrentPicks(t, rot(s), 30, 10)
	for _, b := range three {
		if counts[b] != 100 {
			t.Errorf("%s: got %d picks, want 100 (all: %v)", b, counts[b], counts)
		}
	}
}
