package balance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spreadlb/spread/internal/pool"
	"github.com/spreadlb/spread/internal/store"
)

// Mode is how the dispatcher delivers a request: Redirect or Proxy.
type Mode string

// The dispatcher's modes.
const (
	Redirect Mode = "redirect"
	Proxy    Mode = "proxy"
)

// Strategy is one balancing policy, as the registry knows it.
type Strategy struct {
	Name  string // the value of STRATEGY
	Usage string // one line for the settings table
	// Modes lists the modes it works in. A strategy that needs Done (it
	// counts requests in flight) works only in Proxy mode.
	Modes []Mode
	// New builds the strategy's Picker. A Picker that needs background work
	// (refreshing counts, say) also implements Runner.
	New func(Config) (Picker, error)
}

// Config is what a strategy may use.
type Config struct {
	Store *store.Store // the list's Redis side
	Pool  *pool.Pool   // the snapshot of the list: what is eligible
	// Rotation is ROTATION for round-robin: "redis" (the shared rotation,
	// the default) or "local" (a round robin in this process over Pool).
	Rotation string
	// HashKey is HASH_KEY for hash: "ip" (the default), "header:NAME",
	// "cookie:NAME" or "query:NAME".
	HashKey string
	// ID names this dispatcher among those sharing the list (in-flight
	// counts); empty means a new random one.
	ID string
	// Timeout bounds how long a Failover waits for Redis to answer a ping
	// (REDIS_TIMEOUT); zero means one second.
	Timeout time.Duration
	// OnDegraded, if set, is called with true when a Failover starts
	// answering from the pool because Redis failed, and false when Redis
	// is back.
	OnDegraded func(bool)
	// OnRedisError, if set, is called by a Failover for every pick whose
	// call to Redis failed (unavailable, REDIS_TIMEOUT ran out, or refused
	// for want of a permission), whether or not the fallback then answered.
	OnRedisError func(error)
	Log          *slog.Logger // nil discards
}

// Runner is implemented by Pickers with background work: Run does it until
// ctx is done.
type Runner interface {
	Run(ctx context.Context)
}

// Default is the strategy used when none is named.
const Default = "round-robin"

var registry = map[string]Strategy{}

// Register adds s to the registry. Each strategy file calls it from init.
func Register(s Strategy) {
	if _, dup := registry[s.Name]; dup || s.Name == "" || s.New == nil || len(s.Modes) == 0 {
		panic(fmt.Sprintf("balance: bad or duplicate strategy %q", s.Name))
	}
	registry[s.Name] = s
}

// ErrUnknownStrategy is returned (wrapped, naming it) for a name that no
// strategy registered.
var ErrUnknownStrategy = errors.New("unknown strategy")

// Lookup returns the strategy called name.
func Lookup(name string) (Strategy, error) {
	s, ok := registry[name]
	if !ok {
		return s, fmt.Errorf("%w %q: want one of %s", ErrUnknownStrategy, name, strings.Join(Names(), ", "))
	}
	return s, nil
}

// Names lists the registered strategies, sorted, the default first.
func Names() []string {
	names := slices.Sorted(maps.Keys(registry))
	if i := slices.Index(names, Default); i > 0 {
		names = slices.Insert(slices.Delete(names, i, i+1), 0, Default)
	}
	return names
}

// Supports reports whether s works in mode m.
func (s Strategy) Supports(m Mode) bool { return slices.Contains(s.Modes, m) }

func (c Config) log() *slog.Logger {
	if c.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Log
}
