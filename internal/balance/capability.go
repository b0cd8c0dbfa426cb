package balance

import "context"

// What a strategy's Picker may offer beyond its picks. The dispatcher, its
// dashboard and its metrics ask for these with As, whatever the strategy:
// none of them names one.

// Rotator is a strategy whose next pick can be shown: round-robin.
type Rotator interface {
	// Rotation returns the end of the rotation: its last n entries in
	// order, the next pick last, as LRANGE shows the shared one.
	Rotation(ctx context.Context, n int) (Rotation, error)
}

// Rotation is the end of a rotation as it stands.
type Rotation struct {
	Entries []string // the last ones, in order, the next pick last
	Len     int      // how many entries the whole rotation holds
	// Local is true for a rotation kept in this process over a copy of
	// the list, not shared with other dispatchers.
	Local bool
}

// InFlightCounter is a strategy that counts requests in flight across
// every dispatcher on the list: least-conn, p2c.
type InFlightCounter interface {
	// InFlight returns the requests in flight by entry, every
	// dispatcher's, as last read.
	InFlight() map[string]int64
}

// Readiness is a strategy that knows better than the list's length whether
// it can serve: Failover, which is degraded while Redis is down.
type Readiness interface {
	// Len is the list's length from Redis, or the snapshot's while
	// degraded.
	Len(ctx context.Context) (int64, error)
	// Degraded says why the strategy serves without Redis, or "".
	Degraded() string
}

// Runner is a Picker with background work: Run does it until ctx is done.
type Runner interface {
	Run(ctx context.Context)
}

// Wrapper is a Picker that wraps another: Failover, Switch.
type Wrapper interface {
	Unwrap() Picker
}

// As returns p as a T, or the first Picker that p wraps (Wrapper) that is
// one, or false.
func As[T any](p Picker) (T, bool) {
	for p != nil {
		if t, ok := p.(T); ok {
			return t, true
		}
		w, ok := p.(Wrapper)
		if !ok {
			break
		}
		p = w.Unwrap()
	}
	var zero T
	return zero, false
}
