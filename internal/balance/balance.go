// Package balance chooses the backend for each request. It is the seam
// between HTTP and the balancing: the dispatcher asks a Picker, and never
// sees Redis; the strategies reach Redis only through the narrow interfaces
// of Env, which the dispatcher fills with package store's types.
//
// Each strategy is one file that registers itself by name (registry.go)
// with what it needs: its settings, the modes it works in, the state it
// shares through Redis, and how to build its Picker:
//
//	round-robin  roundrobin.go  one shared, exact rotation step in Redis per request
//	random       random.go      a uniform pick from the pool, no Redis per request
//	hash         hash.go        rendezvous hashing on a request key: sticky, no Redis per request
//	least-conn   leastconn.go   fewest requests in flight over every dispatcher, counted in Redis
//	least-time   leasttime.go   Peak EWMA: response time × requests in flight, the cheaper of two
//	p2c          p2c.go         the better of two random backends, by requests in flight
//
// Strategies pick among the entries that package pool says are eligible
// (valid and not marked down by the health checks); round-robin applies the
// same rules inside its Redis script. A strategy that needs to hear how a
// request ended (it counts requests in flight, or learns response times)
// sets Backend.by, and the dispatcher calls Backend.Done with a Result when
// the backend's answer is over (proxy mode only: a redirecting dispatcher
// never sees a request end). What a strategy can show beyond its picks
// (its next pick, its in-flight counts, ...) it offers through the small
// interfaces of capability.go, which callers find with As. Failover keeps a
// strategy that needs Redis on the request path serving from the pool while
// Redis is down, and Switch changes the strategy while requests flow.
package balance

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"time"
)

// Picker chooses the backend for one request. It returns only URLs that
// passed backend.Parse, or an error: one of package pick's (ErrNoBackends,
// ErrWrongType, ErrAllDown, ErrNoValidBackend, ErrUnavailable,
// ErrNoPermission, a *pick.PermissionError naming the command refused, or
// ErrMisconfigured), or the context's error.
type Picker interface {
	Pick(ctx context.Context, r *http.Request) (Backend, error)
}

// Result is how a request that a pick sent to a backend ended.
type Result struct {
	// Latency is the time from the request's delivery to the backend's
	// response headers, or to the failure: what a latency-aware strategy
	// learns from (a long download is not a slow backend).
	Latency time.Duration
	// Duration is the time from the delivery to the end of the answer.
	Duration time.Duration
	// Status is the backend's status code; 0 if it did not answer.
	Status int
	// Err says why delivering failed (no connection, no answer in time);
	// nil if the backend answered, whatever its status.
	Err error
}

// Failed reports a request the backend did not serve: it could not be
// reached, did not answer, or answered with a 5xx.
func (r Result) Failed() bool { return r.Err != nil || r.Status >= 500 }

// ErrNotSent is the Err of a Result for a pick that the dispatcher gave
// back without sending the request (it landed on a backend ejected since
// the pick began): a strategy that counts requests in flight releases it,
// one that learns from answers learns nothing.
var ErrNotSent = errors.New("the pick was given back unsent")

// Finisher is implemented by strategies that hear how requests end: Done
// tells them that the request sent to b is over, and how.
type Finisher interface {
	Done(b Backend, r Result)
}

// Backend is one pick.
type Backend struct {
	URL   *url.URL // validated by backend.Parse; shared by picks, never modify
	Entry string   // the list entry picked, as the list holds it ("" where the strategy does not say)

	by Finisher // the strategy that hears how the request ends, if any
}

// Done tells the strategy that picked b that its request is over, and how.
// Call it exactly once per successful pick once the backend's answer has
// been relayed (or delivering failed). It does nothing for strategies that
// do not listen.
func (b Backend) Done(r Result) {
	if b.by != nil {
		b.by.Done(b, r)
	}
}
