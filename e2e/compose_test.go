package e2e

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	tcexec "github.com/testcontainers/testcontainers-go/exec"
	"github.com/testcontainers/testcontainers-go/modules/compose"
)

// TestCompose does what the README tells a newcomer to do:
//
//	docker compose up --build
//	curl -L http://localhost/
//
// and checks that each call prints Hello, World! from the next backend;
// then that `docker compose restart redis` keeps the list and its tally.
// It needs host ports 80, 8080 and 5000-5002 free.
func TestCompose(t *testing.T) {
	stack, err := compose.NewDockerComposeWith(
		compose.WithStackFiles("../compose.yaml"),
		compose.StackIdentifier("spread-e2e"),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := stack.Down(ctx, compose.RemoveOrphans(true), compose.RemoveVolumes(true)); err != nil {
			t.Errorf("compose down: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Minute)
	defer cancel()
	// WithOsEnv: GO_IMAGE, RUNTIME_IMAGE and REDIS_IMAGE reach compose.yaml
	// as they would from a user's shell.
	if err := stack.WithOsEnv().Up(ctx); err != nil {
		t.Fatalf("compose up: %v", err)
	}

	// curl -L http://localhost/ (the dispatcher starts after the seeder has
	// finished and the backends are healthy, so the first call succeeds; a
	// short retry covers the moment its port opens).
	curlL := func() (int, string, string, error) {
		resp, err := http.Get("http://localhost/")
		if err != nil {
			return 0, "", "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("X-Backend"), string(body), err
	}
	var order []string
	deadline := time.Now().Add(time.Minute)
	for len(order) < 6 {
		status, backend, body, err := curlL()
		if err != nil && len(order) == 0 && time.Now().Before(deadline) {
			time.Sleep(500 * time.Millisecond)
			continue
		}
		if err != nil || status != http.StatusOK || body != "Hello, World!" {
			t.Fatalf("call %d: got %d %q (%v), want 200 %q", len(order), status, body, err, "Hello, World!")
		}
		order = append(order, backend)
	}
	// compose.yaml seeds :5000, :5001, :5002 and LMOVE takes from the right.
	want := []string{"backend3", "backend2", "backend1", "backend3", "backend2", "backend1"}
	if !slices.Equal(order, want) {
		t.Errorf("six calls were answered by %q, want %q", order, want)
	}

	// docker compose restart redis: the list and its tally survive
	// (append-only file on the redis-data volume), and the calls go on.
	redisC, err := stack.ServiceContainer(ctx, "redis")
	if err != nil {
		t.Fatal(err)
	}
	redisCLI := func(args ...string) string {
		t.Helper()
		code, out, err := redisC.Exec(ctx, append([]string{"redis-cli"}, args...), tcexec.Multiplexed())
		if err != nil || code != 0 {
			t.Fatalf("redis-cli %q: exit %d, %v", args, code, err)
		}
		b, _ := io.ReadAll(out)
		return strings.TrimSpace(string(b))
	}
	list, tally := redisCLI("LRANGE", "servers", "0", "-1"), redisCLI("HGETALL", "{servers}:picks")
	stop := 10 * time.Second
	if err := redisC.Stop(ctx, &stop); err != nil {
		t.Fatal(err)
	}
	if err := redisC.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "redis answers after its restart", func() bool {
		code, _, err := redisC.Exec(ctx, []string{"redis-cli", "ping"})
		return err == nil && code == 0
	})
	if got := redisCLI("LRANGE", "servers", "0", "-1"); got != list {
		t.Errorf("the list after a restart of redis:\n%s\nwant, as before:\n%s", got, list)
	}
	if got := redisCLI("HGETALL", "{servers}:picks"); got != tally {
		t.Errorf("the tally after a restart of redis:\n%s\nwant, as before:\n%s", got, tally)
	}
	// The dispatcher's connections broke with the restart: its first pick
	// may fail over to its snapshot of the list (docs/behaviour.md); every
	// call is answered all the same.
	for i := range 3 {
		var status int
		var body string
		var err error
		for try := 0; try < 20; try++ {
			if status, _, body, err = curlL(); err == nil {
				break
			}
			time.Sleep(250 * time.Millisecond) // the dispatcher's container was not restarted: only a connection reset
		}
		if err != nil || status != http.StatusOK || body != "Hello, World!" {
			t.Errorf("call %d after the restart: got %d %q (%v), want 200 %q", i, status, body, err, "Hello, World!")
		}
	}
}
