package e2e

import (
	"context"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go/modules/compose"
)

// TestCompose does what the README tells a newcomer to do:
//
//	docker compose up --build
//	curl -L http://localhost/
//
// and checks that each call prints Hello, World! from the next backend.
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
}
