package main

import (
	"context"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/spreadlb/spread/internal/redistest"
)

// 300 requests, 30 at a time, over three backends: each backend is chosen
// exactly 100 times, in either rotation mode. With ROTATION=redis every
// request is one LMOVE in Redis (concurrent ones share round trips); with
// ROTATION=local, none is.
func TestConcurrentRequestsSpreadExactly(t *testing.T) {
	backends := []string{"http://127.0.0.1:5000", "http://127.0.0.1:5001", "http://127.0.0.1:5002"}
	for _, tc := range []struct {
		rotation string
		lmoves   int
	}{
		{"redis", 300},
		{"local", 0},
	} {
		t.Run(tc.rotation, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			s := startServe(t, ctx, map[string]string{"ROTATION": tc.rotation}, backends...)
			client := &http.Client{
				Transport:     &http.Transport{MaxIdleConnsPerHost: 30},
				CheckRedirect: s.noFollower.CheckRedirect,
			}
			counts := concurrentGets(t, client, s.main+"/", "Location")
			for _, b := range backends {
				if got := counts[b+"/"]; got != 100 {
					t.Errorf("%s: got %d redirects, want 100 (all: %v)", b, got, counts)
				}
			}
			n, err := redistest.Calls(ctx, s.redis.Client, "lmove")
			if err != nil || n != int64(tc.lmoves) {
				t.Errorf("Redis counted (%d, %v) LMOVE calls, want %d", n, err, tc.lmoves)
			}
		})
	}
}

// concurrentGets sends 300 GET requests to url, 30 clients with 10
// requests each, and counts the answers by their header's value.
func concurrentGets(t *testing.T, client *http.Client, url, header string) map[string]int {
	t.Helper()
	var mu sync.Mutex
	counts := map[string]int{}
	var wg sync.WaitGroup
	for range 30 {
		wg.Go(func() {
			for range 10 {
				resp, err := client.Get(url)
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				counts[resp.Header.Get(header)]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return counts
}
