package store_test

import (
	"context"
	"errors"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/spreadlb/spread/internal/pick"

	"github.com/spreadlb/spread/internal/redistest"
	"github.com/spreadlb/spread/internal/store"
)

// pauseWrites makes Redis hold every script until the returned function
// runs, so that a test can line picks up behind a round trip in flight.
func pauseWrites(t *testing.T, srv *redistest.Server) (unpause func()) {
	t.Helper()
	ctx := context.Background()
	if err := srv.Client.Do(ctx, "CLIENT", "PAUSE", 20000, "WRITE").Err(); err != nil {
		t.Fatal(err)
	}
	once := sync.OnceFunc(func() {
		if err := srv.Client.Do(ctx, "CLIENT", "UNPAUSE").Err(); err != nil {
			t.Error(err)
		}
	})
	t.Cleanup(once)
	return once
}

// waitInFlight waits until a round trip is in flight.
func waitInFlight(t *testing.T, s *store.Store) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !rot(s).TripInFlight(); {
		if time.Now().After(deadline) {
			t.Fatal("no round trip started")
		}
		time.Sleep(time.Millisecond)
	}
}

// waitQueued waits until n picks are queued behind the round trip in flight.
func waitQueued(t *testing.T, s *store.Store, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); rot(s).Queued() != n; {
		if time.Now().After(deadline) {
			t.Fatalf("got %d picks queued, want %d", rot(s).Queued(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func lmoveCalls(t *testing.T, srv *redistest.Server) int {
	t.Helper()
	return commandCalls(t, srv, "lmove")
}

func commandCalls(t *testing.T, srv *redistest.Server, cmd string) int {
	t.Helper()
	n, err := redistest.Calls(context.Background(), srv.Client, cmd)
	if err != nil {
		t.Fatal(err)
	}
	return int(n)
}

// Picks that arrive while a round trip is in flight share the next one, and
// each still gets its own step: 1 pick goes alone, the 29 queued behind it
// go in one script, and the 30 land exactly 10 on each backend.
func TestQueuedPicksShareOneRoundTrip(t *testing.T) {
	ctx := context.Background()
	s, srv := seededStore(t)
	s.SetStepTimeout(time.Minute) // the pause, not a timeout, ends the round trip
	unpause := pauseWrites(t, srv)

	var mu sync.Mutex
	counts := map[string]int{}
	var wg sync.WaitGroup
	pick := func() {
		u, err := rot(s).Next(ctx)
		if err != nil {
			t.Error(err)
			return
		}
		mu.Lock()
		counts[u.String()]++
		mu.Unlock()
	}
	wg.Go(pick)
	// The first pick is in flight, held by the pause; the rest queue.
	waitInFlight(t, s)
	for range 29 {
		wg.Go(pick)
	}
	waitQueued(t, s, 29)
	unpause()
	wg.Wait()

	for _, b := range three {
		if counts[b] != 10 {
			t.Errorf("%s: got %d picks, want 10 (all: %v)", b, counts[b], counts)
		}
	}
	st := rot(s).Stats()
	if st.RoundTrips != 2 || st.Requests != 30 || st.MaxBatch != 29 {
		t.Errorf("got %+v, want 2 round trips, 30 steps, largest batch 29", st)
	}
	if n := lmoveCalls(t, srv); n != 30 {
		t.Errorf("Redis counted %d LMOVE calls, want 30 (one per pick)", n)
	}
	if n := commandCalls(t, srv, "evalsha") + commandCalls(t, srv, "eval"); n > 3 {
		t.Errorf("Redis counted %d script calls, want 2 (3 if the script was loaded once)", n)
	}
}

// A pick that meets no round trip in flight goes at once, alone: sequential
// picks make one round trip each and never wait for a batch.
func TestLonePicksGoAlone(t *testing.T) {
	s, _ := seededStore(t)
	expectPicks(t, s, []string{three[2], three[1], three[0], three[2]})
	if st := rot(s).Stats(); st.RoundTrips != 4 || st.MaxBatch != 1 {
		t.Errorf("got %+v, want 4 round trips of 1 step", st)
	}
}

// A queued pick whose request gives up leaves the queue and takes no step,
// so the others' rotation is not disturbed.
func TestQueuedPickThatGivesUpTakesNoStep(t *testing.T) {
	ctx := context.Background()
	s, srv := seededStore(t)
	s.SetStepTimeout(time.Minute) // the pause, not a timeout, ends the round trip
	unpause := pauseWrites(t, srv)
	first := make(chan string, 1)
	go func() {
		u, err := rot(s).Next(ctx)
		if err != nil {
			t.Error(err)
			first <- ""
			return
		}
		first <- u.String()
	}()
	waitInFlight(t, s)
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := rot(s).Next(short); !errors.Is(err, pick.ErrUnavailable) {
		t.Errorf("queued pick past its deadline: got %v, want pick.ErrUnavailable", err)
	}
	if n := rot(s).Queued(); n != 0 {
		t.Errorf("got %d picks queued after the only waiter gave up, want 0", n)
	}
	unpause()
	if got := <-first; got != three[2] {
		t.Errorf("first pick: got %q, want %q", got, three[2])
	}
	// The next pick is the second step: the one that gave up took none.
	expectPicks(t, s, []string{three[1], three[0]})
	if n := lmoveCalls(t, srv); n != 3 {
		t.Errorf("Redis counted %d LMOVE calls, want 3", n)
	}
}

// The tally counts the steps of every store (every dispatcher) on the list,
// in Redis, and starts again when the list is replaced.
func TestTallyCountsEveryDispatchersSteps(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	a := store.NewStore(srv.Client, "servers", nil)
	b := store.NewStore(srv.Client, "servers", nil)
	if err := a.Replace(ctx, three); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 30 {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() {
			for range 10 {
				if _, err := rot(s).Next(ctx); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	want := map[string]int64{three[0]: 100, three[1]: 100, three[2]: 100}
	got, err := a.Tally(ctx)
	if err != nil || !maps.Equal(got, want) {
		t.Errorf("Tally: got (%v, %v), want %v", got, err, want)
	}
	if err := a.Replace(ctx, three[:1]); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Tally(ctx); err != nil || len(got) != 0 {
		t.Errorf("Tally after Replace: got (%v, %v), want empty", got, err)
	}
}

func TestTallyKeySharesTheListsSlot(t *testing.T) {
	for _, tc := range []struct{ key, want string }{
		{"servers", "{servers}:picks"},
		{"{lb}servers", "{lb}servers:picks"},
		{"lb:{eu}", "lb:{eu}:picks"},
		{"odd{}key", "{odd{}key}:picks"}, // an empty tag is no tag
		{"half{open", "{half{open}:picks"},
	} {
		if got := store.TallyKeyOf(tc.key); got != tc.want {
			t.Errorf("tally key of %q: got %q, want %q", tc.key, got, tc.want)
		}
	}
}
