package store_test

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/spreadlb/spread/internal/store"
)

// holdLease makes id the holder of s's health check lease, as a
// dispatcher's health checks would.
func holdLease(t *testing.T, s *store.Store, id string) {
	t.Helper()
	held, _, err := s.ClaimLease(context.Background(), id, time.Minute)
	if err != nil || !held {
		t.Fatalf("claim the lease for %s: held %v, err %v", id, held, err)
	}
}

// reconcile runs one round as id and fails the test if id does not hold
// the lease.
func reconcile(t *testing.T, s *store.Store, id string) store.Reconciled {
	t.Helper()
	r, err := s.Reconcile(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Held {
		t.Fatalf("reconcile as %s: it does not hold the lease", id)
	}
	return r
}

func entries(t *testing.T, s *store.Store) []string {
	t.Helper()
	e, err := s.Entries(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// A registration is put in the list as the next pick, and taken out once
// its heartbeats stop for its TTL; nothing else in the list moves.
func TestRegistrationExpires(t *testing.T) {
	ctx := context.Background()
	s, _ := seededStore(t)
	holdLease(t, s, "d1")
	const b4 = "http://backend4:5000"
	fresh, err := s.Register(ctx, b4, 300*time.Millisecond)
	if err != nil || !fresh {
		t.Fatalf("first Register: fresh %v, err %v; want fresh", fresh, err)
	}
	if r := reconcile(t, s, "d1"); !slices.Equal(r.Added, []string{b4}) || len(r.Removed) > 0 {
		t.Errorf("reconcile: got added %q removed %q, want added %q", r.Added, r.Removed, b4)
	}
	if got, want := entries(t, s), append(slices.Clone(three), b4); !slices.Equal(got, want) {
		t.Errorf("list after reconcile: got %q, want %q (the registration last: the next pick)", got, want)
	}
	expectPicks(t, s, []string{b4})

	// Heartbeats keep it: a renewal before the TTL runs out.
	time.Sleep(200 * time.Millisecond)
	if fresh, err := s.Register(ctx, b4, 300*time.Millisecond); err != nil || fresh {
		t.Errorf("renewal: fresh %v, err %v; want not fresh", fresh, err)
	}
	time.Sleep(200 * time.Millisecond)
	if r := reconcile(t, s, "d1"); len(r.Added)+len(r.Removed) > 0 {
		t.Errorf("reconcile while renewed: got added %q removed %q, want nothing", r.Added, r.Removed)
	}
	members, err := s.Members(ctx)
	if err != nil || len(members) != 1 || !members[0].Alive || !members[0].Joined || members[0].LastHeard > 300*time.Millisecond {
		t.Errorf("Members: got %+v (err %v), want %s alive, joined, heard within 300ms", members, err, b4)
	}

	// No heartbeat for the TTL: gone at the next round.
	waitFor(t, "the registration to expire", func() bool {
		m, _ := s.Members(ctx)
		return len(m) == 1 && !m[0].Alive
	})
	if r := reconcile(t, s, "d1"); !slices.Equal(r.Removed, []string{b4}) {
		t.Errorf("reconcile after expiry: got removed %q, want %q", r.Removed, b4)
	}
	if got := entries(t, s); !slices.Contains(got, three[0]) || slices.Contains(got, b4) || len(got) != 3 {
		t.Errorf("list after expiry: got %q, want the three seeded entries only", got)
	}
	if m, _ := s.Members(ctx); len(m) != 0 {
		t.Errorf("Members after the reconciler dropped it: got %+v, want none", m)
	}

	// Deregister (a clean stop) takes it out at the next round too.
	s.Register(ctx, b4, time.Minute)
	reconcile(t, s, "d1")
	if err := s.Deregister(ctx, b4); err != nil {
		t.Fatal(err)
	}
	if r := reconcile(t, s, "d1"); !slices.Equal(r.Removed, []string{b4}) {
		t.Errorf("reconcile after Deregister: got removed %q, want %q", r.Removed, b4)
	}
}

// Registration never removes an entry seeded or added by hand: not one
// whose URL a backend registers and then leaves, and not a copy added by
// hand beside one the reconciler added.
func TestHandSeededEntryIsNeverRemoved(t *testing.T) {
	ctx := context.Background()
	s, _ := seededStore(t)
	holdLease(t, s, "d1")
	const b4 = "http://backend4:5000"
	// three[1] is seeded and also registers; b4 only registers.
	s.Register(ctx, three[1], time.Minute)
	s.Register(ctx, b4, time.Minute)
	if r := reconcile(t, s, "d1"); !slices.Equal(r.Added, []string{b4}) {
		t.Errorf("reconcile: got added %q, want only %q (%s is in the list already)", r.Added, b4, three[1])
	}
	// A second copy of b4, by hand.
	if _, err := s.Add(ctx, b4); err != nil {
		t.Fatal(err)
	}
	s.Deregister(ctx, three[1])
	s.Deregister(ctx, b4)
	if r := reconcile(t, s, "d1"); !slices.Equal(r.Removed, []string{b4}) {
		t.Errorf("reconcile after both left: got removed %q, want %q once", r.Removed, b4)
	}
	if got, want := entries(t, s), append(slices.Clone(three), b4); !slices.Equal(got, want) {
		t.Errorf("list: got %q, want %q: the seeded entries and the copy added by hand stay", got, want)
	}
	for range 3 {
		reconcile(t, s, "d1")
	}
	if got := entries(t, s); len(got) != 4 {
		t.Errorf("list after more rounds: got %q, want it unchanged", got)
	}

	// A seed replaces the list: a registered URL it names is the seed's
	// from then on, and stays when its backend leaves.
	s.Register(ctx, b4, time.Minute)
	if err := s.Replace(ctx, []string{three[0], b4}); err != nil {
		t.Fatal(err)
	}
	reconcile(t, s, "d1")
	s.Deregister(ctx, b4)
	reconcile(t, s, "d1")
	if got, want := entries(t, s), []string{three[0], b4}; !slices.Equal(got, want) {
		t.Errorf("list after a seed naming %s and its backend leaving: got %q, want %q", b4, got, want)
	}
}

// A registration lost with Redis's data (FLUSHALL, a restart without
// persistence) is written anew by the next heartbeat, which says so, and
// the reconciler puts it back.
func TestRegistrationAfterFlushall(t *testing.T) {
	ctx := context.Background()
	s, srv := seededStore(t)
	const b4 = "http://backend4:5000"
	s.Register(ctx, b4, time.Minute)
	if err := srv.Client.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	fresh, err := s.Register(ctx, b4, time.Minute)
	if err != nil || !fresh {
		t.Errorf("Register after FLUSHALL: fresh %v, err %v; want fresh", fresh, err)
	}
	holdLease(t, s, "d1")
	if r := reconcile(t, s, "d1"); !slices.Equal(r.Added, []string{b4}) {
		t.Errorf("reconcile after FLUSHALL: got added %q, want %q", r.Added, b4)
	}
	if got := entries(t, s); !slices.Equal(got, []string{b4}) {
		t.Errorf("list: got %q, want %q (the seed was flushed)", got, b4)
	}
}

// Only the holder of the health checks' lease reconciles: two
// dispatchers trying at once never both write, and the other takes over
// when the lease moves.
func TestTwoDispatchersNeverBothReconcile(t *testing.T) {
	ctx := context.Background()
	s, _ := seededStore(t)
	holdLease(t, s, "d1")
	var mu sync.Mutex
	held := map[string]int{}
	added := map[string]int{}
	var wg sync.WaitGroup
	for _, id := range []string{"d1", "d2"} {
		wg.Go(func() {
			for i := range 50 {
				if i == 10 {
					// A registration arrives while both try.
					s.Register(ctx, "http://backend4:5000", time.Minute)
				}
				r, err := s.Reconcile(ctx, id)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if r.Held {
					held[id]++
				}
				added[id] += len(r.Added)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if held["d1"] != 50 || held["d2"] != 0 || added["d1"] != 1 || added["d2"] != 0 {
		t.Errorf("rounds run: got %v, registrations added %v; want d1 50 and 1, d2 0 and 0", held, added)
	}
	if got := entries(t, s); len(got) != 4 {
		t.Errorf("list: got %q, want the three and backend4 once", got)
	}
	// The lease moves to d2: now only d2 reconciles.
	if err := s.ReleaseLease(ctx, "d1"); err != nil {
		t.Fatal(err)
	}
	holdLease(t, s, "d2")
	if r, _ := s.Reconcile(ctx, "d1"); r.Held {
		t.Error("d1 reconciled after giving the lease up")
	}
	reconcile(t, s, "d2")
}

// The slow start table: entries of a new list start "long ago" (full
// weight); an entry added later, or back from down or an ejection, starts
// when the reconciler sees it eligible.
func TestSinceTable(t *testing.T) {
	ctx := context.Background()
	s, srv := seededStore(t)
	holdLease(t, s, "d1")
	reconcile(t, s, "d1")
	since := func() map[string]string { return srv.Client.HGetAll(ctx, "{servers}:since").Val() }
	for _, e := range three {
		if v := since()[e]; v != "0" {
			t.Errorf("since[%s] after the first round: got %q, want 0 (a new list does not ramp)", e, v)
		}
	}
	s.Add(ctx, "http://127.0.0.1:5003")
	srv.Client.SAdd(ctx, s.DownKey(), three[0])
	// Redis runs on this machine: its clock is ours.
	recent := func(v string) bool {
		ms, err := strconv.ParseInt(v, 10, 64)
		return err == nil && time.Since(time.UnixMilli(ms)).Abs() < 5*time.Second
	}
	reconcile(t, s, "d1")
	got := since()
	if _, ok := got[three[0]]; ok {
		t.Errorf("since of a down entry: got %q, want none", got[three[0]])
	}
	if v := got["http://127.0.0.1:5003"]; !recent(v) {
		t.Errorf("since of an added entry: got %q, want Redis's time now, in ms", v)
	}
	srv.Client.Del(ctx, s.DownKey())
	reconcile(t, s, "d1")
	if v := since()[three[0]]; !recent(v) {
		t.Errorf("since of an entry back up: got %q, want the time it came back", v)
	}
	// Ejected: no time while ejected; a new one when the ejection ends.
	if _, err := s.Eject(ctx, three[1], store.EjectPolicy{Base: 200 * time.Millisecond, MaxPercent: 50}); err != nil {
		t.Fatal(err)
	}
	reconcile(t, s, "d1")
	if v, ok := since()[three[1]]; ok {
		t.Errorf("since of an ejected entry: got %q, want none", v)
	}
	time.Sleep(300 * time.Millisecond)
	reconcile(t, s, "d1")
	if v := since()[three[1]]; !recent(v) {
		t.Errorf("since of an entry back from its ejection: got %q, want the time it came back", v)
	}
	s.Remove(ctx, three[2])
	reconcile(t, s, "d1")
	if _, ok := since()[three[2]]; ok {
		t.Errorf("since of a removed entry: still there")
	}
}

// An entry that leaves the list loses its ejection (docs/redis.md), also
// when it was ejected as it left, which is how a crashed backend leaves: the
// proxies eject it, then its registration expires. Back with the same URL
// (a restart), it is not skipped for what remained of that ejection, and a
// new one starts the count again.
func TestEjectedEntryThatLeavesForgetsItsEjection(t *testing.T) {
	ctx := context.Background()
	s, _ := seededStore(t)
	holdLease(t, s, "d1")
	const b4 = "http://backend4:5000"
	s.Register(ctx, b4, time.Minute)
	reconcile(t, s, "d1")
	if e, err := s.Eject(ctx, b4, store.EjectPolicy{Base: time.Hour, MaxPercent: 100}); err != nil || !e.Ejected {
		t.Fatalf("eject %s: %+v, %v", b4, e, err)
	}
	reconcile(t, s, "d1")
	s.Deregister(ctx, b4) // its registration gone: it leaves the list
	if r := reconcile(t, s, "d1"); !slices.Equal(r.Removed, []string{b4}) {
		t.Fatalf("reconcile after it left: got removed %q, want %q", r.Removed, b4)
	}
	if _, ej, err := s.Ejections(ctx); err != nil || len(ej) > 0 {
		t.Errorf("ejections after it left the list: got %+v (%v), want none", ej, err)
	}
	s.Register(ctx, b4, time.Minute)
	reconcile(t, s, "d1")
	if _, ejected, _, err := s.ReadExtras(ctx); err != nil || len(ejected) > 0 {
		t.Errorf("back in the list: got ejected %v (%v), want none", ejected, err)
	}
}
