package e2e

import (
	"context"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMakeUp runs `make up` as the README's "Run it" says, with the many
// profile (COMPOSE_PROFILES=many: four dispatchers), in a copy of this
// checkout that has no .env, with GO_IMAGE, RUNTIME_IMAGE and REDIS_IMAGE
// taken out of its environment: a newcomer's first `make up`. Where the base
// images cannot be pulled (the CI machine), make up must notice, build the
// stand-ins itself and try again; where they can, it pulls them. Either way
// it returns only when the stack is ready, so the very first request to each
// dispatcher, sent once and not retried, is answered: a redirect to the next
// backend of the one shared rotation; and every container is healthy.
//
// It needs Compose (the v2 plugin, or docker-compose v1) and host ports 80,
// 8080, 5000-5002, 8081-8083 and 9081-9083 free.
func TestMakeUp(t *testing.T) {
	dir := copyCheckout(t)
	const project = "spread-e2e-up"
	env := []string{"COMPOSE_PROJECT_NAME=" + project, "COMPOSE_PROFILES=many"}
	for _, kv := range os.Environ() {
		switch name, _, _ := strings.Cut(kv, "="); name {
		case "GO_IMAGE", "RUNTIME_IMAGE", "REDIS_IMAGE", "COMPOSE_PROJECT_NAME", "COMPOSE_PROFILES", "COMPOSE_FILE":
		default:
			env = append(env, kv)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Minute)
	defer cancel()
	makeIn := func(ctx context.Context, target string) (string, error) {
		cmd := exec.CommandContext(ctx, "make", target)
		cmd.Dir, cmd.Env = dir, env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if out, err := makeIn(ctx, "down"); err != nil {
			t.Errorf("make down: %v\n%s", err, out)
		}
		if out, err := exec.CommandContext(ctx, "docker", "volume", "rm", "-f", project+"_redis-data").CombinedOutput(); err != nil {
			t.Errorf("docker volume rm: %v\n%s", err, out)
		}
	})

	out, err := makeIn(ctx, "up")
	if err != nil {
		t.Fatalf("make up: %v\n%s", err, out)
	}
	if standins, err := os.ReadFile(filepath.Join(dir, ".env")); err == nil {
		t.Logf("make up could not pull, and built the stand-ins:\n%s", standins)
	}

	// What `docker compose ps` shows right after: every service up and
	// healthy (the seeder, done, exited). Before make up waited, it
	// returned with the dispatchers just started, "(health: starting)".
	ps, err := exec.CommandContext(ctx, "docker", "ps", "--filter", "label=com.docker.compose.project="+project,
		"--format", "{{.Names}}\t{{.Status}}").Output()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(ps)), "\n")
	healthy := 0
	for _, l := range lines {
		if strings.Contains(l, "(healthy)") {
			healthy++
		}
	}
	if len(lines) != 8 || healthy != 8 {
		t.Errorf("right after make up, %d of %d containers are healthy, want 8 of 8 (redis, 3 backends, 4 dispatchers):\n%s", healthy, len(lines), ps)
	}

	// The list is :5000, :5001, :5002 and LMOVE takes from the right: four
	// requests, one to each dispatcher, take four steps of one rotation.
	client := &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	want := []string{"http://localhost:5002/", "http://localhost:5001/", "http://localhost:5000/", "http://localhost:5002/"}
	for i, port := range []string{"80", "8081", "8082", "8083"} {
		resp, err := client.Get("http://localhost:" + port + "/")
		if err != nil {
			t.Errorf("first request to :%s right after make up: %v, want a redirect", port, err)
			continue
		}
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || loc != want[i] {
			t.Errorf("first request to :%s right after make up: got %d to %q, want 302 to %q", port, resp.StatusCode, loc, want[i])
		}
	}
}

// copyCheckout copies the repository's working tree, without .git, .env and
// what builds and tests leave (bin/, out/), to a temporary directory, so that
// what make writes there (.env) leaves this checkout as it was.
func copyCheckout(t *testing.T) string {
	t.Helper()
	src, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	err = filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		switch rel {
		case ".git", ".env", "bin", "out":
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type().IsRegular():
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			return os.WriteFile(target, b, info.Mode().Perm())
		}
		return nil // symlinks and the like: the build needs none
	})
	if err != nil {
		t.Fatalf("copying the checkout: %v", err)
	}
	return dst
}
