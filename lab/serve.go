package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spreadlb/spread/internal/app"
	"github.com/spreadlb/spread/internal/backend"
	"github.com/spreadlb/spread/internal/redisconn"
	"github.com/spreadlb/spread/internal/store"
)

// `lab serve`: the console. It drives the lab's scenario live: a pool of
// backends with CONTROL=1 behind proxying dispatchers on one list, the live
// load (live_load.go) through the dispatchers in turn, and a page with a
// small JSON API (console.go) that shows, second by second, what the load
// sees and what the backends and dispatchers count (watch.go), and turns
// the knobs: the strategy (stored in Redis for every dispatcher, as
// `seeder strategy` does), the rate, each backend's latency, capacity, fail
// rate and down, and scenarios that set several at once (pool.go).
//
// With none of LAB_BACKENDS, LAB_DISPATCHERS and REDIS_URL set, it starts
// its own stack as `make lab` does: redis-server, the lab's backends (with
// CONTROL=1) and two dispatchers, as local processes built from the
// checkout. With all three, it drives that running stack instead (the
// compose profile "lab" does).

// The console's settings, beside the lab's scenario (the LAB_FAST_* and
// LAB_SLOW_* knobs, LAB_RATE, LAB_USERS, LAB_TIMEOUT, LAB_SEED), which it
// shares with the batch lab.
var (
	addrSetting  = setting{"LAB_ADDR", "127.0.0.1:8099", "lab serve: where the console listens, host:port"}
	tokenSetting = setting{"LAB_TOKEN", "",
		"lab serve: the token a client other than loopback must send to change anything; empty: made up at start when LAB_ADDR is not loopback, else none"}
	backendsSetting = setting{"LAB_BACKENDS", "",
		"lab serve, running stack: its backends, comma-separated ENTRY=CONTROL (the URL the list holds = the URL of its CONTROL_PORT), the slow one last; empty: start a stack"}
	dispatchersSetting = setting{"LAB_DISPATCHERS", "",
		"lab serve, running stack: its dispatchers, comma-separated URL=ADMIN (the main port, where the load goes = the admin port)"}
	redisURLSetting = setting{redisconn.RedisURL.Name, "",
		"lab serve, running stack: the dispatchers' REDIS_URL, where the console stores the strategy (REDIS_TLS_CA, REDIS_TLS_CERT, REDIS_TLS_KEY as theirs)"}
	redisKeySetting = setting{store.RedisKey.Name, store.RedisKey.Default, "lab serve, running stack: the dispatchers' REDIS_KEY"}

	serveSettings = []setting{addrSetting, tokenSetting, backendsSetting, dispatchersSetting, redisURLSetting, redisKeySetting}
)

// tokenHeader carries LAB_TOKEN on a write; the page sends it.
const tokenHeader = "X-Lab-Token"

// serveConfig is what `lab serve` runs, checked.
type serveConfig struct {
	lab       config // the scenario's knobs, the rate at start, the users, the timeout, the seed
	addr      string
	token     string
	tokenMade bool       // LAB_TOKEN was empty and LAB_ADDR is not loopback: made up
	running   *stackSpec // nil: start a stack
}

// stackSpec is a running stack that the console drives.
type stackSpec struct {
	backends    []poolBackend
	dispatchers []poolDispatcher
	redisURL    string
	redisKey    string
}

// loadServeConfig reads the console's settings and the lab's scenario, and
// refuses what it cannot use, naming the setting.
func loadServeConfig(getenv func(string) string) (serveConfig, error) {
	var c serveConfig
	var err error
	if c.lab, err = loadConfig(getenv); err != nil {
		return c, err
	}
	c.addr = addrSetting.get(getenv)
	host, port, err := net.SplitHostPort(c.addr)
	if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 {
		return c, fmt.Errorf("%s=%q: want host:port, such as %s (0.0.0.0:8099 for every interface)", addrSetting.name, c.addr, addrSetting.def)
	}
	c.token = tokenSetting.get(getenv)
	if strings.ContainsFunc(c.token, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return c, fmt.Errorf("%s: want a token without spaces or control characters", tokenSetting.name)
	}
	if c.token == "" && !isLoopbackHost(host) {
		b := make([]byte, 24)
		rand.Read(b)
		c.token, c.tokenMade = hex.EncodeToString(b), true
	}

	bs, ds, ru := backendsSetting.get(getenv), dispatchersSetting.get(getenv), redisURLSetting.get(getenv)
	if bs == "" && ds == "" && ru == "" {
		return c, nil
	}
	for _, s := range []struct {
		setting
		v string
	}{{backendsSetting, bs}, {dispatchersSetting, ds}, {redisURLSetting, ru}} {
		if s.v == "" {
			return c, fmt.Errorf("%s is empty: a running stack needs %s, %s and %s (or none of them, and lab serve starts its own)",
				s.name, backendsSetting.name, dispatchersSetting.name, redisURLSetting.name)
		}
	}
	spec := &stackSpec{redisURL: ru}
	if spec.redisKey, err = store.LoadKey(getenv); err != nil {
		return c, err
	}
	pairs, err := urlPairs(backendsSetting, bs, "ENTRY=CONTROL", func(entry string) error {
		_, err := backend.Parse(entry)
		return err
	})
	if err != nil {
		return c, err
	}
	if len(pairs) < 2 {
		return c, fmt.Errorf("%s=%q: want two backends or more, the slow one last", backendsSetting.name, bs)
	}
	for _, p := range pairs {
		spec.backends = append(spec.backends, poolBackend{entry: p[0], control: p[1]})
	}
	if pairs, err = urlPairs(dispatchersSetting, ds, "URL=ADMIN", checkHTTP); err != nil {
		return c, err
	}
	for _, p := range pairs {
		spec.dispatchers = append(spec.dispatchers, poolDispatcher{url: p[0], admin: p[1]})
	}
	c.running = spec
	return c, nil
}

// urlPairs reads a comma-separated list of A=B pairs of distinct URLs: A
// checked by checkA, B an http URL of a host.
func urlPairs(s setting, v, form string, checkA func(string) error) ([][2]string, error) {
	var out [][2]string
	seen := map[string]bool{}
	for item := range strings.SplitSeq(v, ",") {
		a, b, ok := strings.Cut(strings.TrimSpace(item), "=")
		bad := func(why string) error {
			return fmt.Errorf("%s: %q: %s; want comma-separated %s pairs of URLs, such as http://fast1:5010=http://fast1:9000",
				s.name, item, why, form)
		}
		switch {
		case !ok:
			return nil, bad("no =")
		case seen[a]:
			return nil, bad("named twice")
		}
		if err := checkA(a); err != nil {
			return nil, bad(err.Error())
		}
		if err := checkHTTP(b); err != nil {
			return nil, bad(err.Error())
		}
		seen[a] = true
		out = append(out, [2]string{strings.TrimSuffix(a, "/"), strings.TrimSuffix(b, "/")})
	}
	return out, nil
}

// checkHTTP accepts an http or https URL with a host and nothing after the
// path.
func checkHTTP(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q is not an http:// or https:// URL of a host", s)
	}
	return nil
}

// isLoopbackHost says whether host (from host:port) is a loopback address
// or localhost.
func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// serve runs the console until ctx is done.
func serve(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	cfg, err := loadServeConfig(getenv)
	if err != nil {
		return err
	}
	// Listen first, so that an address in use fails before anything starts.
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return fmt.Errorf("%s: %w", addrSetting.name, err)
	}
	defer ln.Close()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	var p *pool
	if cfg.running == nil {
		fmt.Fprintln(stdout, "lab serve: building the programs and starting redis-server, the backends and two dispatchers...")
		own, err := startOwnStack(ctx, cfg.lab, stdout)
		if own != nil {
			defer own.stop()
		}
		if err != nil {
			return err
		}
		p = own.pool
	} else {
		if p, err = connectPool(ctx, *cfg.running, getenv, cfg.lab); err != nil {
			return err
		}
	}
	defer p.close()

	c, err := newConsole(ctx, cfg, p, log)
	if err != nil {
		return err
	}
	defer c.stop()
	fmt.Fprintf(stdout, "lab serve: the console is at %s\n", consoleURL(cfg, ln.Addr()))
	if cfg.tokenMade {
		fmt.Fprintf(stdout, "lab serve: a client other than loopback needs that token to change anything (made up at start: set %s to choose it)\n",
			tokenSetting.name)
	}
	fmt.Fprintf(stdout, "lab serve: %s; load %d req/s through %d dispatchers; Ctrl-C stops it\n",
		p.describe(), cfg.lab.rate, len(p.dispatchers))
	return app.Serve(ctx, ln, c.handler(), 5*time.Second)
}

// consoleURL is the address to open: LAB_ADDR's (localhost for every
// interface), with the token as a query parameter when there is one, as
// Jupyter prints its own.
func consoleURL(cfg serveConfig, addr net.Addr) string {
	host, port, _ := net.SplitHostPort(addr.String())
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "localhost"
	}
	u := url.URL{Scheme: "http", Host: net.JoinHostPort(host, port), Path: "/"}
	if cfg.token != "" {
		u.RawQuery = url.Values{"token": {cfg.token}}.Encode()
	}
	return u.String()
}

// healthcheck GETs the console's /healthz on LAB_ADDR's port, for compose.
func healthcheck(ctx context.Context, getenv func(string) string) error {
	host, port, err := net.SplitHostPort(addrSetting.get(getenv))
	if err != nil {
		return fmt.Errorf("%s: %w", addrSetting.name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return app.Healthcheck(ctx, app.LocalURL(host, port, "/healthz"))
}
