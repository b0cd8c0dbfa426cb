package store_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/spreadlb/spread/internal/backend"
	"github.com/spreadlb/spread/internal/redisconn"

	"github.com/spreadlb/spread/internal/pick"

	"github.com/spreadlb/spread/internal/redistest"
	"github.com/spreadlb/spread/internal/store"
)

// securityDoc documents the least-privilege users the tests log in as.
const securityDoc = "../../docs/security.md"

// storeAs is a Store on srv's "servers" list, connected as user.
func storeAs(t *testing.T, srv *redistest.Server, user, pass string) *store.Store {
	t.Helper()
	rdb, err := redisconn.Connect(srv.UserURL(user, pass), "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	return store.NewStore(rdb, "servers", nil)
}

// aclLog is what ACL LOG holds: every denial since the server started.
func aclLog(t *testing.T, srv *redistest.Server) []string {
	t.Helper()
	entries, err := srv.Client.ACLLog(context.Background(), 100).Result()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Username+" "+e.Reason+" "+e.Object)
	}
	return out
}

var (
	dispatcherOps = []store.Op{store.OpRead, store.OpRotate, store.OpHealth, store.OpReport, store.OpInflight, store.OpReconcile, store.OpEject}
	seederOps     = []store.Op{store.OpSeed, store.OpSeedProbes, store.OpAdd, store.OpRemove, store.OpProbes, store.OpList, store.OpWatch, store.OpPing}
)

// The users that docs/security.md documents can do everything their
// program does: each operation is run for real, as that user, and Redis
// denies nothing (ACL LOG stays empty).
func TestDocumentedACLUsersCanDoTheirJobs(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	dRules, dPass := redistest.ACLRules(t, securityDoc, "spread-dispatcher")
	sRules, sPass := redistest.ACLRules(t, securityDoc, "spread-seeder")
	srv.SetUser(t, "spread-dispatcher", dRules...)
	srv.SetUser(t, "spread-seeder", sRules...)
	seeder := storeAs(t, srv, "spread-seeder", sPass)
	disp := storeAs(t, srv, "spread-dispatcher", dPass)

	// The seeder's commands.
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Errorf("%s: %v", what, err)
		}
	}
	must("seed", seeder.ReplaceWithProbes(ctx, three, map[string]string{"http://127.0.0.1:5000": "http://backend1:5000"}))
	_, err := seeder.Add(ctx, "http://127.0.0.1:5003")
	must("add", err)
	_, err = seeder.Remove(ctx, "http://127.0.0.1:5003")
	must("remove", err)
	_, err = seeder.Len(ctx)
	must("remove (LLEN)", err)
	_, err = seeder.Entries(ctx)
	must("list (LRANGE)", err)
	_, err = seeder.Down(ctx)
	must("list (SMEMBERS)", err)
	_, err = seeder.InFlight(ctx)
	must("list (in flight)", err)
	_, err = seeder.Members(ctx)
	must("list (registrations)", err)
	_, _, err = seeder.Ejections(ctx)
	must("list (ejections)", err)
	must("probe", seeder.SetProbe(ctx, "http://127.0.0.1:5001", "http://backend2:5001"))
	_, err = seeder.Probes(ctx)
	must("probe list", err)
	must("probe remove", seeder.RemoveProbe(ctx, "http://127.0.0.1:5001"))
	_, err = rot(seeder).Next(ctx)
	must("watch (step)", err)
	_, err = seeder.Tally(ctx)
	must("watch (tally)", err)
	must("healthcheck", seeder.Ping(ctx))
	missing, err := seeder.Missing(ctx, seederOps...)
	if err != nil || len(missing) > 0 {
		t.Errorf("the seeder's check: got missing %q (err %v), want none", missing, err)
	}

	// The dispatcher's: the health checks first, marking one entry down,
	// so that the rotation's steps read the down set.
	held, _, err := disp.ClaimLease(ctx, "d1", time.Minute)
	must("claim the lease", err)
	if !held {
		t.Fatal("the lease is free, yet not taken")
	}
	_, err = disp.PublishDown(ctx, "d1", time.Minute, []string{three[2]})
	must("publish the down set", err)
	must("report a failure", disp.ReportFailure(ctx, three[1]))
	_, err = disp.Reconcile(ctx, "d1")
	must("reconcile", err)
	_, err = disp.Eject(ctx, three[0], store.EjectPolicy{Base: time.Minute, MaxPercent: 50})
	must("eject", err)
	_, _, _, err = disp.ReadExtras(ctx)
	must("snapshot (ReadExtras)", err)
	_, err = disp.TakeReports(ctx)
	must("take the reports", err)
	for range 3 {
		u, err := rot(disp).Next(ctx)
		must("rotation step", err)
		if err == nil && u.String() == three[2] {
			t.Errorf("a step landed on %s, which is down", u)
		}
	}
	_, err = disp.Len(ctx)
	must("readyz (LLEN)", err)
	_, _, err = disp.Read(ctx)
	must("snapshot (Read)", err)
	_, err = disp.Entries(ctx)
	must("dashboard (LRANGE)", err)
	must("ping", disp.Ping(ctx))
	in := disp.NewInflight("d1", true)
	e, err := in.Pick(ctx, []backend.Weighted{{URL: three[0], Weight: 1}, {URL: three[1], Weight: 1}})
	must("least-conn pick", err)
	in.Release(e)
	_, err = in.Sync(ctx)
	must("in-flight sync", err)
	in.Withdraw()
	must("release the lease", disp.ReleaseLease(ctx, "d1"))
	missing, err = disp.Missing(ctx, dispatcherOps...)
	if err != nil || len(missing) > 0 {
		t.Errorf("the dispatcher's check: got missing %q (err %v), want none", missing, err)
	}

	if log := aclLog(t, srv); len(log) > 0 {
		t.Errorf("ACL LOG: got denials %q, want none", log)
	}
}

// The backend's documented user registers its own URL, deregisters it and
// reads the list, and may write nothing else: not another backend's
// registration, not the list.
func TestDocumentedBackendUserWritesOnlyItsRegistration(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	rules, pass := redistest.ACLRules(t, securityDoc, "spread-backend4")
	srv.SetUser(t, "spread-backend4", rules...)
	b := storeAs(t, srv, "spread-backend4", pass)
	const own, other = "http://backend4:5000", "http://backend5:5000"
	missing, err := b.MissingToRegister(ctx, own)
	if err != nil || len(missing) > 0 {
		t.Errorf("the backend's check: got missing %q (err %v), want none", missing, err)
	}
	if _, err := b.Register(ctx, own, time.Minute); err != nil {
		t.Errorf("register its own URL: %v", err)
	}
	if _, err := b.InList(ctx, own); err != nil {
		t.Errorf("read the list: %v", err)
	}
	if err := b.Deregister(ctx, own); err != nil {
		t.Errorf("deregister: %v", err)
	}
	if log := aclLog(t, srv); len(log) > 0 {
		t.Errorf("ACL LOG after its own job: got denials %q, want none", log)
	}
	if _, err := b.Register(ctx, other, time.Minute); !errors.Is(err, pick.ErrNoPermission) {
		t.Errorf("register another URL: got %v, want a permission error", err)
	}
	if err := b.Deregister(ctx, other); !errors.Is(err, pick.ErrNoPermission) {
		t.Errorf("deregister another URL: got %v, want a permission error", err)
	}
	if _, err := b.Add(ctx, own); !errors.Is(err, pick.ErrNoPermission) {
		t.Errorf("RPUSH to the list: got %v, want a permission error", err)
	}
	if missing, _ := b.MissingToRegister(ctx, other); len(missing) == 0 {
		t.Errorf("the check for another URL: got nothing missing, want its SET and DEL")
	}
	if n := srv.Client.Exists(ctx, b.MemberKey(other)).Val(); n != 0 {
		t.Errorf("%s's registration exists after refused writes", other)
	}
}

// A user missing one command gets a permission error naming it, from the
// operation that needs it and from the check at start; never silence, and
// never "redis unavailable".
func TestMissingPermissionIsNamed(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	rules, pass := redistest.ACLRules(t, securityDoc, "spread-dispatcher")
	// One entry down, so that a step must read the down set.
	if err := store.NewStore(srv.Client, "servers", nil).Replace(ctx, three); err != nil {
		t.Fatal(err)
	}
	if err := srv.Client.SAdd(ctx, "{servers}:down", three[2]).Err(); err != nil {
		t.Fatal(err)
	}
	inflight := func(s *store.Store) error {
		_, err := s.NewInflight("d1", true).Pick(ctx, []backend.Weighted{{URL: three[0], Weight: 1}})
		return err
	}
	next := func(s *store.Store) error { _, err := rot(s).Next(ctx); return err }
	tests := []struct {
		deny string // the rule taken away
		want string // the command named
		op   store.Op
		run  func(*store.Store) error
	}{
		{"-scard", "SCARD {servers}:down", store.OpRotate, next},
		{"-sismember", "SISMEMBER {servers}:down", store.OpRotate, next},
		{"-hincrby", "HINCRBY {servers}:picks", store.OpRotate, next},
		{"-lmove", "LMOVE servers", store.OpRotate, next},
		{"-llen", "LLEN servers", store.OpRead, func(s *store.Store) error { _, err := s.Len(ctx); return err }},
		{"-smembers", "SMEMBERS {servers}:down", store.OpRead, func(s *store.Store) error { _, _, err := s.Read(ctx); return err }},
		{"-get", "GET {servers}:lease", store.OpHealth, func(s *store.Store) error { _, _, err := s.ClaimLease(ctx, "d1", time.Minute); return err }},
		{"-set", "SET {servers}:lease", store.OpHealth, func(s *store.Store) error { _, _, err := s.ClaimLease(ctx, "d1", time.Minute); return err }},
		{"-time", "TIME", store.OpInflight, inflight},
		{"-zadd", "ZADD {servers}:alive", store.OpInflight, inflight},
	}
	for _, tc := range tests {
		user := "d" + tc.deny
		srv.SetUser(t, user, append(slices.Clone(rules), tc.deny)...)
		s := storeAs(t, srv, user, pass)
		err := tc.run(s)
		var perr *pick.PermissionError
		if !errors.As(err, &perr) || errors.Is(err, pick.ErrUnavailable) || perr.Command != tc.want {
			t.Errorf("%s: got %v, want a pick.PermissionError naming %q, not pick.ErrUnavailable", tc.deny, err, tc.want)
		}
		missing, err := s.Missing(ctx, tc.op)
		want := []string{tc.want}
		if tc.deny == "-set" {
			want = append(want, "SET {servers}:version") // the health checks bump it too
		}
		if err != nil || !slices.Equal(missing, want) {
			t.Errorf("%s: the check at start: got %q (err %v), want %q", tc.deny, missing, err, want)
		}
	}
	// The down set was never changed and no step was taken past a denial
	// of SCARD: the entry marked down was never picked.
	if n, _ := srv.Client.HGet(ctx, "{servers}:picks", three[2]).Int(); n != 0 {
		t.Errorf("the entry marked down was picked %d times", n)
	}
}

// Without MULTI nothing can be checked safely (the commands would run):
// the check names MULTI alone, and changes nothing.
func TestMissingMULTI(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	if err := store.NewStore(srv.Client, "servers", nil).Replace(ctx, three); err != nil {
		t.Fatal(err)
	}
	rules, pass := redistest.ACLRules(t, securityDoc, "spread-dispatcher")
	srv.SetUser(t, "nomulti", append(slices.Clone(rules), "-multi")...)
	s := storeAs(t, srv, "nomulti", pass)
	missing, err := s.Missing(ctx, dispatcherOps...)
	if err != nil || !slices.Equal(missing, []string{"MULTI"}) {
		t.Errorf("got %q (err %v), want [MULTI]", missing, err)
	}
	for range 3 {
		_, _, err = s.Read(ctx)
		var perr *pick.PermissionError
		if !errors.As(err, &perr) || perr.Command != "MULTI" {
			t.Errorf("Read: got %v, want a pick.PermissionError naming MULTI", err)
		}
	}
	// Refused once, MULTI is not sent again for a while: the commands
	// queued behind it would run outside a transaction, unread.
	if n, err := redistest.Calls(ctx, srv.Client, "lrange"); err != nil || n != 1 {
		t.Errorf("LRANGE ran %d times outside a transaction (err %v), want once (the first Read)", n, err)
	}
	got, err := srv.Client.LRange(ctx, "servers", 0, -1).Result()
	if err != nil || !slices.Equal(got, three) {
		t.Errorf("the list after the check: got %q (err %v), want %q unchanged", got, err, three)
	}
}

// The permission check runs on the Store's own pooled connections: a
// thousand checks open none of their own (a dispatcher's /readyz makes
// them), and the connection each borrows goes back outside MULTI, so the
// commands sent after it run at once.
func TestMissingUsesThePooledConnection(t *testing.T) {
	ctx := context.Background()
	s, srv := seededStore(t)
	if _, err := s.Len(ctx); err != nil { // the pool has its connection
		t.Fatal(err)
	}
	before := infoStat(t, srv.Client, "total_connections_received")
	for range 1000 {
		if missing, err := s.Missing(ctx, store.OpRead, store.OpRotate, store.OpInflight); err != nil || len(missing) > 0 {
			t.Fatalf("Missing: got (%q, %v), want none", missing, err)
		}
		if n, err := s.Len(ctx); err != nil || n != 3 {
			t.Fatalf("LLEN after a check: got (%d, %v), want (3, nil): the connection was left inside MULTI", n, err)
		}
	}
	if n := infoStat(t, srv.Client, "total_connections_received") - before; n > 1 {
		t.Errorf("1000 permission checks opened %d connections, want at most 1", n)
	}
}
