package store_test

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spreadlb/spread/internal/redisconn"

	"github.com/spreadlb/spread/internal/redistest"
	"github.com/spreadlb/spread/internal/store"
)

// A one-node Redis Cluster that holds every slot: Redis refuses a command
// or script whose keys are in different slots (CROSSSLOT) even then, so
// this checks that every key of a rotation shares the list's slot.
func startCluster(t *testing.T) string {
	t.Helper()
	port := freePortPair(t)
	srv := redistest.Start(t, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes")
	ctx := context.Background()
	if err := srv.Client.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, 16383).Err(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		info, err := srv.Client.Do(ctx, "CLUSTER", "INFO").Text()
		if err == nil && strings.Contains(info, "cluster_state:ok") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster not ok: %v\n%s", err, info)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Sprintf("redis+cluster://127.0.0.1:%d", port)
}

// clusterClient starts a one-node Cluster and connects to it as the
// programs do.
func clusterClient(t *testing.T) redis.UniversalClient {
	t.Helper()
	rdb, err := redisconn.Connect(startCluster(t), "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

func TestRotationOnACluster(t *testing.T) {
	rdb := clusterClient(t)
	ctx := context.Background()
	for _, key := range []string{"servers", "{lb}servers"} {
		s := store.NewStore(rdb, key, nil)
		if err := s.Replace(ctx, three); err != nil {
			t.Fatalf("%s: Replace: %v", key, err)
		}
		expectPicks(t, s, []string{three[2], three[1], three[0], three[2]})
		want := map[string]int64{three[0]: 1, three[1]: 1, three[2]: 2}
		if got, err := s.Tally(ctx); err != nil || !maps.Equal(got, want) {
			t.Errorf("%s: Tally: got (%v, %v), want %v", key, got, err, want)
		}
		if v, err := s.Version(ctx); err != nil || v == "" {
			t.Errorf("%s: Version: got (%q, %v)", key, v, err)
		}
	}
}

// least-conn's scripts reach the keys they are not given (another
// dispatcher's counts, to take them out of the sum when it expires): on a
// Cluster they must share the list's slot too.
func TestInflightOnACluster(t *testing.T) {
	rdb := clusterClient(t)
	ctx := context.Background()
	for _, key := range []string{"servers", "{lb}servers"} {
		s := store.NewStore(rdb, key, nil)
		dead, alive := s.NewInflight("dead", true), s.NewInflight("alive", true)
		dead.SetTTL(300 * time.Millisecond)
		held := pickIn(t, dead, cands)
		e := pickIn(t, alive, cands)
		if e == held {
			t.Errorf("%s: alive picked %q, which dead holds", key, e)
		}
		alive.Release(e)
		waitShared(t, alive, map[string]int64{}) // dead expired: its count is gone
		if got, err := s.InFlight(ctx); err != nil || len(got) != 0 {
			t.Errorf("%s: InFlight after dead expired and alive released: got (%v, %v), want none", key, got, err)
		}
	}
}

// freePortPair finds a port p such that p and p+10000 (the cluster bus) are
// both free on loopback now.
func freePortPair(t *testing.T) int {
	t.Helper()
	for range 100 {
		p := 20000 + rand.IntN(10000)
		a, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		b, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+10000))
		a.Close()
		if err != nil {
			continue
		}
		b.Close()
		return p
	}
	t.Fatal("no free pair of ports p, p+10000 in 20000-39999")
	return 0
}
