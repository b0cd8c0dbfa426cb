package main

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
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
			var mu sync.Mutex
			counts := map[string]int{}
			var wg sync.WaitGroup
			for range 30 { // 30 clients, 10 requests each
				wg.Go(func() {
					for range 10 {
						resp, err := client.Get(s.main + "/")
						if err != nil {
							t.Error(err)
							return
						}
						resp.Body.Close()
						mu.Lock()
						counts[resp.Header.Get("Location")]++
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			for _, b := range backends {
				if got := counts[b+"/"]; got != 100 {
					t.Errorf("%s: got %d redirects, want 100 (all: %v)", b, got, counts)
				}
			}
			info, err := s.redis.Client.Info(ctx, "commandstats").Result()
			if err != nil {
				t.Fatal(err)
			}
			got := "no LMOVE"
			if _, after, ok := strings.Cut(info, "cmdstat_lmove:"); ok {
				got, _, _ = strings.Cut(after, ",")
			}
			want := "no LMOVE"
			if tc.lmoves > 0 {
				want = "calls=300"
			}
			if got != want {
				t.Errorf("Redis commandstats: got %s, want %s", got, want)
			}
		})
	}
}
