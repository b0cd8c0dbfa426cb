package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
)

// Images built once for the whole run, by TestMain.
var images = map[string]string{} // program -> image tag

func redisImage() string {
	if img := os.Getenv("REDIS_IMAGE"); img != "" {
		return img
	}
	return "redis:7-alpine"
}

// imageTag is the tag of the images this run builds: E2E_TAG, or "latest".
// Runs that share one Docker engine at once (two checkouts, say) keep out of
// each other's way by setting different tags.
func imageTag() string {
	if tag := os.Getenv("E2E_TAG"); tag != "" {
		return tag
	}
	return "latest"
}

// buildArgs passes GO_IMAGE and RUNTIME_IMAGE through when they are set;
// otherwise the Dockerfile's defaults apply.
func buildArgs() map[string]*string {
	args := map[string]*string{}
	for _, name := range []string{"GO_IMAGE", "RUNTIME_IMAGE"} {
		if v := os.Getenv(name); v != "" {
			args[name] = &v
		}
	}
	return args
}

func TestMain(m *testing.M) {
	if err := buildImages(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// buildImages builds the backend, seeder and dispatcher targets of the
// repository's Dockerfile. The first compiles all three programs; the other
// two come from the layer cache.
func buildImages() error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	for _, app := range []string{"backend", "seeder", "dispatcher"} {
		tag, err := buildImage(ctx, app)
		if err != nil {
			return err
		}
		images[app] = tag
	}
	return nil
}

// buildImage builds the Dockerfile's target as spread-e2e-<target> and
// returns its tag.
func buildImage(ctx context.Context, target string) (string, error) {
	provider, err := testcontainers.NewDockerProvider()
	if err != nil {
		return "", fmt.Errorf("docker: %w", err)
	}
	defer provider.Close()
	start := time.Now()
	var log bytes.Buffer
	tag, err := provider.BuildImage(ctx, &testcontainers.ContainerRequest{
		FromDockerfile: testcontainers.FromDockerfile{
			Context:        "..",
			Dockerfile:     "Dockerfile",
			Repo:           "spread-e2e-" + target,
			Tag:            imageTag(),
			BuildArgs:      buildArgs(),
			BuildLogWriter: &log,
			BuildOptionsModifier: func(o *client.ImageBuildOptions) {
				o.Target = target
			},
		},
	})
	if err != nil {
		return "", fmt.Errorf("build %s image: %w\n%s", target, err, log.String())
	}
	fmt.Fprintf(os.Stderr, "e2e: built %s in %s\n", tag, time.Since(start).Round(time.Second))
	return tag, nil
}

// labImage builds the lab's console image the first time a test needs it:
// only TestConsole does, so the other tests never wait for it.
var labImage = sync.OnceValues(func() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	return buildImage(ctx, "lab")
})
