package main

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// SIGTERM (here: serve's context cancelled) while a request is in flight:
// the dispatcher stops accepting connections at once, still answers that
// request, then serve returns nil, which run turns into exit status 0.
func TestShutdownDrainsRequestsInFlight(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := startServe(t, ctx, map[string]string{"REDIS_TIMEOUT": "1m", "SHUTDOWN_TIMEOUT": "1m"}, three...)
	waitFor(t, "the dispatcher answers", func() bool { code, _ := s.readyz(t); return code == 200 })

	// Redis holds every write, so the request's rotation step waits in
	// Redis until unpaused: the request is in flight.
	rc := s.redis.Client
	if err := rc.Do(ctx, "CLIENT", "PAUSE", 60000, "WRITE").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.Do(context.Background(), "CLIENT", "UNPAUSE") })
	conn, err := net.Dial("tcp", s.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Minute))
	if _, err := conn.Write([]byte("GET /in-flight HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the request's step waits in Redis", func() bool {
		info, _ := rc.Info(ctx, "clients").Result()
		return strings.Contains(info, "blocked_clients:1\r")
	})

	cancel() // SIGTERM
	waitFor(t, "the main port stops accepting connections", func() bool {
		c, err := net.DialTimeout("tcp", s.ln.Addr().String(), time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	select {
	case err := <-s.errc:
		t.Fatalf("serve returned (%v) with a request in flight", err)
	default:
	}

	if err := rc.Do(context.Background(), "CLIENT", "UNPAUSE").Err(); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("the request in flight got no answer: %v", err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || loc != three[2]+"/in-flight" {
		t.Errorf("the request in flight: got %d %q, want 302 to %s/in-flight", resp.StatusCode, loc, three[2])
	}
	select {
	case err := <-s.errc:
		if err != nil {
			t.Errorf("serve after the drain: got %v, want nil (exit 0)", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("serve did not return after the drain")
	}
}
