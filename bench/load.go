package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// result is what one load run measured.
type result struct {
	requests int64         // responses received in the measured window
	errors   int64         // connection errors, timeouts and answers other than 2xx or 3xx
	rps      float64       // requests per second
	p50, p99 time.Duration // latency percentiles
}

// loader drives load at a URL for a duration with a number of connections.
type loader interface {
	name() string
	run(ctx context.Context, url string, conns int, d time.Duration) (result, error)
}

// wrk is the load generator of choice: written in C, it leaves the cores
// to the dispatcher more than a Go client would.
type wrk struct{ threads int }

func (w wrk) name() string { return fmt.Sprintf("wrk -t%d", w.threads) }

func (w wrk) run(ctx context.Context, url string, conns int, d time.Duration) (result, error) {
	secs := max(1, int(d.Round(time.Second)/time.Second))
	cmd := exec.CommandContext(ctx, "wrk", "-t"+strconv.Itoa(w.threads), "-c"+strconv.Itoa(conns),
		"-d"+strconv.Itoa(secs)+"s", "--latency", url)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return result{}, fmt.Errorf("wrk: %w\n%s", err, out)
	}
	return parseWrk(string(out))
}

// parseWrk reads the summary wrk prints with --latency.
func parseWrk(out string) (result, error) {
	var r result
	var found struct{ rps, p50, p99, count bool }
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == "Requests/sec:":
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return r, fmt.Errorf("wrk: requests/sec %q: %w", f[1], err)
			}
			r.rps, found.rps = v, true
		case len(f) == 2 && (f[0] == "50%" || f[0] == "99%"):
			v, err := parseWrkDuration(f[1])
			if err != nil {
				return r, err
			}
			if f[0] == "50%" {
				r.p50, found.p50 = v, true
			} else {
				r.p99, found.p99 = v, true
			}
		case len(f) >= 4 && f[1] == "requests" && f[2] == "in":
			v, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return r, fmt.Errorf("wrk: request count %q: %w", f[0], err)
			}
			r.requests, found.count = v, true
		case len(f) == 5 && f[0] == "Non-2xx":
			v, _ := strconv.ParseInt(f[4], 10, 64)
			r.errors += v
		case len(f) >= 2 && f[0] == "Socket" && f[1] == "errors:":
			// "Socket errors: connect 0, read 0, write 0, timeout 0"
			for i := 2; i+1 < len(f); i += 2 {
				v, _ := strconv.ParseInt(strings.TrimSuffix(f[i+1], ","), 10, 64)
				r.errors += v
			}
		}
	}
	if !found.rps || !found.p50 || !found.p99 || !found.count {
		return r, fmt.Errorf("wrk: no summary with latency percentiles in its output:\n%s", out)
	}
	return r, nil
}

// parseWrkDuration reads wrk's "812.00us", "1.52ms", "2.01s".
func parseWrkDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.Replace(s, "us", "µs", 1))
	if err != nil {
		return 0, fmt.Errorf("wrk: latency %q: %w", s, err)
	}
	return d, nil
}

// goLoad is the fallback where wrk is not installed: conns keep-alive
// connections, each sending a request as soon as the last answer is read.
// It does not follow redirects; like wrk, it counts an answer other than
// 2xx or 3xx as an error. Being Go, it competes with the dispatcher
// for the same cores more than wrk does, so its figures are lower; the
// ratios between contestants are what to read.
type goLoad struct{}

func (goLoad) name() string { return "Go load generator" }

func (goLoad) run(ctx context.Context, url string, conns int, d time.Duration) (result, error) {
	tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var (
		mu        sync.Mutex
		latencies []time.Duration
		errs      int64
		firstErr  error
		wg        sync.WaitGroup
	)
	start := time.Now()
	for range conns {
		wg.Go(func() {
			var mine []time.Duration
			var bad int64
			var err1 error
			for ctx.Err() == nil {
				t0 := time.Now()
				resp, err := client.Get(url)
				if err != nil {
					if ctx.Err() == nil {
						bad++
						err1 = firstOf(err1, err)
					}
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode < 200 || resp.StatusCode > 399 {
					bad++
					err1 = firstOf(err1, fmt.Errorf("status %d", resp.StatusCode))
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			latencies = append(latencies, mine...)
			errs += bad
			firstErr = firstOf(firstErr, err1)
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if len(latencies) == 0 {
		return result{}, errors.Join(errors.New("no request succeeded"), firstErr)
	}
	slices.Sort(latencies)
	return result{
		requests: int64(len(latencies)),
		errors:   errs,
		rps:      float64(len(latencies)) / elapsed.Seconds(),
		p50:      percentile(latencies, 50),
		p99:      percentile(latencies, 99),
	}, nil
}

func firstOf(first, next error) error {
	if first != nil {
		return first
	}
	return next
}

// percentile of sorted durations, nearest rank.
func percentile(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p+99)/100 - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
