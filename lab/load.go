package main

import (
	"context"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// poissonPacer sends requests at independent, exponentially distributed
// gaps with mean 1/rate: the arrivals of many clients that do not wait for
// each other. It is open loop: the next arrival never waits for an answer.
// The same seed gives the same arrival times, so every strategy meets the
// same load.
type poissonPacer struct {
	rate float64 // requests per second
	rng  *rand.Rand

	mu   sync.Mutex
	n    uint64        // the hit whose arrival time is next
	next time.Duration // its arrival time, from the start of the attack
}

var _ vegeta.Pacer = (*poissonPacer)(nil)

func newPoissonPacer(rate float64, seed uint64) *poissonPacer {
	p := &poissonPacer{rate: rate, rng: rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))}
	p.next = p.gap()
	return p
}

func (p *poissonPacer) gap() time.Duration {
	return time.Duration(p.rng.ExpFloat64() / p.rate * float64(time.Second))
}

// Pace returns how long to wait before sending hit number hits (counting
// from 0), given the time elapsed since the start. A late hit goes at once.
func (p *poissonPacer) Pace(elapsed time.Duration, hits uint64) (time.Duration, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.n < hits {
		p.next += p.gap()
		p.n++
	}
	return max(0, p.next-elapsed), false
}

// Rate is the mean rate, the same at every moment.
func (p *poissonPacer) Rate(time.Duration) float64 { return p.rate }

// pacer returns the arrivals for cfg: Poisson or evenly spaced.
func pacer(cfg config) vegeta.Pacer {
	if cfg.arrivals == "constant" {
		return vegeta.ConstantPacer{Freq: cfg.rate, Per: time.Second}
	}
	return newPoissonPacer(float64(cfg.rate), cfg.seed)
}

// userTargeter sends GET to each of urls in turn, each request as one of
// users users, picked at random (seeded): the X-User header that
// STRATEGY=hash hashes on. The user is in the query string too (the backend
// ignores it), because vegeta's results keep the URL and not the request
// headers: that is how the lab tells which user each answer was for. sent,
// if not nil, is called as each request goes out.
func userTargeter(urls []string, users int, seed uint64, sent func()) vegeta.Targeter {
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(seed, 0x5bd1e995))
	next := 0
	return func(t *vegeta.Target) error {
		mu.Lock()
		u, url := rng.IntN(users), urls[next]
		next = (next + 1) % len(urls)
		mu.Unlock()
		if sent != nil {
			sent()
		}
		name := "user-" + strconv.Itoa(u)
		t.Method, t.URL = http.MethodGet, url+"?"+userQuery+"="+name
		t.Header = http.Header{userHeader: {name}}
		return nil
	}
}

// userQuery is the query parameter that repeats X-User.
const userQuery = "user"

// outcome is what the load generator saw of one strategy.
type outcome struct {
	requests, errors int
	latencies        []time.Duration // every request's, errors included (a timeout counts as the timeout)
	answered         map[string]int  // successful answers by X-Backend
	errorKinds       map[string]int  // errors by kind: "timeout", "HTTP 502", ...
	users            map[string]*userSeen
}

// userSeen is what one user's successful answers were.
type userSeen struct {
	answers int
	first   string // the backend of the first answer
	moved   bool   // a later answer came from another backend
}

func newOutcome() outcome {
	return outcome{answered: map[string]int{}, errorKinds: map[string]int{}, users: map[string]*userSeen{}}
}

// attack drives cfg's open-loop load at url for cfg.duration and collects
// every result. It returns once every request has been answered or has
// timed out.
func attack(ctx context.Context, cfg config, url, name string) outcome {
	return attackAll(ctx, cfg, []string{url}, name, nil)
}

// attackAll is attack spread over urls in turn (each dispatcher of a
// scenario), calling each, if not nil, with every result as it comes.
func attackAll(ctx context.Context, cfg config, urls []string, name string, each func(*vegeta.Result)) outcome {
	a := vegeta.NewAttacker(vegeta.Timeout(cfg.timeout), vegeta.Redirects(vegeta.NoFollow),
		vegeta.KeepAlive(true), vegeta.MaxBody(4096))
	o := newOutcome()
	stop := context.AfterFunc(ctx, func() { a.Stop() })
	defer stop()
	for res := range a.Attack(userTargeter(urls, cfg.users, cfg.seed, nil), pacer(cfg), cfg.duration, name) {
		o.add(res)
		if each != nil {
			each(res)
		}
	}
	return o
}

func (o *outcome) add(res *vegeta.Result) {
	o.requests++
	o.latencies = append(o.latencies, res.Latency)
	if res.Error != "" || res.Code < 200 || res.Code > 299 {
		o.errors++
		o.errorKinds[errorKind(res)]++
		return
	}
	backend := res.Headers.Get("X-Backend")
	o.answered[backend]++
	if _, q, ok := strings.Cut(res.URL, "?"+userQuery+"="); ok {
		u := o.users[q]
		if u == nil {
			u = &userSeen{first: backend}
			o.users[q] = u
		}
		u.answers++
		u.moved = u.moved || backend != u.first
	}
}

// sticky is the share of users with two answers or more whose answers all
// came from one backend; 0 if no user had two.
func (o *outcome) sticky() float64 {
	var many, stayed int
	for _, u := range o.users {
		if u.answers >= 2 {
			many++
			if !u.moved {
				stayed++
			}
		}
	}
	if many == 0 {
		return 0
	}
	return float64(stayed) / float64(many)
}

// errorKind names what went wrong, briefly.
func errorKind(res *vegeta.Result) string {
	switch {
	case res.Code != 0:
		return "HTTP " + strconv.Itoa(int(res.Code))
	case strings.Contains(res.Error, "Client.Timeout") || strings.Contains(res.Error, "deadline exceeded"):
		return "timeout"
	case strings.Contains(res.Error, "connection refused"):
		return "connection refused"
	}
	if len(res.Error) > 60 {
		return res.Error[:60] + "…"
	}
	return res.Error
}

// percentile is the q-quantile (0 < q ≤ 1) of sorted by the nearest-rank
// method: the smallest value with at least q of the values at or below it.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// percentiles returns p50, p90 and p99 of d.
func percentiles(d []time.Duration) (p50, p90, p99 time.Duration) {
	s := slices.Clone(d)
	slices.Sort(s)
	return percentile(s, 0.50), percentile(s, 0.90), percentile(s, 0.99)
}
