package main

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/spreadlb/spread/internal/pick"

	"github.com/spreadlb/spread/internal/redistest"
)

// seederUser creates on srv the seeder user that docs/security.md
// documents, with extra rules after its own, and returns the REDIS_URL
// that logs in as it.
func seederUser(t *testing.T, srv *redistest.Server, extra ...string) string {
	t.Helper()
	rules, pass := redistest.ACLRules(t, "../docs/security.md", "spread-seeder")
	srv.SetUser(t, "spread-seeder", append(slices.Clone(rules), extra...)...)
	return srv.UserURL("spread-seeder", pass)
}

// Every command works as the documented seeder user, and Redis denies
// it nothing.
func TestDocumentedACLUser(t *testing.T) {
	srv := redistest.Start(t)
	env := map[string]string{"REDIS_URL": seederUser(t, srv)}
	for _, args := range [][]string{
		{"seed", "http://a:1", "http://b:2"},
		{"seed", "-probe", "http://a:1=http://backend1:1", "http://a:1", "http://b:2*2"},
		{"list"},
		{"add", "http://c:3"},
		{"remove", "http://c:3"},
		{"probe", "http://b:2", "http://backend2:2"},
		{"probe"},
		{"probe", "remove", "http://b:2"},
		{"watch", "-n", "2", "-i", "0"},
		{"healthcheck"},
	} {
		if _, err := seeder(t, srv, env, args...); err != nil {
			t.Errorf("seeder %q: %v", args, err)
		}
	}
	if log, err := srv.Client.ACLLog(context.Background(), 100).Result(); err != nil || len(log) > 0 {
		t.Errorf("ACL LOG: got %v (err %v), want no denial", log, err)
	}
}

// A user missing commands: the seeder exits with status 1 naming every
// one of them, before it writes anything.
func TestMissingPermissionsAreNamed(t *testing.T) {
	srv := redistest.Start(t)
	if _, err := seeder(t, srv, nil, "seed"); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"REDIS_URL": seederUser(t, srv, "-rpush", "-del")}
	_, err := seeder(t, srv, env, "seed", "http://a:1")
	if !errors.Is(err, pick.ErrNoPermission) || exitCode(err) != 1 {
		t.Fatalf("seed without RPUSH and DEL: got %v (exit %d), want ErrNoPermission (exit 1)", err, exitCode(err))
	}
	for _, cmd := range []string{"DEL servers", "DEL {servers}:picks", "RPUSH servers"} {
		if !strings.Contains(err.Error(), cmd) {
			t.Errorf("seed without RPUSH and DEL: %q does not name %s", err, cmd)
		}
	}
	if got := lrange(t, srv); !slices.Equal(got, tutorialServers) {
		t.Errorf("the list: got %q, want %q unchanged", got, tutorialServers)
	}
	// What the user may do still works.
	if _, err := seeder(t, srv, env, "list"); err != nil {
		t.Errorf("list: %v", err)
	}
}

// A database number the server does not have: exit 1, naming REDIS_URL,
// not "redis unavailable".
func TestDatabaseOutOfRange(t *testing.T) {
	srv := redistest.Start(t)
	_, err := seeder(t, srv, map[string]string{"REDIS_URL": srv.URL + "?db=99"}, "list")
	if !errors.Is(err, pick.ErrMisconfigured) || errors.Is(err, pick.ErrUnavailable) || !strings.Contains(err.Error(), "REDIS_URL") {
		t.Errorf("db=99: got %v, want ErrMisconfigured naming REDIS_URL", err)
	}
}

// The seeder over mutual TLS, with the three files.
func TestMutualTLS(t *testing.T) {
	srv := redistest.StartTLS(t, true)
	env := map[string]string{"REDIS_URL": srv.TLSURL, "REDIS_TLS_CA": srv.CA, "REDIS_TLS_CERT": srv.Cert, "REDIS_TLS_KEY": srv.Key}
	if _, err := seeder(t, srv.Server, env, "seed"); err != nil {
		t.Fatalf("seed over mutual TLS: %v", err)
	}
	if got := lrange(t, srv.Server); !slices.Equal(got, tutorialServers) {
		t.Errorf("the list: got %q, want %q", got, tutorialServers)
	}
	delete(env, "REDIS_TLS_CERT")
	delete(env, "REDIS_TLS_KEY")
	if _, err := seeder(t, srv.Server, env, "list"); err == nil {
		t.Error("list without a client certificate: got no error, want the server to refuse")
	}
}
