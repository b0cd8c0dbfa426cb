package e2e

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"
)

// TestCluster runs the seeder and the dispatcher against a Redis Cluster
// (one node holding every slot: Redis refuses keys of different slots in
// one command or script even then), through REDIS_URL=redis+cluster://,
// and checks the rotation is exact: 30 requests, 10 per backend.
func TestCluster(t *testing.T) {
	ctx := t.Context()
	nw, err := network.New(ctx)
	testcontainers.CleanupNetwork(t, nw)
	if err != nil {
		t.Fatal(err)
	}
	node := start(t, testcontainers.ContainerRequest{
		Image: redisImage(),
		// A lone node does not know its own address: it announces its
		// name on the network instead, which clients resolve.
		Cmd: []string{"redis-server", "--save", "", "--appendonly", "no", "--cluster-enabled", "yes",
			"--cluster-announce-hostname", "redis-cluster", "--cluster-preferred-endpoint-type", "hostname"},
		Networks:       []string{nw.Name},
		NetworkAliases: map[string][]string{nw.Name: {"redis-cluster"}},
		WaitingFor:     wait.ForLog("Ready to accept connections").WithStartupTimeout(time.Minute),
	})
	if code, _, err := node.Exec(ctx, []string{"redis-cli", "CLUSTER", "ADDSLOTSRANGE", "0", "16383"}); err != nil || code != 0 {
		t.Fatalf("CLUSTER ADDSLOTSRANGE: exit %d, %v", code, err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		_, out, err := node.Exec(ctx, []string{"redis-cli", "CLUSTER", "INFO"})
		if err == nil {
			if info, _ := io.ReadAll(out); strings.Contains(string(info), "cluster_state:ok") {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the cluster did not reach cluster_state:ok")
		}
	}

	url := "redis+cluster://redis-cluster:6379"
	backends := []string{"http://a.example:5000", "http://b.example:5001", "http://c.example:5002"}
	s := &stack{network: nw.Name}
	if code, logs := s.seederEnv(t, map[string]string{"REDIS_URL": url}, append([]string{"seed"}, backends...)...); code != 0 {
		t.Fatalf("seeder seed through the cluster: exit %d\n%s", code, logs)
	}
	// The backends are names nobody serves: no health checks.
	d := s.startDispatcher(t, map[string]string{"REDIS_URL": url, "HEALTH_INTERVAL": "0"})
	counts, failed := spread(t, endpoint(t, d, "80/tcp"), 3, 10)
	for _, b := range backends {
		if counts[b] != 10 || failed != 0 {
			t.Errorf("through the cluster: got %v and %d failed, want 10 per backend", counts, failed)
			break
		}
	}
}
