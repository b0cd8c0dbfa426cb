package balance_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/spreadlb/spread/internal/redisconn"

	"github.com/spreadlb/spread/internal/pick"

	"github.com/spreadlb/spread/internal/balance"
	"github.com/spreadlb/spread/internal/pool"
	"github.com/spreadlb/spread/internal/store"
)

// errorLog records what a Failover reports.
type errorLog struct {
	mu       sync.Mutex
	errs     []error
	degraded []bool
}

func (l *errorLog) onError(err error) { l.mu.Lock(); l.errs = append(l.errs, err); l.mu.Unlock() }
func (l *errorLog) onDegraded(d bool) { l.mu.Lock(); l.degraded = append(l.degraded, d); l.mu.Unlock() }

func (l *errorLog) get() ([]error, []bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]error(nil), l.errs...), append([]bool(nil), l.degraded...)
}

// A pick that waited on a hung Redis and was then answered from the
// snapshot still counts as a failed Redis call; the picks after it, made
// while degraded, ask Redis nothing and count nothing.
func TestFailoverReportsEveryFailedRedisCall(t *testing.T) {
	_, srv := seededStore(t)
	// A client made as the dispatcher makes it: the step's deadline bounds
	// the wait.
	rdb, err := redisconn.Connect(srv.URL, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	s := store.NewStore(rdb, "servers", nil)
	s.SetStepTimeout(100 * time.Millisecond)
	p := readPool(t, s)
	var log errorLog
	f := balance.NewFailover(balance.NewShared(store.NewRotation(s)), balance.NewLocal(p),
		balance.Env{Redis: s, Pool: p, OnRedisError: log.onError, OnDegraded: log.onDegraded})
	srv.Pause()
	defer srv.Resume()
	for i := range 4 {
		if _, err := f.Pick(context.Background(), get()); err != nil {
			t.Fatalf("pick %d while Redis hangs: %v", i, err)
		}
	}
	errs, degraded := log.get()
	if len(errs) != 1 || !errors.Is(errs[0], pick.ErrUnavailable) {
		t.Errorf("got reported errors %v, want one ErrUnavailable (the pick that waited)", errs)
	}
	if len(degraded) != 1 || !degraded[0] {
		t.Errorf("got degraded changes %v, want [true]", degraded)
	}
}

// A user that may not run SCARD makes every pick fail with a permission
// error naming it: reported, returned, and never taken for Redis being
// down, so the Failover does not turn degraded (and does not flap).
func TestFailoverDoesNotDegradeOnAPermissionError(t *testing.T) {
	ctx := context.Background()
	admin, srv := seededStore(t)
	if err := srv.Client.SAdd(ctx, admin.DownKey(), three[2]).Err(); err != nil {
		t.Fatal(err)
	}
	for _, rules := range [][]any{{"u1", "on", ">pw", "~*", "+@all", "-scard"}, {"u2", "on", ">pw", "~*", "+@all", "-llen"}} {
		if err := srv.Client.Do(ctx, append([]any{"ACL", "SETUSER"}, rules...)...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	run := func(user string, call func(*balance.Failover) error) (error, []error, []bool, string) {
		rdb, err := redisconn.Connect(srv.UserURL(user, "pw"), "test")
		if err != nil {
			t.Fatal(err)
		}
		defer rdb.Close()
		s := store.NewStore(rdb, "servers", nil)
		p := pool.New(admin, 0, nil) // the snapshot to fall back on, read by a user who may
		if err := p.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		var log errorLog
		f := balance.NewFailover(balance.NewShared(store.NewRotation(s)), balance.NewLocal(p),
			balance.Env{Redis: s, Pool: p, OnRedisError: log.onError, OnDegraded: log.onDegraded})
		err = call(f)
		errs, degraded := log.get()
		return err, errs, degraded, f.Degraded()
	}

	err, errs, degraded, why := run("u1", func(f *balance.Failover) error {
		var err error
		for range 3 {
			_, err = f.Pick(ctx, get())
		}
		return err
	})
	var perr *pick.PermissionError
	if !errors.As(err, &perr) || perr.Command != "SCARD {servers}:down" || errors.Is(err, pick.ErrUnavailable) {
		t.Errorf("pick without SCARD: got %v, want a PermissionError naming SCARD {servers}:down", err)
	}
	if len(errs) != 3 || !errors.Is(errs[0], pick.ErrNoPermission) {
		t.Errorf("pick without SCARD: got reported errors %v, want 3 permission errors", errs)
	}
	if len(degraded) != 0 || why != "" {
		t.Errorf("pick without SCARD: got degraded changes %v (%q), want none", degraded, why)
	}

	err, _, degraded, why = run("u2", func(f *balance.Failover) error { _, err := f.Len(ctx); return err })
	if !errors.As(err, &perr) || perr.Command != "LLEN servers" {
		t.Errorf("Len without LLEN: got %v, want a PermissionError naming LLEN servers", err)
	}
	if len(degraded) != 0 || why != "" {
		t.Errorf("Len without LLEN: got degraded changes %v (%q), want none", degraded, why)
	}
}
