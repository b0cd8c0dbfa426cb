package members_test

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spreadlb/spread/internal/members"
	"github.com/spreadlb/spread/internal/redisconn"
	"github.com/spreadlb/spread/internal/redistest"
	"github.com/spreadlb/spread/internal/store"
)

const b4 = "http://backend4:5000"

var three = []string{"http://127.0.0.1:5000", "http://127.0.0.1:5001", "http://127.0.0.1:5002"}

// syncBuffer is a log that goroutines write and the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// stack is a seeded list, its lease held by "d1", and d1's reconciler
// running; log receives both sides' messages.
func stack(t *testing.T) (*store.Store, *redistest.Server, *syncBuffer) {
	t.Helper()
	srv := redistest.Start(t)
	s := store.NewStore(srv.Client, "servers", nil)
	ctx := context.Background()
	if err := s.Replace(ctx, three); err != nil {
		t.Fatal(err)
	}
	if held, _, err := s.ClaimLease(ctx, "d1", time.Hour); err != nil || !held {
		t.Fatalf("claim the lease: %v %v", held, err)
	}
	log := &syncBuffer{}
	rc := members.NewReconciler(s, func() string { return "d1" }, slog.New(slog.NewTextHandler(log, nil)))
	rctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { rc.Run(rctx) })
	t.Cleanup(func() { stop(); wg.Wait() })
	return s, srv, log
}

// waitFor polls cond until it holds, for at most limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("waited %v for %s", limit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

func inList(s *store.Store) bool {
	in, _ := s.InList(context.Background(), b4)
	return in
}

// A backend that registers is in the list within a heartbeat and a
// reconciler round; one whose heartbeats stop (a crash) leaves it within
// its TTL and a round; one whose registration Redis lost comes back.
func TestRegistrarHeartbeats(t *testing.T) {
	s, srv, log := stack(t)
	const hb = 100 * time.Millisecond
	r := members.NewRegistrar(s, b4, hb, slog.New(slog.NewTextHandler(log, nil)))
	ctx, crash := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()

	if took := waitFor(t, 5*time.Second, "the registration in the list", func() bool { return inList(s) }); took > hb+store.ReconcileEvery+time.Second {
		t.Errorf("in the list after %v, want within a heartbeat and a reconciler round", took)
	}
	if e, _ := s.Entries(context.Background()); !slices.Equal(e, append(slices.Clone(three), b4)) {
		t.Errorf("list: got %q, want the three seeded and %s", e, b4)
	}

	// Redis loses everything; the next heartbeat registers again, and
	// the reconciler puts it back (with the seed gone, alone).
	if err := srv.Client.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	srv.Client.Set(context.Background(), "{servers}:lease", "d1", time.Hour)
	waitFor(t, 5*time.Second, "the registration back after FLUSHALL", func() bool { return inList(s) })
	waitFor(t, 5*time.Second, "the log to say so", func() bool { return strings.Contains(log.String(), "registered again") })

	// A crash: no Leave, no more heartbeats.
	crash()
	<-done
	stopped := time.Now()
	waitFor(t, 5*time.Second, "the expired registration out of the list", func() bool { return !inList(s) })
	if took := time.Since(stopped); took > members.TTL(hb)+store.ReconcileEvery+time.Second {
		t.Errorf("out of the list %v after the last heartbeat, want within the TTL (%v) and a round", took, members.TTL(hb))
	}
	waitFor(t, time.Second, "the log to say it left", func() bool {
		return strings.Contains(log.String(), "registered backend leaves the list")
	})
}

// On a clean stop the backend deregisters, and Leave returns only once the
// entry has left the list and Settle has passed.
func TestLeave(t *testing.T) {
	s, _, log := stack(t)
	r := members.NewRegistrar(s, b4, 100*time.Millisecond, slog.New(slog.NewTextHandler(log, nil)))
	ctx, stop := context.WithCancel(context.Background())
	go r.Run(ctx)
	waitFor(t, 5*time.Second, "the registration in the list", func() bool { return inList(s) })

	var outAt time.Time
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		for inList(s) {
			time.Sleep(5 * time.Millisecond)
		}
		outAt = time.Now()
	}()
	stop()
	start := time.Now()
	r.Leave(context.Background())
	returned := time.Now()
	<-watching
	if left := outAt.Sub(start); left > 2*time.Second {
		t.Errorf("left the list %v after the stop, want within 2 s", left)
	}
	if returned.Before(outAt.Add(members.Settle - 50*time.Millisecond)) {
		t.Errorf("Leave returned %v after the entry left the list, want at least Settle (%v)", returned.Sub(outAt), members.Settle)
	}
	if inList(s) {
		t.Error("still in the list after Leave")
	}

	// Leave is bounded by its context.
	r2 := members.NewRegistrar(s, "http://backend5:5000", time.Hour, nil)
	c2, stop2 := context.WithCancel(context.Background())
	go r2.Run(c2)
	stop2()
	bounded, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start = time.Now()
	r2.Leave(bounded)
	if took := time.Since(start); took > time.Second {
		t.Errorf("Leave with 300ms to go took %v", took)
	}
}

// A URL that is also seeded stays in the list when its backend leaves, so
// Leave does not wait for it: it returns, saying the seeded entry stays,
// long before its context ends.
func TestLeaveWithTheURLSeededToo(t *testing.T) {
	s, _, log := stack(t)
	ctx := context.Background()
	seeded := three[1]
	registerThenLeave(t, s, members.NewRegistrar(s, seeded, 100*time.Millisecond, slog.New(slog.NewTextHandler(log, nil))))
	if e, _ := s.Entries(ctx); !slices.Equal(e, three) {
		t.Errorf("list: got %q, want the seed %q unchanged", e, three)
	}
	if !strings.Contains(log.String(), "seeded or added by hand") {
		t.Errorf("the log does not say the seeded entry stays:\n%s", log)
	}
}

// registerThenLeave runs r until s lists its registration alive, stops it,
// and has it leave, with a minute to do so; it fails if Leave is still
// waiting 30 s later, for an entry of the same URL that was seeded, say.
func registerThenLeave(t *testing.T, s *store.Store, r *members.Registrar) {
	t.Helper()
	ctx := context.Background()
	rctx, stop := context.WithCancel(ctx)
	go r.Run(rctx)
	waitFor(t, 5*time.Second, "the registration", func() bool {
		m, _ := s.Members(ctx)
		return len(m) == 1 && m[0].Alive
	})
	stop()
	bounded, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	left := make(chan struct{})
	go func() { r.Leave(bounded); close(left) }()
	select {
	case <-left:
	case <-time.After(30 * time.Second):
		t.Fatal("Leave still waiting 30 s later for a seeded entry to leave the list")
	}
}

// The same, as the backend's Redis user that docs/security.md documents: it
// may read whether its entry is the reconciler's, so it does not wait for
// a seeded one either, and Redis logs no denial.
func TestLeaveWithTheURLSeededTooAsTheDocumentedUser(t *testing.T) {
	s, srv, log := stack(t)
	ctx := context.Background()
	if err := s.Replace(ctx, append(slices.Clone(three), b4)); err != nil {
		t.Fatal(err)
	}
	rules, pass := redistest.ACLRules(t, "../../docs/security.md", "spread-backend4")
	srv.SetUser(t, "spread-backend4", rules...)
	rdb, err := redisconn.Connect(srv.UserURL("spread-backend4", pass), "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	as := store.NewStore(rdb, "servers", nil)
	registerThenLeave(t, s, members.NewRegistrar(as, b4, 100*time.Millisecond, slog.New(slog.NewTextHandler(log, nil))))
	if denials, err := srv.Client.ACLLog(ctx, 10).Result(); err != nil || len(denials) > 0 {
		t.Errorf("ACL LOG: got %v (%v), want no denial", denials, err)
	}
}
