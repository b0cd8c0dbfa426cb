package main

import (
	"context"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/spreadlb/spread/internal/balance"
	"github.com/spreadlb/spread/internal/store"
)

// The console's page and its JSON API:
//
//	GET  /                the page (web/console.html)
//	GET  /static/...      Chart.js and its licence (web/)
//	GET  /healthz         200 "ok"
//	GET  /api/state       the numbers now (consoleState)
//	GET  /api/history     the state and the last 2 minutes, a value a second (consoleHistory)
//	GET  /api/strategies  the strategies a proxying dispatcher runs, their settings and variants
//	POST /api/strategy    {"name": "least-conn", "settings": {"KEY": "VALUE"}}: stored for every dispatcher
//	POST /api/load        {"rate": 300}: requests per second from now on; 0 stops
//	POST /api/backend     {"url": ENTRY, "latency": "200ms", "jitter": "0s", "capacity": 4, "fail_rate": 0, "down": false}
//	POST /api/scenario    {"name": "one-slow"}: several knobs at once (scenarios)
//
// A write that cannot be applied gets 400 {"field", "error"} naming the
// field, and changes nothing. Writes are accepted from loopback clients;
// others must send LAB_TOKEN (allowWrite).

//go:embed web
var webFS embed.FS

// console serves the page and the API over a pool, with the live load.
type console struct {
	pool  *pool
	load  *liveLoad
	watch *watcher
	token string
	log   *slog.Logger
	stopW context.CancelFunc
	done  chan struct{} // closed when the watcher has stopped
}

// newConsole starts the load through p's dispatchers at the lab's rate,
// and the watcher.
func newConsole(ctx context.Context, cfg serveConfig, p *pool, log *slog.Logger) (*console, error) {
	l, err := startLiveLoad(liveOptions{targets: p.targets(), users: cfg.lab.users, timeout: cfg.lab.timeout,
		seed: cfg.lab.seed, rate: float64(cfg.lab.rate)})
	if err != nil {
		return nil, err
	}
	wctx, stop := context.WithCancel(ctx)
	c := &console{pool: p, load: l, watch: newWatcher(p, time.Now), token: cfg.token, log: log, stopW: stop, done: make(chan struct{})}
	c.watch.read(wctx) // the first reading, before the first page asks
	go func() {
		defer close(c.done)
		c.watch.run(wctx)
	}()
	return c, nil
}

// stop stops the load, waiting for the requests in flight, and the watcher.
func (c *console) stop() {
	c.load.stop()
	c.stopW()
	<-c.done
}

func (c *console) handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(webFS, "web")
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		b, _ := webFS.ReadFile("web/console.html")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(b)
	})
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("GET /api/state", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, c.watch.state(c.load))
	})
	mux.HandleFunc("GET /api/history", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, c.watch.history(c.load))
	})
	mux.HandleFunc("GET /api/strategies", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, strategyChoices())
	})
	mux.HandleFunc("POST /api/strategy", c.write(c.postStrategy))
	mux.HandleFunc("POST /api/load", c.write(c.postLoad))
	mux.HandleFunc("POST /api/backend", c.write(c.postBackend))
	mux.HandleFunc("POST /api/scenario", c.write(c.postScenario))
	return securityHeaders(mux)
}

// securityHeaders: the page loads nothing from elsewhere and may not be
// framed.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		h.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// fieldErr is a write refused: the status, and the field it is about.
type fieldErr struct {
	status int
	controlError
}

func (e *fieldErr) Error() string { return e.Field + ": " + e.controlError.Error }

func badField(field, format string, args ...any) *fieldErr {
	return &fieldErr{http.StatusBadRequest, controlError{field, fmt.Sprintf(format, args...)}}
}

// maxBody bounds a write's body; a real one is under 200 bytes.
const maxBody = 64 << 10

// write wraps a write: it checks who may write (allowWrite), reads the
// body as a JSON object, and answers the handler's result or its refusal.
func (c *console) write(h func(r *http.Request, body map[string]json.RawMessage) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if status, msg := c.allowWrite(r); status != 0 {
			writeJSON(w, status, map[string]string{"error": msg})
			return
		}
		raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		var body map[string]json.RawMessage
		if err == nil {
			err = json.Unmarshal(raw, &body)
		}
		if err != nil || body == nil {
			writeJSON(w, http.StatusBadRequest, controlError{"body", "want a JSON object, at most 64 KiB"})
			return
		}
		out, err := h(r, body)
		var fe *fieldErr
		switch {
		case errors.As(err, &fe):
			writeJSON(w, fe.status, fe.controlError)
		case err != nil:
			c.log.Error("console write failed", "path", r.URL.Path, "err", err)
			writeJSON(w, http.StatusBadGateway, map[string]string{"error": err.Error()})
		default:
			writeJSON(w, http.StatusOK, out)
		}
	}
}

// allowWrite says whether r may change anything: 0 if so, else the status
// and why not.
//
//   - The body must be JSON (Content-Type: application/json): a form that
//     another site's page posts cannot be, without the browser asking this
//     server first (CORS), which it never allows.
//   - A browser's Origin, when sent, must be this server's own.
//   - A client on loopback that reached the console by localhost or an IP
//     address may write; one that came by another host name might be a
//     page of a site whose name was made to resolve to 127.0.0.1 (DNS
//     rebinding), and is treated as remote.
//   - Any other client needs LAB_TOKEN, in X-Lab-Token or ?token=.
func (c *console) allowWrite(r *http.Request) (int, string) {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		return http.StatusUnsupportedMediaType, "want Content-Type: application/json"
	}
	if o := r.Header.Get("Origin"); o != "" {
		if u, err := url.Parse(o); err != nil || u.Host != r.Host {
			return http.StatusForbidden, fmt.Sprintf("a write from a page of %q, not of this console, is refused", o)
		}
	}
	if c.token != "" {
		got := r.Header.Get(tokenHeader)
		if got == "" {
			got = r.URL.Query().Get("token")
		}
		if subtle.ConstantTimeCompare([]byte(got), []byte(c.token)) == 1 {
			return 0, ""
		}
	}
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	reqHost := r.Host
	if h, _, err := net.SplitHostPort(r.Host); err == nil {
		reqHost = h
	}
	if isLoopbackHost(host) && (reqHost == "localhost" || net.ParseIP(strings.Trim(reqHost, "[]")) != nil) {
		return 0, ""
	}
	if c.token == "" {
		return http.StatusForbidden, "writes are accepted from loopback only: start lab serve with " + tokenSetting.name + " to let other clients write with it"
	}
	return http.StatusForbidden, "a write from another host needs the token: open the URL that lab serve printed (?token=...), or send it in " + tokenHeader
}

// fields checks that body has only the fields named.
func fields(body map[string]json.RawMessage, allowed ...string) error {
	for _, k := range slices.Sorted(maps.Keys(body)) {
		if !slices.Contains(allowed, k) {
			return badField(k, "unknown field: want %s", strings.Join(allowed, ", "))
		}
	}
	return nil
}

// strategyChoice is one strategy the page offers: a strategy a proxying
// dispatcher runs, or one of its variants (settings set).
type strategyChoice struct {
	Label    string            `json:"label"` // the button's: the strategy's name, or the variant's
	Name     string            `json:"name"`  // STRATEGY
	Usage    string            `json:"usage"`
	Settings map[string]string `json:"settings,omitempty"` // a variant's
	// Accepts are the settings it reads, which the page offers to set.
	Accepts []settingChoice `json:"accepts"`
}

type settingChoice struct {
	Name    string `json:"name"`
	Default string `json:"default"`
	Usage   string `json:"usage"`
}

// strategyChoices lists the strategies of MODE=proxy and their variants, as
// the registry has them: the console names none itself.
func strategyChoices() []strategyChoice {
	var out []strategyChoice
	for _, ls := range allStrategies() {
		s, err := balance.Lookup(ls.strategy)
		if err != nil {
			continue
		}
		c := strategyChoice{Label: ls.label, Name: ls.strategy, Usage: s.Usage, Settings: ls.settings, Accepts: []settingChoice{}}
		for _, st := range s.Settings {
			c.Accepts = append(c.Accepts, settingChoice{st.Name, st.Default, st.Usage})
		}
		out = append(out, c)
	}
	return out
}

// postStrategy stores a strategy for every dispatcher on the list, as
// `seeder strategy` does, once balance.ConfigureWith accepts it for a
// proxying dispatcher. Each dispatcher follows within a quarter of a
// second; the watcher sees it in their spread_strategy_info and marks it.
func (c *console) postStrategy(r *http.Request, body map[string]json.RawMessage) (any, error) {
	if err := fields(body, "name", "settings"); err != nil {
		return nil, err
	}
	var name string
	if json.Unmarshal(body["name"], &name) != nil || name == "" {
		return nil, badField("name", "want one of %s", strings.Join(balance.NamesFor(balance.Proxy), ", "))
	}
	var settings map[string]string
	if raw, ok := body["settings"]; ok && string(raw) != "null" {
		if json.Unmarshal(raw, &settings) != nil {
			return nil, badField("settings", `want an object of strings, such as {"HASH_KEY": "header:X-User"}`)
		}
	}
	if _, _, err := balance.ConfigureWith(name, settings, nil, balance.Proxy); err != nil {
		field := "name"
		for k := range settings {
			if !errors.Is(err, balance.ErrUnknownStrategy) && !errors.Is(err, balance.ErrUnsupportedMode) && strings.Contains(err.Error(), k) {
				field = "settings." + k
			}
		}
		return nil, badField(field, "%v", err)
	}
	st := store.StoredStrategy{Name: name, Settings: settings, At: time.Now().UTC(),
		By: "lab console (POST /api/strategy from " + r.RemoteAddr + ")"}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := c.pool.store.SetStrategy(ctx, st); err != nil {
		return nil, err
	}
	c.log.Info("strategy stored for every dispatcher", "strategy", name, "settings", settings, "by", st.By)
	// Each dispatcher reads the stored strategy every quarter of a second:
	// answer once every one runs it (or after followWait), so that the
	// page's next drawing shows the change, marked.
	followed := c.watch.waitRunning(r.Context(), name, followWait)
	return strategyStored{st, followed}, nil
}

// followWait bounds how long POST /api/strategy waits for the dispatchers
// to follow: well beyond their quarter of a second, short of a client's
// patience. One that refuses the strategy says why in its GET /strategy.
const followWait = 3 * time.Second

// strategyStored is POST /api/strategy's answer: the strategy stored, and
// whether every dispatcher ran it before the answer.
type strategyStored struct {
	store.StoredStrategy
	Followed bool `json:"followed"`
}

// postLoad sets the rate of the load.
func (c *console) postLoad(r *http.Request, body map[string]json.RawMessage) (any, error) {
	if err := fields(body, "rate"); err != nil {
		return nil, err
	}
	var rate float64
	if raw, ok := body["rate"]; !ok || json.Unmarshal(raw, &rate) != nil {
		return nil, badField("rate", "want a number of requests per second from 0 to %d (0 stops)", maxLiveRate)
	}
	if err := c.load.setRate(rate); err != nil {
		return nil, badField("rate", "%v", err)
	}
	label := fmt.Sprintf("rate %g/s", rate)
	if rate == 0 {
		label = "load stopped"
	}
	c.watch.note(label)
	return map[string]float64{"rate": c.load.rate()}, nil
}

// postBackend changes one backend's knobs: the body's url names it (its
// entry in the list, one of the pool's), and the other fields go to its
// POST /control, which checks each and changes all or nothing.
func (c *console) postBackend(r *http.Request, body map[string]json.RawMessage) (any, error) {
	var entry string
	if json.Unmarshal(body["url"], &entry) != nil {
		return nil, badField("url", "want one of the pool's backends: %s", strings.Join(c.pool.entries(), ", "))
	}
	b, ok := c.pool.backend(entry)
	if !ok {
		return nil, badField("url", "%q: want one of the pool's backends: %s", entry, strings.Join(c.pool.entries(), ", "))
	}
	rest := maps.Clone(body)
	delete(rest, "url")
	fwd, _ := json.Marshal(rest)
	st, status, refused, err := c.pool.control(r.Context(), b, fwd)
	switch {
	case err != nil:
		return nil, err
	case refused != nil:
		return nil, &fieldErr{status, *refused}
	}
	c.watch.note(describeKnobs(st))
	c.watch.read(r.Context()) // the next page shows the new knobs
	return st, nil
}

// describeKnobs is a backend's knobs in a mark's words: "slow 200ms×4".
func describeKnobs(s fullStats) string {
	if s.Down {
		return s.Backend + " down"
	}
	d := fmt.Sprintf("%s %s×%d", s.Backend, time.Duration(s.LatencyMS*float64(time.Millisecond)), s.Capacity)
	if s.FailRate > 0 {
		d += fmt.Sprintf(", fails %g%%", 100*s.FailRate)
	}
	return d
}

// postScenario applies a scenario: each backend's change in turn.
func (c *console) postScenario(r *http.Request, body map[string]json.RawMessage) (any, error) {
	if err := fields(body, "name"); err != nil {
		return nil, err
	}
	var name string
	json.Unmarshal(body["name"], &name)
	sc, ok := lookupScenario(name)
	if !ok {
		return nil, badField("name", "want one of %s", strings.Join(scenarioNames(), ", "))
	}
	var out []fullStats
	for i, ch := range sc.changes(c.pool) {
		if ch == nil {
			continue
		}
		b, _ := json.Marshal(ch)
		st, _, refused, err := c.pool.control(r.Context(), c.pool.backends[i], b)
		if err == nil && refused != nil {
			err = fmt.Errorf("%s refused %s: %s", c.pool.backends[i].entry, b, refused.Error)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	c.watch.note(sc.Title)
	c.watch.read(r.Context()) // the next page shows the new knobs
	return map[string]any{"name": sc.Name, "backends": out}, nil
}
