package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"
)

// sentinelConf monitors the master "mymaster" at redis-master:6379, as the
// Sentinel docs' minimal example, with short timings so that a failover is
// quick: the master is down after 1 s without an answer, 2 of 3 agree.
const sentinelConf = `port 26379
sentinel resolve-hostnames yes
sentinel monitor mymaster redis-master 6379 2
sentinel down-after-milliseconds mymaster 1000
sentinel failover-timeout mymaster 5000
sentinel parallel-syncs mymaster 1
`

// sample is one request's outcome during the failover test.
type sample struct {
	at       time.Duration // since the master was killed (negative: before)
	status   int           // 0: no answer
	location string
}

// TestSentinelFailover runs the dispatcher against a Sentinel-managed
// master (one master, one replica, three Sentinels), kills the master under
// steady load, and measures the window in which requests were not
// redirected, or were redirected from the dispatcher's snapshot (degraded)
// rather than the shared rotation: from the kill until the Sentinels have
// promoted the replica and the dispatcher has found it. Before and after,
// the rotation is exact.
func TestSentinelFailover(t *testing.T) {
	ctx := t.Context()
	nw, err := network.New(ctx)
	testcontainers.CleanupNetwork(t, nw)
	if err != nil {
		t.Fatal(err)
	}
	node := func(alias string, cmd ...string) testcontainers.Container {
		return start(t, testcontainers.ContainerRequest{
			Image:          redisImage(),
			Cmd:            cmd,
			Networks:       []string{nw.Name},
			NetworkAliases: map[string][]string{nw.Name: {alias}},
			WaitingFor:     wait.ForLog("Ready to accept connections").WithStartupTimeout(time.Minute),
		})
	}
	master := node("redis-master", "redis-server", "--save", "", "--appendonly", "no")
	replica := node("redis-replica", "redis-server", "--save", "", "--appendonly", "no", "--replicaof", "redis-master", "6379")
	for i := 1; i <= 3; i++ {
		start(t, testcontainers.ContainerRequest{
			Image: redisImage(),
			// Sentinel rewrites its configuration file, so it gets a
			// writable copy of its own.
			Files: []testcontainers.ContainerFile{{
				Reader: strings.NewReader(sentinelConf), ContainerFilePath: "/data/sentinel.conf", FileMode: 0o666,
			}},
			Cmd:            []string{"redis-server", "/data/sentinel.conf", "--sentinel"},
			Networks:       []string{nw.Name},
			NetworkAliases: map[string][]string{nw.Name: {fmt.Sprintf("sentinel%d", i)}},
			WaitingFor:     wait.ForLog("+monitor master mymaster").WithStartupTimeout(time.Minute),
		})
	}
	url := "redis+sentinel://sentinel1:26379/0?master_name=mymaster&addr=sentinel2:26379&addr=sentinel3:26379"
	backends := []string{"http://a.example:5000", "http://b.example:5001", "http://c.example:5002"}

	// The seeder and the dispatcher reach Redis through the Sentinels; the
	// backends are names nobody serves, as the test only reads Locations:
	// health checks off, or they would rightly mark every backend down.
	s := &stack{network: nw.Name}
	if code, logs := s.seederEnv(t, map[string]string{"REDIS_URL": url}, append([]string{"seed"}, backends...)...); code != 0 {
		t.Fatalf("seeder seed through the Sentinels: exit %d\n%s", code, logs)
	}
	d := s.startDispatcher(t, map[string]string{"REDIS_URL": url, "REDIS_TIMEOUT": "500ms", "HEALTH_INTERVAL": "0"})
	dispatcher, admin := endpoint(t, d, "80/tcp"), endpoint(t, d, "8080/tcp")

	// Exact before: 30 requests, 10 per backend.
	counts, failed := spread(t, dispatcher, 1, 30)
	for _, b := range backends {
		if counts[b] != 10 || failed != 0 {
			t.Fatalf("before the failover: got %v and %d failed, want 10 per backend", counts, failed)
		}
	}

	// The replica must hold the list before the master dies: replication
	// is asynchronous.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		code, out, err := replica.Exec(ctx, []string{"redis-cli", "LLEN", "servers"})
		var got []byte
		if err == nil {
			got, _ = io.ReadAll(out)
		}
		if err == nil && code == 0 && strings.Contains(string(got), "3") {
			break
		}
		if time.Now().After(deadline) {
			info, _ := replicaInfo(ctx, replica)
			t.Fatalf("the replica does not hold the list after 30 s: LLEN said %q (%v)\n%s", got, err, info)
		}
	}

	// Steady load: 4 clients, each sending its next request as soon as the
	// last is answered (or has failed), until stop.
	client := &http.Client{Timeout: 5 * time.Second, CheckRedirect: noFollow.CheckRedirect}
	var (
		mu      sync.Mutex
		samples []sample
		killed  time.Time
		stop    = make(chan struct{})
		wg      sync.WaitGroup
	)
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				t0 := time.Now()
				resp, err := client.Get(dispatcher + "/")
				sm := sample{}
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					sm.status, sm.location = resp.StatusCode, strings.TrimSuffix(resp.Header.Get("Location"), "/")
				}
				mu.Lock()
				if !killed.IsZero() {
					sm.at = t0.Sub(killed)
				} else {
					sm.at = -time.Nanosecond
				}
				samples = append(samples, sm)
				mu.Unlock()
				if err != nil || sm.status != http.StatusFound {
					time.Sleep(20 * time.Millisecond) // fail fast, but do not spin
				}
			}
		})
	}
	// Meanwhile /readyz says when the dispatcher answers from its snapshot
	// ("degraded": Redis unavailable) instead of the shared rotation.
	var degradedAt []time.Duration
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			t0 := time.Now()
			resp, err := client.Get(admin + "/readyz")
			if err != nil {
				continue
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			mu.Lock()
			if !killed.IsZero() && strings.Contains(string(body), "degraded") {
				degradedAt = append(degradedAt, t0.Sub(killed))
			}
			mu.Unlock()
		}
	})
	time.Sleep(2 * time.Second)
	mu.Lock()
	killed = time.Now()
	mu.Unlock()
	zero := time.Duration(0)
	if err := master.Stop(ctx, &zero); err != nil { // SIGKILL: no goodbye to the replica
		t.Fatal(err)
	}

	// Wait until 3 s have passed with every request redirected, or 60 s.
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(250 * time.Millisecond)
		mu.Lock()
		recovered := false
		if n := len(samples); n > 0 {
			last := samples[n-1].at
			recovered = last > 3*time.Second
			for i := n - 1; i >= 0 && samples[i].at > last-3*time.Second; i-- {
				if samples[i].status != http.StatusFound {
					recovered = false
					break
				}
			}
		}
		mu.Unlock()
		if recovered {
			break
		}
	}
	close(stop)
	wg.Wait()

	var before, after, bad int
	var firstBad, lastBad time.Duration
	valid := map[string]bool{backends[0]: true, backends[1]: true, backends[2]: true}
	for _, sm := range samples {
		switch {
		case sm.at < 0 && sm.status == http.StatusFound:
			before++
		case sm.at < 0:
			t.Errorf("before the kill: a request got status %d", sm.status)
		case sm.status == http.StatusFound:
			after++
		default:
			if bad == 0 {
				firstBad = sm.at
			}
			bad++
			lastBad = sm.at
		}
		if sm.status == http.StatusFound && !valid[sm.location] {
			t.Errorf("a redirect to %q, which is not in the list", sm.location)
		}
	}
	if after == 0 || samples[len(samples)-1].status != http.StatusFound {
		statuses := map[int]int{}
		for _, sm := range samples {
			if sm.at >= 0 {
				statuses[sm.status]++
			}
		}
		if rc, err := d.Logs(ctx); err == nil {
			logs, _ := io.ReadAll(rc)
			rc.Close()
			lines := strings.Split(strings.TrimSpace(string(logs)), "\n")
			t.Logf("the dispatcher's last log lines:\n%s", strings.Join(lines[max(0, len(lines)-25):], "\n"))
		}
		t.Fatalf("requests were not all redirected again in the 60 s after the master was killed: statuses after the kill %v (0: no answer)", statuses)
	}
	window := "none"
	if bad > 0 {
		window = fmt.Sprintf("from %.1f s to %.1f s after the kill", firstBad.Seconds(), lastBad.Seconds())
	}
	fallback := "never"
	if n := len(degradedAt); n > 0 {
		fallback = fmt.Sprintf("from %.1f s to %.1f s after the kill", degradedAt[0].Seconds(), degradedAt[n-1].Seconds())
	}
	t.Logf("failover: %d requests before the kill, %d redirected after it, %d not redirected (window: %s); /readyz said degraded (answering from the snapshot) %s",
		before, after, bad, window, fallback)

	// Exact after: the promoted replica carries the rotation on.
	counts, failed = spread(t, dispatcher, 1, 30)
	for _, b := range backends {
		if counts[b] != 10 || failed != 0 {
			t.Errorf("after the failover: got %v and %d failed, want 10 per backend", counts, failed)
		}
	}
}

func replicaInfo(ctx context.Context, c testcontainers.Container) (string, error) {
	_, out, err := c.Exec(ctx, []string{"redis-cli", "INFO", "replication"})
	if err != nil {
		return "", err
	}
	b, err := io.ReadAll(out)
	return string(b), err
}
