package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spreadlb/spread/internal/redisconn"

	"github.com/spreadlb/spread/internal/app"
	"github.com/spreadlb/spread/internal/backend"
	"github.com/spreadlb/spread/internal/balance"
	"github.com/spreadlb/spread/internal/health"
	"github.com/spreadlb/spread/internal/store"
)

// The dispatcher's settings, each read once from the environment: this is
// the one table of them, and the README's configuration table lists the
// same (TestREADMEListsSettings).
var (
	portSetting      = app.Setting{Name: "PORT", Default: "80", Usage: "port that clients send requests to"}
	adminSetting     = app.Setting{Name: "ADMIN_PORT", Default: "8080", Usage: "port for the dashboard, /metrics, /healthz and /readyz"}
	bindSetting      = app.Setting{Name: "BIND_HOST", Default: "", Usage: "address the main port listens on, an IP address or a host name; empty means every interface"}
	adminBindSetting = app.Setting{Name: "ADMIN_BIND_HOST", Default: "",
		Usage: "address the admin port listens on, an IP address or a host name; empty means every interface. The admin port has no authentication: bind it to 127.0.0.1 or a private network in production"}
	idleSetting = app.Setting{Name: "IDLE_TIMEOUT", Default: "60s",
		Usage: "how long a keep-alive connection, on either port, may wait for its next request before the dispatcher closes it"}
	modeSetting       = app.Setting{Name: "MODE", Default: string(balance.Redirect), Usage: "redirect: answer each request with a redirect to the chosen backend; proxy: forward it there and relay the answer"}
	strategySetting   = app.Setting{Name: "STRATEGY", Default: balance.Default, Usage: "how the backend is chosen: " + strings.Join(balance.Names(), ", ") + " (docs/strategies.md); " + strings.Join(proxyOnly(), ", ") + " need MODE=proxy"}
	statusSetting     = app.Setting{Name: "REDIRECT_STATUS", Default: "302", Usage: "301, 302, 303, 307 or 308; 307 and 308 keep the method and body"}
	timeoutSetting    = app.Setting{Name: "REDIS_TIMEOUT", Default: "1s", Usage: "how long a request waits on Redis before the dispatcher turns degraded and answers from its snapshot of the list"}
	shutdownSetting   = app.Setting{Name: "SHUTDOWN_TIMEOUT", Default: "10s", Usage: "how long requests in flight may finish after SIGTERM"}
	logLevelSetting   = app.Setting{Name: "LOG_LEVEL", Default: "info", Usage: "debug, info, warn or error; info logs one line per request"}
	maxStreamsSetting = app.Setting{Name: "ADMIN_MAX_STREAMS", Default: strconv.Itoa(defaultMaxStreams),
		Usage: "how many dashboard streams (GET /events on the admin port) may be open at once; one more gets 503"}
	adminWriteSetting = app.Setting{Name: "ADMIN_WRITE", Default: "0",
		Usage: "1: the admin port takes POST and DELETE /strategy, which change the strategy of every dispatcher on the list; 0: it only reads. The admin port has no authentication (docs/security.md)"}

	healthIntervalSetting = app.Setting{Name: "HEALTH_INTERVAL", Default: health.DefaultInterval.String(),
		Usage: "how often each backend origin is probed (GET /healthz), by one dispatcher at a time; 0 turns this dispatcher's probes off"}
	healthTimeoutSetting = app.Setting{Name: "HEALTH_TIMEOUT", Default: health.DefaultTimeout.String(),
		Usage: "how long a probe may take before it counts as failed"}
	healthFallsSetting = app.Setting{Name: "HEALTH_FALLS", Default: strconv.Itoa(health.DefaultFalls),
		Usage: "failed probes in a row that mark a backend down (skipped by the rotation)"}
	healthRisesSetting = app.Setting{Name: "HEALTH_RISES", Default: strconv.Itoa(health.DefaultRises),
		Usage: "passed probes in a row that bring a down backend back"}

	proxyRetriesSetting = app.Setting{Name: "PROXY_RETRIES", Default: "2",
		Usage: "MODE=proxy: how many more backends an idempotent request without a body tries after a failure that PROXY_RETRY_ON names (by default, connecting failed), 0-10"}
	proxyDialTimeoutSetting = app.Setting{Name: "PROXY_DIAL_TIMEOUT", Default: "2s",
		Usage: "MODE=proxy: how long connecting to a backend may take"}
	proxyResponseTimeoutSetting = app.Setting{Name: "PROXY_RESPONSE_TIMEOUT", Default: "30s",
		Usage: "MODE=proxy: how long to wait for a backend's response headers once the request is sent (the body may then stream for as long as it takes)"}

	ejectAfterSetting = app.Setting{Name: "EJECT_AFTER", Default: "5",
		Usage: "MODE=proxy: failures in a row (a 5xx, a connect error, a timeout) that eject a backend for every dispatcher; 0 turns ejection off"}
	ejectTimeSetting = app.Setting{Name: "EJECT_TIME", Default: "30s",
		Usage: "MODE=proxy: how long a first ejection lasts; the Nth lasts N times as long, up to 5m"}
	ejectMaxSetting = app.Setting{Name: "EJECT_MAX_PERCENT", Default: "50",
		Usage: "MODE=proxy: the most of the list's backends that may be ejected at once, in percent, 0-100"}
	slowStartSetting = app.Setting{Name: "SLOW_START", Default: "0",
		Usage: "a duration (30s): a backend that joins the list, or comes back from down or an ejection, gets a share that ramps from SLOW_START_MIN to all of its weight over it; 0 turns slow start off"}
	slowStartMinSetting = app.Setting{Name: "SLOW_START_MIN", Default: "10%",
		Usage: "SLOW_START: the share of its weight a backend gets as it starts, in percent (10%), above 0 and at most 100"}

	// settings is the table: the dispatcher's own, then each strategy's,
	// as its file in internal/balance declares them.
	settings = slices.Concat([]app.Setting{portSetting, adminSetting, bindSetting, adminBindSetting, idleSetting, redisconn.RedisURL, store.RedisKey,
		redisconn.RedisTLSCA, redisconn.RedisTLSCert, redisconn.RedisTLSKey,
		modeSetting, strategySetting,
		statusSetting, timeoutSetting, shutdownSetting, logLevelSetting, adminWriteSetting, maxStreamsSetting,
		healthIntervalSetting, healthTimeoutSetting, healthFallsSetting, healthRisesSetting,
		proxyRetriesSetting, proxyDialTimeoutSetting, proxyResponseTimeoutSetting,
		ejectAfterSetting, ejectTimeSetting, ejectMaxSetting, slowStartSetting, slowStartMinSetting}, retrySettings, balance.Settings())
)

// proxyOnly lists the strategies that need MODE=proxy.
func proxyOnly() []string {
	var out []string
	for _, n := range balance.Names() {
		if !slices.Contains(balance.NamesFor(balance.Redirect), n) {
			out = append(out, n)
		}
	}
	return out
}

// maxProxyRetries bounds PROXY_RETRIES.
const maxProxyRetries = 10

// config is the dispatcher's configuration, checked.
type config struct {
	port, adminPort string
	bindHost        string // BIND_HOST: "" is every interface
	adminBindHost   string // ADMIN_BIND_HOST: "" is every interface
	idleTimeout     time.Duration
	redisURL, key   string
	redisTLS        *tls.Config // REDIS_TLS_*: nil when none is set
	mode            balance.Mode
	strategy        string              // STRATEGY: a registered strategy that supports mode
	plan            balance.Plan        // the strategy, configured from the environment
	getenv          func(string) string // the environment: each strategy's settings, at start and at a switch
	status          int
	redisTimeout    time.Duration
	shutdownTimeout time.Duration
	logLevel        slog.Level
	adminWrite      bool          // ADMIN_WRITE=1
	maxStreams      int           // ADMIN_MAX_STREAMS
	health          health.Config // Interval 0: no probes from this dispatcher
	proxy           proxyConfig   // MODE=proxy's settings
	slowStart       time.Duration // SLOW_START; 0: off
	slowStartMin    float64       // SLOW_START_MIN, as a fraction
}

// proxyConfig is the proxy's part of the configuration.
type proxyConfig struct {
	retries         int
	dialTimeout     time.Duration
	responseTimeout time.Duration
	retry           retryConfig       // PROXY_RETRY_ON, PROXY_TRY_TIMEOUT, RETRY_BUDGET
	ejectAfter      int               // EJECT_AFTER; 0: no ejection
	eject           store.EjectPolicy // EJECT_TIME, EJECT_MAX_PERCENT
}

// loadConfig reads every setting and refuses a value it cannot use, naming
// it and what it accepts. Settings of another mode or strategy are checked
// too, so that a bad value is refused at start even before it is used.
func loadConfig(getenv func(string) string) (config, error) {
	c := config{
		port:          portSetting.Get(getenv),
		adminPort:     adminSetting.Get(getenv),
		bindHost:      bindSetting.Get(getenv),
		adminBindHost: adminBindSetting.Get(getenv),
		redisURL:      redisconn.RedisURL.Get(getenv),
	}
	var err error
	if c.key, err = store.LoadKey(getenv); err != nil {
		return c, err
	}
	if c.redisTLS, err = redisconn.LoadTLS(getenv); err != nil {
		return c, err
	}
	var ports [2]int
	for i, p := range []struct {
		s app.Setting
		v string
	}{{portSetting, c.port}, {adminSetting, c.adminPort}} {
		n, err := strconv.Atoi(p.v)
		if err != nil || n < 1 || n > 65535 {
			return c, fmt.Errorf("%s=%q: want a port number, 1-65535", p.s.Name, p.v)
		}
		ports[i] = n
	}
	if ports[0] == ports[1] {
		return c, fmt.Errorf("PORT and ADMIN_PORT are both %d: they must differ", ports[0])
	}
	for _, h := range []struct {
		s app.Setting
		v string
	}{{bindSetting, c.bindHost}, {adminBindSetting, c.adminBindHost}} {
		if h.v != "" && !backend.ValidBindHost(h.v) {
			return c, fmt.Errorf("%s=%q: want an IP address (such as 127.0.0.1 or ::1, without brackets) or a host name, and no port; or empty for every interface", h.s.Name, h.v)
		}
	}

	switch c.mode = balance.Mode(modeSetting.Get(getenv)); c.mode {
	case balance.Redirect, balance.Proxy:
	default:
		return c, fmt.Errorf("%s=%q: want redirect or proxy", modeSetting.Name, c.mode)
	}
	c.strategy, c.getenv = strategySetting.Get(getenv), getenv
	if _, c.plan, err = balance.Configure(c.strategy, getenv, c.mode); err != nil {
		if errors.Is(err, balance.ErrUnknownStrategy) || errors.Is(err, balance.ErrUnsupportedMode) {
			return c, fmt.Errorf("%s=%s: %w", strategySetting.Name, c.strategy, err)
		}
		return c, err
	}
	// Every strategy's settings, so that a bad one is refused now rather
	// than when a switch meets it.
	if err := balance.CheckSettings(getenv, c.mode); err != nil {
		return c, err
	}

	v := statusSetting.Get(getenv)
	switch n, _ := strconv.Atoi(v); n {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		c.status = n
	default:
		return c, fmt.Errorf("%s=%q: want 301, 302, 303, 307 or 308", statusSetting.Name, v)
	}
	if c.redisTimeout, err = duration(timeoutSetting, getenv); err != nil {
		return c, err
	}
	if c.shutdownTimeout, err = duration(shutdownSetting, getenv); err != nil {
		return c, err
	}
	if c.idleTimeout, err = duration(idleSetting, getenv); err != nil {
		return c, err
	}
	if c.logLevel, err = logLevel(getenv); err != nil {
		return c, err
	}
	switch v := adminWriteSetting.Get(getenv); v {
	case "0", "1":
		c.adminWrite = v == "1"
	default:
		return c, fmt.Errorf("%s=%q: want 0 or 1", adminWriteSetting.Name, v)
	}
	v = maxStreamsSetting.Get(getenv)
	if c.maxStreams, err = strconv.Atoi(v); err != nil || c.maxStreams < 1 || c.maxStreams > 10000 {
		return c, fmt.Errorf("%s=%q: want a whole number from 1 to 10000", maxStreamsSetting.Name, v)
	}
	if c.health, err = loadHealth(getenv); err != nil {
		return c, err
	}
	if c.proxy, err = loadProxy(getenv); err != nil {
		return c, err
	}
	if c.slowStart, c.slowStartMin, err = loadSlowStart(getenv); err != nil {
		return c, err
	}
	return c, nil
}

// loadSlowStart reads SLOW_START (0, or a positive duration) and
// SLOW_START_MIN (a percentage above 0 and at most 100, with or without
// "%").
func loadSlowStart(getenv func(string) string) (time.Duration, float64, error) {
	v := slowStartSetting.Get(getenv)
	d, err := time.ParseDuration(v)
	if v == "0" {
		d, err = 0, nil
	}
	if err != nil || d < 0 {
		return 0, 0, fmt.Errorf("%s=%q: want a duration such as 30s, or 0 to turn slow start off", slowStartSetting.Name, v)
	}
	v = slowStartMinSetting.Get(getenv)
	pct, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), "%"), 64)
	if err != nil || !(pct > 0 && pct <= 100) {
		return 0, 0, fmt.Errorf("%s=%q: want a percentage above 0 and at most 100, such as 10%%", slowStartMinSetting.Name, v)
	}
	return d, pct / 100, nil
}

// loadHealth reads the health check settings. An Interval of 0 means this
// dispatcher does not probe (it still skips what others marked down).
func loadHealth(getenv func(string) string) (health.Config, error) {
	var h health.Config
	v := healthIntervalSetting.Get(getenv)
	d, err := time.ParseDuration(v)
	if v == "0" {
		d, err = 0, nil
	}
	if err != nil || d < 0 {
		return h, fmt.Errorf("%s=%q: want a duration such as 2s, or 0 to turn probing off", healthIntervalSetting.Name, v)
	}
	h.Interval = d
	if h.Timeout, err = duration(healthTimeoutSetting, getenv); err != nil {
		return h, err
	}
	for _, c := range []struct {
		s app.Setting
		n *int
	}{{healthFallsSetting, &h.Falls}, {healthRisesSetting, &h.Rises}} {
		v := c.s.Get(getenv)
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return h, fmt.Errorf("%s=%q: want a whole number, 1 or more", c.s.Name, v)
		}
		*c.n = n
	}
	return h, nil
}

// loadProxy reads the proxy's settings.
func loadProxy(getenv func(string) string) (proxyConfig, error) {
	var pc proxyConfig
	v := proxyRetriesSetting.Get(getenv)
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > maxProxyRetries {
		return pc, fmt.Errorf("%s=%q: want a whole number from 0 to %d", proxyRetriesSetting.Name, v, maxProxyRetries)
	}
	pc.retries = n
	if pc.dialTimeout, err = duration(proxyDialTimeoutSetting, getenv); err != nil {
		return pc, err
	}
	if pc.responseTimeout, err = duration(proxyResponseTimeoutSetting, getenv); err != nil {
		return pc, err
	}
	if pc.retry, err = loadRetry(getenv); err != nil {
		return pc, err
	}
	v = ejectAfterSetting.Get(getenv)
	if pc.ejectAfter, err = strconv.Atoi(v); err != nil || pc.ejectAfter < 0 {
		return pc, fmt.Errorf("%s=%q: want a whole number, 0 (no ejection) or more", ejectAfterSetting.Name, v)
	}
	if pc.eject.Base, err = duration(ejectTimeSetting, getenv); err != nil {
		return pc, err
	}
	if pc.eject.Base > store.MaxEjectTime {
		return pc, fmt.Errorf("%s=%q: want a positive duration of at most %v", ejectTimeSetting.Name, ejectTimeSetting.Get(getenv), store.MaxEjectTime)
	}
	v = ejectMaxSetting.Get(getenv)
	if pc.eject.MaxPercent, err = strconv.Atoi(strings.TrimSuffix(v, "%")); err != nil || pc.eject.MaxPercent < 0 || pc.eject.MaxPercent > 100 {
		return pc, fmt.Errorf("%s=%q: want a whole number of percent, 0 to 100", ejectMaxSetting.Name, v)
	}
	return pc, nil
}

func duration(s app.Setting, getenv func(string) string) (time.Duration, error) {
	v := s.Get(getenv)
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s=%q: want a positive duration such as 500ms or 2s", s.Name, v)
	}
	return d, nil
}

// logLevel reads LOG_LEVEL: debug, info, warn or error, in any case.
func logLevel(getenv func(string) string) (slog.Level, error) {
	v := logLevelSetting.Get(getenv)
	switch strings.ToLower(v) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("%s=%q: want debug, info, warn or error", logLevelSetting.Name, v)
}
