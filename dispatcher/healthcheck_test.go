package main

import (
	"context"
	"io"
	"net"
	"testing"
)

// `dispatcher healthcheck`, the command compose.yaml runs as each
// dispatcher's healthcheck, passes only when the dispatcher on ADMIN_PORT is
// ready to answer requests (/readyz), not merely running (/healthz): with an
// empty list it fails, once the list is seeded it passes. So compose, and
// `make up` waiting on it, call a dispatcher healthy when its first request
// gets an answer.
func TestHealthcheckWaitsForReadiness(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := startServe(t, ctx, nil)
	_, port, err := net.SplitHostPort(s.admin.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	healthcheck := func() error {
		env := map[string]string{"ADMIN_PORT": port, "REDIS_URL": s.redis.URL}
		return run(ctx, []string{"healthcheck"}, func(k string) string { return env[k] }, io.Discard)
	}
	if err := healthcheck(); err == nil {
		t.Error("healthcheck with an empty list: got success, want a failure (/readyz answers 503)")
	}
	if err := s.store.Replace(ctx, []string{"http://127.0.0.1:5000"}); err != nil {
		t.Fatal(err)
	}
	if err := healthcheck(); err != nil {
		t.Errorf("healthcheck with a list: got %v, want success", err)
	}
}
