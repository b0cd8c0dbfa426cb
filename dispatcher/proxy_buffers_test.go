package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"
)

// bigBody is answer k of TestProxyBigAnswersArriveWhole: several copy
// buffers long, a different length and different bytes for every k.
func bigBody(k int) []byte {
	b := make([]byte, 3*copyBufferSize+1000*k)
	for i := range b {
		b[i] = byte(k*31 + i*7 + i>>10)
	}
	return b
}

// The proxy copies answers through pooled buffers: 60 answers, 20 at a
// time, each longer than three buffers and sent in two parts, all arrive
// whole and unmixed, each with its own length and bytes.
func TestProxyBigAnswersArriveWhole(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	big := newBackend(t, "big", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k, err := strconv.Atoi(r.URL.Query().Get("k"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body := bigBody(k)
		half := len(body) / 2
		w.Write(body[:half])
		w.(http.Flusher).Flush() // the rest comes later, in another read
		w.Write(body[half:])
	}))
	s := startServe(t, ctx, proxyEnv(), big.srv.URL)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 20}}
	defer client.CloseIdleConnections()

	const n, concurrent = 60, 20
	errs := make(chan error, n)
	sem := make(chan struct{}, concurrent)
	var wg sync.WaitGroup
	for k := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			resp, err := client.Get(fmt.Sprintf("%s/big?k=%d", s.main, k))
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			got, err := io.ReadAll(resp.Body)
			want := bigBody(k)
			switch {
			case err != nil:
				errs <- fmt.Errorf("answer %d: %w", k, err)
			case resp.StatusCode != http.StatusOK:
				errs <- fmt.Errorf("answer %d: got status %d, want 200", k, resp.StatusCode)
			case len(got) != len(want):
				errs <- fmt.Errorf("answer %d: got %d bytes, want %d", k, len(got), len(want))
			case !bytes.Equal(got, want):
				i := 0
				for got[i] == want[i] {
					i++
				}
				errs <- fmt.Errorf("answer %d: byte %d differs: got %d, want %d", k, i, got[i], want[i])
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := big.hits.Load(); got != n {
		t.Errorf("the backend got %d requests, want %d", got, n)
	}
}
