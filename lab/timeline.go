package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// What the failure and retries scenarios share: a run of fixed length with
// things happening at set moments, counted second by second.

// event is something done to the pool at a moment of a run.
type event struct {
	at   time.Duration
	what string // for the report and the chart's mark
	do   func(ctx context.Context) error
}

// eventDoc is an event as the report records it.
type eventDoc struct {
	AtS  float64 `json:"at_s"`
	What string  `json:"what"`
}

func eventDocs(es []event) []eventDoc {
	out := make([]eventDoc, len(es))
	for i, e := range es {
		out[i] = eventDoc{AtS: e.at.Seconds(), What: e.what}
	}
	return out
}

// perSecond counts a run's requests by the second they were sent in.
type perSecond struct {
	sent, errors []int
}

// runTimeline drives an open-loop load of rate req/s at urls for length,
// doing each event at its moment, and counts the results by the second
// each request was sent in. It returns once every request has ended and
// every event has been done, with the first event's error, if any.
func runTimeline(ctx context.Context, cfg config, rate int, length time.Duration, urls []string, name string,
	events []event) (outcome, perSecond, error) {
	c := cfg
	c.rate, c.duration = rate, length
	secs := int(length / time.Second)
	ps := perSecond{sent: make([]int, secs), errors: make([]int, secs)}
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	var timers []*time.Timer
	for _, e := range events {
		wg.Add(1)
		timers = append(timers, time.AfterFunc(e.at, func() {
			defer wg.Done()
			if err := e.do(ctx); err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("%s at %s: %w", e.what, e.at, err)
				}
				mu.Unlock()
			}
		}))
	}
	o := attackAll(ctx, c, urls, name, func(res *vegeta.Result) {
		// vegeta's clock starts a moment after ours: a request sent at
		// the very end counts in the last second.
		i := min(max(int(res.Timestamp.Sub(start)/time.Second), 0), secs-1)
		ps.sent[i]++
		if res.Error != "" || res.Code < 200 || res.Code > 299 {
			ps.errors[i]++
		}
	})
	// Events still to come when the load ended early are not done.
	for _, t := range timers {
		if t.Stop() {
			wg.Done()
		}
	}
	wg.Wait()
	return o, ps, firstErr
}

// setKnobs sends a POST /control body to a backend's control port.
func (b runningBackend) setKnobs(ctx context.Context, knobs map[string]any) error {
	body, err := json.Marshal(knobs)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.control+"/control", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("POST /control %s: %s: %s", body, resp.Status, msg)
	}
	return nil
}

// seederOn runs the seeder on the list key of the stack's Redis.
func (s *stack) seederOn(ctx context.Context, key string, args ...string) error {
	cmd := exec.CommandContext(ctx, s.bins.seeder, args...)
	cmd.Env = append(os.Environ(), "REDIS_URL="+s.redisURL, "REDIS_KEY="+key)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("seeder %v: %w: %s", args, err, out)
	}
	return nil
}

// urls are the backends' URLs, as the list holds them.
func (s *stack) urls() []string {
	out := make([]string, len(s.backends))
	for i, b := range s.backends {
		out[i] = b.url
	}
	return out
}

// perSecondDoc is a timeline's counts in a report: for each second of the
// run, the requests sent in it, and those of them that failed (a status
// other than 2xx, or no answer in time).
type perSecondDoc struct {
	ErrorsPerS []float64 `json:"errors_per_s"`
	SentPerS   []float64 `json:"sent_per_s"`
}

func (ps perSecond) doc() perSecondDoc {
	return perSecondDoc{ErrorsPerS: toFloats(ps.errors), SentPerS: toFloats(ps.sent)}
}

// toFloats converts counts for a chart or a report's series.
func toFloats(xs []int) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = float64(x)
	}
	return out
}
