package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/spreadlb/spread/internal/balance"
	"github.com/spreadlb/spread/internal/store"
)

// strategies is the strategy this dispatcher runs, and how it changes while
// requests flow: every strategyPoll it reads the strategy stored beside the
// list (`seeder strategy`, POST /strategy), and when that changed, checks
// it and switches to it; with none stored, it runs its own STRATEGY. So
// every dispatcher on the list changes within strategyPoll of a store.
//
// A stored strategy this dispatcher cannot run (its mode does not support
// it, a setting does not parse, its Redis user may not run what it needs)
// is refused: the dispatcher keeps its strategy, logs why once, and
// /readyz and the dashboard say so until the stored one changes.
type strategies struct {
	sw   *balance.Switch
	st   *store.Store
	cfg  config // MODE, STRATEGY and its plan, the environment
	m    *metrics
	log  *slog.Logger
	poll time.Duration

	mu      sync.Mutex
	raw     string // the stored document last seen, "" for none
	refusal string // why the stored strategy is refused, "" when it is not
}

// strategyPoll is how often a dispatcher reads the stored strategy.
const strategyPoll = 250 * time.Millisecond

// newStrategies starts the dispatcher's own STRATEGY in w's environment.
func newStrategies(w *wiring, cfg config, m *metrics, log *slog.Logger) (*strategies, error) {
	sw, err := balance.NewSwitch(w.env, cfg.strategy, nil, cfg.plan)
	if err != nil {
		return nil, err
	}
	return &strategies{sw: sw, st: w.st, cfg: cfg, m: m, log: log, poll: strategyPoll}, nil
}

// Run watches the stored strategy until ctx is done.
func (s *strategies) Run(ctx context.Context) {
	t := time.NewTicker(s.poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.check(ctx)
	}
}

// check reads the stored strategy once and follows it if it changed.
func (s *strategies) check(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, s.cfg.redisTimeout)
	stored, raw, ok, err := s.st.Strategy(rctx)
	cancel()
	if err != nil && !errors.Is(err, store.ErrBadStoredStrategy) {
		return // Redis does not answer: keep what runs; the picks say so
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if raw == s.raw {
		return
	}
	s.raw = raw
	switch {
	case err != nil:
		s.refuse(raw, err)
	case !ok:
		s.use(ctx, s.cfg.strategy, nil, s.cfg.plan, "the stored strategy was cleared")
	default:
		plan, err := s.configure(ctx, stored.Name, stored.Settings)
		if err != nil {
			s.refuse(stored.Name, err)
			return
		}
		s.use(ctx, stored.Name, stored.Settings, plan, stored.By)
	}
}

// configure checks that this dispatcher can run name with settings (over
// its environment) and returns its plan.
func (s *strategies) configure(ctx context.Context, name string, settings map[string]string) (balance.Plan, error) {
	_, plan, err := balance.ConfigureWith(name, settings, s.cfg.getenv, s.cfg.mode)
	if err != nil {
		return plan, err
	}
	actx, cancel := context.WithTimeout(ctx, s.cfg.redisTimeout)
	defer cancel()
	if err := s.st.CheckAccess(actx, redisOps(s.cfg, plan.Needs)...); err != nil {
		return plan, err
	}
	return plan, nil
}

// use switches to name and says so. The caller holds mu.
func (s *strategies) use(ctx context.Context, name string, settings map[string]string, plan balance.Plan, by string) {
	s.refusal = ""
	cur := s.sw.Current()
	if cur.Name == name && maps.Equal(cur.Settings, settings) {
		return
	}
	r, err := s.sw.Build(name, settings, plan)
	if err != nil {
		s.refuse(name, err)
		return
	}
	old := s.sw.Use(r)
	s.m.setStrategy(name)
	s.log.Info("strategy changed", "from", old.Name, "to", name, "settings", describeSettings(settings), "by", by)
}

// refuse keeps the current strategy and says why. The caller holds mu.
func (s *strategies) refuse(what string, err error) {
	s.refusal = fmt.Sprintf("stored strategy %s refused: %v", what, err)
	s.log.Error("the stored strategy cannot run here; keeping the current one", "stored", what,
		"current", s.sw.Current().Name, "err", err)
}

// Refusal says why the stored strategy is refused, or "".
func (s *strategies) Refusal() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refusal
}

// ops is what the strategy running now, and the rest of this dispatcher,
// ask of Redis (for /readyz's permission check).
func (s *strategies) ops() []store.Op {
	return redisOps(s.cfg, s.sw.Current().Plan.Needs)
}

// describeSettings writes settings as KEY=VALUE pairs, "" for none.
func describeSettings(settings map[string]string) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		out = append(out, k+"="+settings[k])
	}
	return strings.Join(out, " ")
}

// strategyAPI is the admin port's view of the strategy, and, with
// ADMIN_WRITE=1, its control:
//
//	GET    /strategy  the strategy running here, the one stored, and why it is refused, if so (JSON)
//	POST   /strategy  {"name": "least-conn", "settings": {"KEY": "VALUE"}}: store it for every
//	                  dispatcher on the list, as `seeder strategy` does; 400 naming the field
//	                  for one this dispatcher cannot run, and nothing stored
//	DELETE /strategy  remove the stored strategy: every dispatcher goes back to its STRATEGY
//
// Writes are refused with 403 unless ADMIN_WRITE=1: the admin port has no
// authentication (docs/security.md).
type strategyAPI struct {
	strats *strategies
	write  bool
	log    *slog.Logger
}

func (a *strategyAPI) mount(e *echo.Echo) {
	e.GET("/strategy", a.get)
	e.POST("/strategy", a.post)
	e.DELETE("/strategy", a.clear)
}

// strategyState is what GET /strategy answers.
type strategyState struct {
	Name     string                `json:"name"`               // running here
	Settings map[string]string     `json:"settings,omitempty"` // given with it, if stored
	Mode     string                `json:"mode"`
	Stored   *store.StoredStrategy `json:"stored,omitempty"` // the one stored beside the list, if any
	Refused  string                `json:"refused,omitempty"`
}

func (a *strategyAPI) get(c echo.Context) error {
	cur := a.strats.sw.Current()
	out := strategyState{Name: cur.Name, Settings: cur.Settings, Mode: string(a.strats.cfg.mode), Refused: a.strats.Refusal()}
	ctx, cancel := context.WithTimeout(c.Request().Context(), a.strats.cfg.redisTimeout)
	defer cancel()
	stored, _, ok, err := a.strats.st.Strategy(ctx)
	switch {
	case err != nil && !errors.Is(err, store.ErrBadStoredStrategy):
		return c.JSON(http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
	case ok && err == nil:
		out.Stored = &stored
	}
	return c.JSON(http.StatusOK, out)
}

// strategyRequest is POST /strategy's body.
type strategyRequest struct {
	Name     string            `json:"name"`
	Settings map[string]string `json:"settings"`
}

func (a *strategyAPI) post(c echo.Context) error {
	if !a.write {
		return a.forbidden(c)
	}
	var req strategyRequest
	dec := json.NewDecoder(http.MaxBytesReader(c.Response(), c.Request().Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return c.JSON(http.StatusBadRequest, map[string]string{"field": "body",
			"error": fmt.Sprintf("want a JSON object {\"name\": STRATEGY, \"settings\": {\"KEY\": \"VALUE\"}}: %v", err)})
	}
	if req.Name == "" {
		return c.JSON(http.StatusBadRequest, map[string]string{"field": "name",
			"error": "want one of " + strings.Join(balance.Names(), ", ")})
	}
	if _, _, err := balance.ConfigureWith(req.Name, req.Settings, a.strats.cfg.getenv, a.strats.cfg.mode); err != nil {
		return c.JSON(http.StatusBadRequest, map[string]string{"field": badField(req, err), "error": err.Error()})
	}
	stored := store.StoredStrategy{Name: req.Name, Settings: req.Settings, At: time.Now().UTC(),
		By: fmt.Sprintf("admin (POST /strategy from %s)", c.RealIP())}
	ctx, cancel := context.WithTimeout(c.Request().Context(), a.strats.cfg.redisTimeout)
	defer cancel()
	if err := a.strats.st.SetStrategy(ctx, stored); err != nil {
		return c.JSON(http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
	}
	a.log.Info("strategy stored for every dispatcher", "strategy", req.Name, "settings", describeSettings(req.Settings), "by", stored.By)
	return c.JSON(http.StatusOK, stored)
}

func (a *strategyAPI) clear(c echo.Context) error {
	if !a.write {
		return a.forbidden(c)
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), a.strats.cfg.redisTimeout)
	defer cancel()
	had, err := a.strats.st.ClearStrategy(ctx)
	if err != nil {
		return c.JSON(http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
	}
	a.log.Info("stored strategy cleared", "was_stored", had, "by", fmt.Sprintf("admin (DELETE /strategy from %s)", c.RealIP()))
	return c.JSON(http.StatusOK, map[string]bool{"cleared": had})
}

func (a *strategyAPI) forbidden(c echo.Context) error {
	return c.JSON(http.StatusForbidden, map[string]string{
		"error": "writes to the admin port are off: start the dispatcher with ADMIN_WRITE=1 (the admin port has no authentication: docs/security.md), or use `seeder strategy`"})
}

// badField names the part of req that err is about: a setting's name, else
// "name".
func badField(req strategyRequest, err error) string {
	for k := range req.Settings {
		if strings.Contains(err.Error(), k) {
			return "settings." + k
		}
	}
	return "name"
}
