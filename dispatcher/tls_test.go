package main

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spreadlb/spread/internal/redistest"
	"github.com/spreadlb/spread/internal/store"
)

// runOn runs the dispatcher as main does, with env over free loopback
// ports, until the test ends; it returns the admin port's URL and run's
// result.
func runOn(t *testing.T, env map[string]string) (string, chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	port, admin := redistest.FreePort(t), redistest.FreePort(t)
	env["PORT"], env["ADMIN_PORT"], env["HEALTH_INTERVAL"] = strconv.Itoa(port), strconv.Itoa(admin), "0"
	errc := make(chan error, 1)
	go func() { errc <- run(ctx, nil, func(k string) string { return env[k] }, io.Discard) }()
	t.Cleanup(func() { cancel(); <-errc })
	return "http://127.0.0.1:" + strconv.Itoa(admin), errc
}

// readyzOf GETs /readyz until the admin port answers.
func readyzOf(t *testing.T, adm string) (int, string) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get(adm + "/readyz")
		if err == nil {
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the admin port never answered: %v", err)
		}
	}
}

// The dispatcher reaches a Redis that asks for client certificates
// (tls-auth-clients yes) with REDIS_TLS_CA, REDIS_TLS_CERT and
// REDIS_TLS_KEY, and one with a private CA with REDIS_TLS_CA alone.
func TestDispatcherOverTLS(t *testing.T) {
	for _, mutual := range []bool{false, true} {
		srv := redistest.StartTLS(t, mutual)
		if err := store.NewStore(srv.Client, "servers", nil).Replace(context.Background(), three); err != nil {
			t.Fatal(err)
		}
		env := map[string]string{"REDIS_URL": srv.TLSURL, "REDIS_TLS_CA": srv.CA}
		if mutual {
			env["REDIS_TLS_CERT"], env["REDIS_TLS_KEY"] = srv.Cert, srv.Key
		}
		adm, _ := runOn(t, env)
		if code, body := readyzOf(t, adm); code != 200 || !strings.Contains(body, "3 entries") {
			t.Errorf("mutual %v: /readyz: got %d %q, want 200 with 3 entries", mutual, code, body)
		}
	}
}

// A database number that the server does not have stops the dispatcher at
// start, naming REDIS_URL; bad TLS files stop it before it listens.
func TestRunRefusesRedisMisconfiguration(t *testing.T) {
	srv := redistest.Start(t)
	_, errc := runOn(t, map[string]string{"REDIS_URL": srv.URL + "?db=99"})
	select {
	case err := <-errc:
		errc <- err // for the cleanup
		if err == nil || !strings.Contains(err.Error(), "REDIS_URL") || !strings.Contains(err.Error(), "database") {
			t.Errorf("REDIS_URL with db=99: got %v, want an error naming REDIS_URL and the database", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the dispatcher did not stop")
	}
	tlsSrv := redistest.StartTLS(t, true)
	err := run(context.Background(), nil, func(k string) string {
		return map[string]string{"REDIS_URL": tlsSrv.TLSURL, "REDIS_TLS_CERT": tlsSrv.Cert}[k]
	}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "REDIS_TLS_KEY") {
		t.Errorf("REDIS_TLS_CERT without REDIS_TLS_KEY: got %v, want an error naming REDIS_TLS_KEY", err)
	}
	err = run(context.Background(), nil, func(k string) string {
		return map[string]string{"REDIS_URL": srv.URL, "REDIS_TLS_CA": tlsSrv.CA}[k]
	}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "rediss://") {
		t.Errorf("REDIS_TLS_CA with a unix:// URL: got %v, want an error asking for rediss://", err)
	}
}
