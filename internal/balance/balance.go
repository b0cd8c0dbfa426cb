// Package balance chooses the backend for each request. It is the seam
// between HTTP and the balancing: the dispatcher asks a Picker, and never
// sees Redis.
//
// Each strategy is one file holding one type that implements Picker, and
// registers itself by name (registry.go):
//
//	round-robin  roundrobin.go  one shared, exact rotation step in Redis per request
//	random       random.go      a uniform pick from the pool, no Redis per request
//	hash         hash.go        rendezvous hashing on a request key: sticky, no Redis per request
//	least-conn   leastconn.go   fewest requests in flight over every dispatcher, counted in Redis
//	p2c          p2c.go         the better of two random backends, by requests in flight
//
// Strategies pick among the entries that package pool says are eligible
// (valid and not marked down by the health checks); round-robin applies the
// same rules inside its Redis script. A strategy that counts requests in
// flight hears that a request ended through Backend.Done, which the
// dispatcher calls when the backend's answer is over (proxy mode only: a
// redirecting dispatcher never sees the request end). Failover keeps a
// strategy that needs Redis on the request path serving from the pool while
// Redis is down.
package balance

import (
	"context"
	"net/http"
	"net/url"
)

// Picker chooses the backend for one request. It returns only URLs that
// passed backend.Parse, or an error: one of package pick's: ErrNoBackends,
// ErrWrongType, ErrAllDown, ErrNoValidBackend, ErrUnavailable,
// ErrNoPermission (a *pick.PermissionError naming the command refused) or
// ErrMisconfigured, or the context's error.
type Picker interface {
	Pick(ctx context.Context, r *http.Request) (Backend, error)
}

// Finisher is implemented by strategies that count requests in flight: Done
// tells them that the request sent to b is over (err is what delivering it
// returned, nil if the backend answered).
type Finisher interface {
	Done(b Backend, err error)
}

// Backend is one pick.
type Backend struct {
	URL   *url.URL // validated by backend.Parse; shared by picks, never modify
	Entry string   // the list entry picked, as the list holds it ("" where the strategy does not say)

	by Finisher // the strategy that counts this request in flight, if any
}

// Done tells the strategy that picked b that its request is over. Call it
// exactly once per successful pick once the backend's answer has been
// relayed (or delivering failed). It does nothing for strategies that do not
// count requests in flight.
func (b Backend) Done(err error) {
	if b.by != nil {
		b.by.Done(b, err)
	}
}
