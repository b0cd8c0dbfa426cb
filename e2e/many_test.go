package e2e

import (
	"bufio"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Three dispatchers over one Redis list, as compose.yaml's "many" profile
// runs them: 300 requests, 30 at a time, handed to the dispatchers in turn,
// give each backend exactly 100 redirects. Every request took its own step
// of the one shared rotation, whichever dispatcher it reached: Redis
// counted 300 LMOVE calls and its tally hash says 100 per backend, and each
// dispatcher answered its 100 with 302s.
func TestManyDispatchersShareOneRotation(t *testing.T) {
	s := startStack(t)
	dispatchers := []string{s.dispatcher}
	admins := []string{s.admin}
	for range 2 {
		dc := s.startDispatcher(t, nil)
		dispatchers = append(dispatchers, endpoint(t, dc, "80/tcp"))
		admins = append(admins, endpoint(t, dc, "8080/tcp"))
	}
	s.reseed(t)
	before := s.lmoveCalls(t)

	client := &http.Client{
		Timeout:       10 * time.Second,
		Transport:     &http.Transport{MaxIdleConnsPerHost: 30},
		CheckRedirect: noFollow.CheckRedirect,
	}
	var next atomic.Int64
	var mu sync.Mutex
	counts := map[string]int{} // backend -> redirects there
	answered := map[string]int{}
	failed := 0
	var wg sync.WaitGroup
	for range 30 { // 30 clients, 10 requests each
		wg.Go(func() {
			for range 10 {
				d := dispatchers[(next.Add(1)-1)%int64(len(dispatchers))]
				resp, err := client.Get(d + "/")
				mu.Lock()
				if err != nil || resp.StatusCode != http.StatusFound {
					failed++
				} else {
					counts[strings.TrimSuffix(resp.Header.Get("Location"), "/")]++
					answered[d]++
				}
				mu.Unlock()
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		})
	}
	wg.Wait()

	if failed != 0 {
		t.Errorf("%d of 300 requests failed or were not redirected", failed)
	}
	for _, b := range s.backends {
		if counts[b] != 100 {
			t.Errorf("%s (%s): got %d redirects, want 100 (all: %v)", s.names[b], b, counts[b], counts)
		}
	}
	for i, d := range dispatchers {
		if answered[d] != 100 {
			t.Errorf("dispatcher %d (%s): answered %d requests with 302, want 100", i+1, d, answered[d])
		}
		if got := redirectsCounted(t, admins[i]); got != 100 {
			t.Errorf("dispatcher %d: its /metrics counts %d redirects, want 100", i+1, got)
		}
	}
	if n := s.lmoveCalls(t) - before; n != 300 {
		t.Errorf("Redis counted %d LMOVE calls for 300 requests, want 300", n)
	}
	tally, err := s.redis.HGetAll(t.Context(), "{servers}:picks").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range s.backends {
		if tally[b] != "100" {
			t.Errorf("tally {servers}:picks: %s got %q steps, want 100 (all: %v)", s.names[b], tally[b], tally)
		}
	}
}

// redirectsCounted adds up a dispatcher's spread_requests_total series
// with status 302, from its /metrics.
func redirectsCounted(t *testing.T, admin string) int {
	t.Helper()
	resp, err := http.Get(admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	total := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "spread_requests_total{") || !strings.Contains(line, `status="302"`) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("/metrics: %q: %v", line, err)
		}
		total += int(v)
	}
	return total
}
