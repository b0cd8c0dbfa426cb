package balance

import (
	"context"
	"maps"
	"net/http"
	"sync"
	"sync/atomic"
)

// Switch is the strategy a dispatcher runs, which may change while requests
// flow. A pick goes to the strategy current when it is made, and its Done
// to the strategy that made it (Backend remembers), so requests in flight
// finish under the strategy that picked them. The in-flight counts are the
// dispatcher's one Env.Inflight whatever the strategy, so they stay right
// across a change. A strategy's background work (Runner) runs while it is
// current, and stops when another takes its place.
type Switch struct {
	env Env
	cur atomic.Pointer[Running]

	mu      sync.Mutex
	ctx     context.Context // Run's, once it runs
	running sync.WaitGroup  // the Runners started
}

// Running is one strategy as a Switch runs it.
type Running struct {
	Name string
	// Settings are the settings given with it (a stored strategy's); nil
	// when it runs on the environment's alone.
	Settings map[string]string
	Plan     Plan
	Picker   Picker
	stop     context.CancelFunc // ends its Runner
}

// NewSwitch returns a Switch over env that runs name, configured as plan
// (Configure) with settings.
func NewSwitch(env Env, name string, settings map[string]string, plan Plan) (*Switch, error) {
	s := &Switch{env: env}
	r, err := s.Build(name, settings, plan)
	if err != nil {
		return nil, err
	}
	s.cur.Store(r)
	return s, nil
}

// Build makes the Picker of plan, without running it: Use does.
func (s *Switch) Build(name string, settings map[string]string, plan Plan) (*Running, error) {
	p, err := plan.New(s.env)
	if err != nil {
		return nil, err
	}
	return &Running{Name: name, Settings: maps.Clone(settings), Plan: plan, Picker: p}, nil
}

// Use makes r the current strategy and returns the one it replaces: new
// picks go to r from now on, and the old one's background work stops.
func (s *Switch) Use(r *Running) (old *Running) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old = s.cur.Swap(r)
	if old.stop != nil {
		old.stop()
	}
	if s.ctx != nil {
		s.start(r)
	}
	if rd, ok := As[Readiness](old.Picker); ok && rd.Degraded() != "" && s.env.OnDegraded != nil {
		// The new strategy starts afresh, not degraded; it says so
		// itself if Redis still fails it.
		s.env.OnDegraded(false)
	}
	return old
}

// start runs r's background work, if any, until it is replaced or Run's
// context is done. The caller holds mu.
func (s *Switch) start(r *Running) {
	rn, ok := r.Picker.(Runner)
	if !ok {
		return
	}
	ctx, stop := context.WithCancel(s.ctx)
	r.stop = stop
	s.running.Go(func() { rn.Run(ctx) })
}

// Current is the strategy running now.
func (s *Switch) Current() *Running { return s.cur.Load() }

// Pick asks the current strategy.
func (s *Switch) Pick(ctx context.Context, r *http.Request) (Backend, error) {
	return s.cur.Load().Picker.Pick(ctx, r)
}

// Unwrap returns the current strategy's Picker, for As.
func (s *Switch) Unwrap() Picker { return s.cur.Load().Picker }

// Run runs the current strategy's background work, and each next one's,
// until ctx is done.
func (s *Switch) Run(ctx context.Context) {
	s.mu.Lock()
	s.ctx = ctx
	s.start(s.cur.Load())
	s.mu.Unlock()
	<-ctx.Done()
	s.running.Wait()
}
