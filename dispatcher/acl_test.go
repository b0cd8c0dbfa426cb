package main

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/spreadlb/spread/internal/redistest"
)

// withUser starts a redis-server holding the documented dispatcher user,
// with extra rules after the documented ones, and returns it and the URL
// that reaches it as that user.
func withUser(t *testing.T, extra ...string) (*redistest.Server, string) {
	t.Helper()
	srv := redistest.Start(t)
	rules, pass := redistest.ACLRules(t, "../docs/security.md", "spread-dispatcher")
	srv.SetUser(t, "spread-dispatcher", append(slices.Clone(rules), extra...)...)
	return srv, srv.UserURL("spread-dispatcher", pass)
}

// The documented user serves every strategy and mode with its health
// checks on, and /readyz finds nothing missing.
func TestDocumentedACLUserServes(t *testing.T) {
	for _, env := range []map[string]string{
		{"HEALTH_INTERVAL": "1h"},
		{"MODE": "proxy", "STRATEGY": "least-conn", "HEALTH_INTERVAL": "1h"},
		{"MODE": "proxy", "STRATEGY": "p2c", "HEALTH_INTERVAL": "1h"},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		srv, url := withUser(t)
		s := startServeOn(t, ctx, srv, url, env, three...)
		if code, body := s.readyz(t); code != 200 || !strings.HasPrefix(body, "ready: ") {
			t.Errorf("%v: /readyz: got %d %q, want 200 ready", env, code, body)
		}
		if strings.Contains(s.logs.String(), "lacks permissions") {
			t.Errorf("%v: the log reports missing permissions:\n%s", env, s.logs)
		}
		cancel()
		if err := <-s.errc; err != nil {
			t.Errorf("%v: serve: %v", env, err)
		}
		if log, err := srv.Client.ACLLog(context.Background(), 100).Result(); err != nil || len(log) > 0 {
			t.Errorf("%v: ACL LOG: got %v (err %v), want no denial", env, log, err)
		}
	}
}

// A user without SCARD cannot read the down set in the rotation's step:
// the log names the command at start, /readyz answers 503 naming it, every
// request gets a 503 (never the backend marked down), each is counted as
// a permission error, and the dispatcher never turns degraded.
func TestMissingPermissionIsReportedNotDegraded(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, url := withUser(t, "-scard")
	if err := srv.Client.SAdd(ctx, "{servers}:down", three[2]).Err(); err != nil {
		t.Fatal(err)
	}
	s := startServeOn(t, ctx, srv, url, nil, three...)
	waitFor(t, "the start-up check is logged", func() bool { return strings.Contains(s.logs.String(), "lacks permissions") })
	if logs := s.logs.String(); !strings.Contains(logs, "SCARD {servers}:down") {
		t.Errorf("the log does not name SCARD {servers}:down:\n%s", logs)
	}
	code, body := s.readyz(t)
	if code != 503 || !strings.Contains(body, "SCARD {servers}:down") {
		t.Errorf("/readyz: got %d %q, want 503 naming SCARD {servers}:down", code, body)
	}
	for i := range 5 {
		if code, loc := s.getOK(t, "/"); code != http.StatusServiceUnavailable {
			t.Errorf("request %d: got %d %q, want 503", i, code, loc)
		}
	}
	fams := scrape(t, s.adm+"/metrics")
	if got, _ := sample(fams, "spread_redis_permission_errors_total", map[string]string{"command": "SCARD"}); got != 5 {
		t.Errorf("spread_redis_permission_errors_total{command=SCARD}: got %v, want 5", got)
	}
	if got, _ := sample(fams, "spread_redis_errors_total", nil); got != 0 {
		t.Errorf("spread_redis_errors_total: got %v, want 0 (Redis answered)", got)
	}
	if got, _ := sample(fams, "spread_degraded", nil); got != 0 {
		t.Errorf("spread_degraded: got %v, want 0", got)
	}
	if strings.Contains(s.logs.String(), "degraded") {
		t.Errorf("the dispatcher turned degraded:\n%s", s.logs)
	}
}

// A user without LLEN: /readyz names LLEN instead of saying "redis
// unavailable", and nothing flaps into degraded mode.
func TestReadyzNamesAMissingLLEN(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, url := withUser(t, "-llen")
	s := startServeOn(t, ctx, srv, url, nil, three...)
	for range 3 {
		code, body := s.readyz(t)
		if code != 503 || !strings.Contains(body, "LLEN servers") || strings.Contains(body, "unavailable") {
			t.Errorf("/readyz: got %d %q, want 503 naming LLEN servers", code, body)
		}
	}
	if got, _ := sample(scrape(t, s.adm+"/metrics"), "spread_degraded", nil); got != 0 || strings.Contains(s.logs.String(), "degraded") {
		t.Errorf("spread_degraded: got %v, want 0; log:\n%s", got, s.logs)
	}
}

// A refusal outside the request path (the health checks' lease, without
// GET) is named by /readyz and counted too.
func TestRefusedHealthChecksAreCounted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, url := withUser(t, "-get")
	s := startServeOn(t, ctx, srv, url, map[string]string{"HEALTH_INTERVAL": "1h"}, three...)
	if code, body := s.readyz(t); code != 503 || !strings.Contains(body, "GET {servers}:lease") {
		t.Errorf("/readyz: got %d %q, want 503 naming GET {servers}:lease", code, body)
	}
	waitFor(t, "the health checks' refusal is counted", func() bool {
		got, _ := sample(scrape(t, s.adm+"/metrics"), "spread_redis_permission_errors_total", map[string]string{"command": "GET"})
		return got > 0
	})
	// Picks need no GET: requests are still served.
	if code, _ := s.getOK(t, "/"); code != http.StatusFound {
		t.Errorf("a request: got %d, want 302", code)
	}
}
