package balance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/spreadlb/spread/internal/app"
	"github.com/spreadlb/spread/internal/backend"
	"github.com/spreadlb/spread/internal/batch"
	"github.com/spreadlb/spread/internal/pool"
)

// Mode is how the dispatcher delivers a request: Redirect or Proxy.
type Mode string

// The dispatcher's modes.
const (
	Redirect Mode = "redirect"
	Proxy    Mode = "proxy"
)

// Need names state that a strategy keeps in Redis beside the list, so
// that the dispatcher checks, at start and in /readyz, that its Redis user
// may run the commands it takes.
type Need int

// The state strategies may need.
const (
	// NeedRotation: the shared rotation's step script (Env.Rotation).
	NeedRotation Need = iota + 1
	// NeedInflight: the in-flight counts of every dispatcher
	// (Env.Inflight).
	NeedInflight
)

// Strategy is one balancing policy, as the registry knows it. Each
// strategy's file declares one and registers it from init.
type Strategy struct {
	Name  string // the value of STRATEGY
	Usage string // one line for the settings table
	// Modes lists the modes it works in. A strategy that needs Done (it
	// counts requests in flight) works only in Proxy mode.
	Modes []Mode
	// Settings are the environment variables it reads: the dispatcher's
	// settings table and the README's list them from here.
	Settings []app.Setting
	// Configure reads the strategy's settings through getenv (a Setting's
	// Get gives its default) and checks them for mode m, naming the
	// variable and what it accepts when one is wrong. It returns what the
	// strategy needs and how to build it.
	Configure func(getenv func(string) string, m Mode) (Plan, error)
	// Variants are settings worth comparing side by side (in the lab),
	// beside the defaults: hash with a balance factor, say.
	Variants []Variant
}

// Variant is a strategy with some of its settings set.
type Variant struct {
	Name     string            // a label: "hash-bounded"
	Settings map[string]string // setting name -> value
}

// Plan is a strategy configured.
type Plan struct {
	// Needs is what it keeps in Redis beside the list.
	Needs []Need
	// New builds its Picker. A Picker with background work implements
	// Runner.
	New func(Env) (Picker, error)
}

// Env is what a strategy's Picker may use. The dispatcher fills it with
// package store's types; a strategy touches Redis through nothing else.
type Env struct {
	// Pool is the snapshot of the list: what is eligible.
	Pool *pool.Pool
	// Rotation takes steps of the shared rotation (NeedRotation).
	Rotation RedisRotation
	// Inflight returns this dispatcher's side of the shared in-flight
	// counts (NeedInflight), one for the dispatcher's life, whatever the
	// strategy: a request picked by one strategy may end under another.
	Inflight func() Counts
	// Redis is what degraded mode asks of Redis (Failover).
	Redis Redis
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
	// OnFallback, if set, is called for each pick that the strategy could
	// not make its own way and made by a round-robin step instead (hash:
	// a request without the key).
	OnFallback func()
	Log        *slog.Logger // nil discards
}

// RedisRotation is the shared rotation in Redis: *store.Rotation.
type RedisRotation interface {
	// NextEntry takes one step and returns the entry it lands on, as the
	// list holds it, and its URL.
	NextEntry(ctx context.Context) (string, *url.URL, error)
	// Tail returns the last n entries of the list in order, the next pick
	// last, and the list's length.
	Tail(ctx context.Context, n int) ([]string, int64, error)
	// Stats says how the steps so far shared round trips.
	Stats() batch.Stats
	// SetHints tells the steps what the pool knows ahead of Redis: the
	// entries this dispatcher has just ejected, and slow start's shares.
	SetHints(ejected []string, ramp map[string]float64)
}

// Counts is this dispatcher's side of the in-flight counts that every
// dispatcher on the list shares: *store.Inflight.
type Counts interface {
	// Pick takes the candidate (URL: the entry) with the fewest requests
	// in flight per unit of weight, over every dispatcher, and counts one
	// more request to it, in one step in Redis.
	Pick(ctx context.Context, cands []backend.Weighted) (string, error)
	// Add counts one more request to entry, here; Sync sends it.
	Add(entry string)
	// Release counts one request to entry as over.
	Release(entry string)
	// Load is the requests in flight to entry: the others' as last read,
	// plus this dispatcher's now.
	Load(entry string) int64
	// Shared is every dispatcher's counts by entry, as last read.
	Shared() map[string]int64
	// Sync sends this dispatcher's counts and reads the others'.
	Sync(ctx context.Context) (map[string]int64, error)
	// SetEager makes every Release send the new count at once (true), or
	// leaves it for the next Sync or Pick (false).
	SetEager(eager bool)
}

// Redis is what a Failover asks of Redis: *store.Store.
type Redis interface {
	Ping(ctx context.Context) error
	Len(ctx context.Context) (int64, error)
}

// Default is the strategy used when none is named.
const Default = "round-robin"

var registry = map[string]Strategy{}

// Register adds s to the registry. Each strategy file calls it from init.
func Register(s Strategy) {
	if _, dup := registry[s.Name]; dup || s.Name == "" || s.Configure == nil || len(s.Modes) == 0 {
		panic(fmt.Sprintf("balance: bad or duplicate strategy %q", s.Name))
	}
	registry[s.Name] = s
}

// ErrUnknownStrategy is returned (wrapped, naming it) for a name that no
// strategy registered.
var ErrUnknownStrategy = errors.New("unknown strategy")

// ErrUnsupportedMode is returned (wrapped, naming both) for a strategy that
// does not work in the dispatcher's mode.
var ErrUnsupportedMode = errors.New("strategy does not work in this mode")

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
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		if (names[i] == Default) != (names[j] == Default) {
			return names[i] == Default
		}
		return names[i] < names[j]
	})
	return names
}

// NamesFor lists the strategies that work in mode m, as Names orders them.
func NamesFor(m Mode) []string {
	var out []string
	for _, n := range Names() {
		if registry[n].Supports(m) {
			out = append(out, n)
		}
	}
	return out
}

// Supports reports whether s works in mode m.
func (s Strategy) Supports(m Mode) bool { return slices.Contains(s.Modes, m) }

// Settings lists every strategy's settings, each once, in the order of
// Names: the dispatcher's settings table adds them to its own.
func Settings() []app.Setting {
	var out []app.Setting
	seen := map[string]bool{}
	for _, n := range Names() {
		for _, st := range registry[n].Settings {
			if !seen[st.Name] {
				seen[st.Name] = true
				out = append(out, st)
			}
		}
	}
	return out
}

// Configure looks name up and configures it for mode m from getenv: the
// one check a STRATEGY value, and a stored strategy with its settings,
// pass before a dispatcher runs it.
func Configure(name string, getenv func(string) string, m Mode) (Strategy, Plan, error) {
	s, err := Lookup(name)
	if err != nil {
		return s, Plan{}, err
	}
	if !s.Supports(m) {
		return s, Plan{}, fmt.Errorf("%w: %s needs MODE=%s (MODE is %q): it hears when each request ends, and a redirecting dispatcher never sees a request end; in MODE=%s use one of %s",
			ErrUnsupportedMode, name, s.Modes[0], m, m, strings.Join(NamesFor(m), ", "))
	}
	p, err := s.Configure(getenv, m)
	return s, p, err
}

// ErrUnknownSetting is returned (wrapped, naming it and the strategy's
// settings) for a setting given with a strategy that does not read it.
var ErrUnknownSetting = errors.New("not a setting of the strategy")

// ConfigureWith is Configure with settings given with the strategy (a
// stored strategy's), which must be name's own; the settings not given take
// getenv's values (the dispatcher's environment), then their defaults.
func ConfigureWith(name string, settings map[string]string, getenv func(string) string, m Mode) (Strategy, Plan, error) {
	s, err := Lookup(name)
	if err != nil {
		return s, Plan{}, err
	}
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		if !slices.ContainsFunc(s.Settings, func(st app.Setting) bool { return st.Name == k }) {
			return s, Plan{}, fmt.Errorf("%s: %w %s, which reads %s", k, ErrUnknownSetting, name, settingNames(s))
		}
	}
	return Configure(name, func(k string) string {
		if v, ok := settings[k]; ok {
			return v
		}
		if getenv == nil {
			return ""
		}
		return getenv(k)
	}, m)
}

// settingNames lists s's settings for a message.
func settingNames(s Strategy) string {
	if len(s.Settings) == 0 {
		return "none"
	}
	var names []string
	for _, st := range s.Settings {
		names = append(names, st.Name)
	}
	return strings.Join(names, ", ")
}

// CheckSettings configures every strategy for mode m from getenv, so that
// a bad value of any strategy's setting is refused at start, before a
// switch to that strategy meets it.
func CheckSettings(getenv func(string) string, m Mode) error {
	for _, n := range Names() {
		if _, err := registry[n].Configure(getenv, m); err != nil {
			return err
		}
	}
	return nil
}

func (e Env) log() *slog.Logger {
	if e.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return e.Log
}
