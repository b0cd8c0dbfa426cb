package main

import (
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/spreadlb/spread/internal/app"
	"github.com/spreadlb/spread/internal/rotation"
)

// The dispatcher's settings, each read once from the environment; the
// README's configuration table lists the same.
var (
	portSetting     = app.Setting{Name: "PORT", Default: "80", Usage: "port that clients send requests to"}
	adminSetting    = app.Setting{Name: "ADMIN_PORT", Default: "8080", Usage: "port for the dashboard, /metrics, /healthz and /readyz"}
	statusSetting   = app.Setting{Name: "REDIRECT_STATUS", Default: "302", Usage: "301, 302, 303, 307 or 308; 307 and 308 keep the method and body"}
	timeoutSetting  = app.Setting{Name: "REDIS_TIMEOUT", Default: "1s", Usage: "how long a request waits on Redis before the dispatcher turns degraded and answers from its snapshot of the list"}
	shutdownSetting = app.Setting{Name: "SHUTDOWN_TIMEOUT", Default: "10s", Usage: "how long requests in flight may finish after SIGTERM"}
	rotationSetting = app.Setting{Name: "ROTATION", Default: "redis", Usage: "redis: one shared, exact rotation step in Redis per request; local: round robin in this process over a snapshot of the list, read every second"}
	logLevelSetting = app.Setting{Name: "LOG_LEVEL", Default: "info", Usage: "debug, info, warn or error; info logs one line per request"}

	settings = slices.Concat([]app.Setting{portSetting, adminSetting, rotation.RedisURL, rotation.RedisKey,
		statusSetting, timeoutSetting, shutdownSetting, rotationSetting, logLevelSetting}, healthSettings,
		[]app.Setting{modeSetting, proxyRetriesSetting, proxyDialTimeoutSetting, proxyResponseTimeoutSetting}) // the last four: proxy.go
)

// config is the dispatcher's configuration, checked.
type config struct {
	port, adminPort string
	redisURL, key   string
	rotation        string // "redis" or "local"
	status          int
	redisTimeout    time.Duration
	shutdownTimeout time.Duration
	logLevel        slog.Level
	health          rotation.HealthConfig // Interval 0: no probes from this dispatcher
	mode            string                // modeRedirect or modeProxy
	proxy           proxyConfig           // MODE=proxy's settings (proxy.go)
}

// loadConfig reads every setting and refuses a value it cannot use, naming it.
func loadConfig(getenv func(string) string) (config, error) {
	c := config{
		port:      portSetting.Get(getenv),
		adminPort: adminSetting.Get(getenv),
		redisURL:  rotation.RedisURL.Get(getenv),
		key:       rotation.RedisKey.Get(getenv),
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
	s := statusSetting.Get(getenv)
	switch n, _ := strconv.Atoi(s); n {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		c.status = n
	default:
		return c, fmt.Errorf("%s=%q: want 301, 302, 303, 307 or 308", statusSetting.Name, s)
	}
	switch c.rotation = rotationSetting.Get(getenv); c.rotation {
	case "redis", "local":
	default:
		return c, fmt.Errorf("%s=%q: want redis or local", rotationSetting.Name, c.rotation)
	}
	var err error
	if c.redisTimeout, err = duration(timeoutSetting, getenv); err != nil {
		return c, err
	}
	if c.shutdownTimeout, err = duration(shutdownSetting, getenv); err != nil {
		return c, err
	}
	if c.logLevel, err = logLevel(getenv); err != nil {
		return c, err
	}
	if c.health, err = loadHealth(getenv); err != nil {
		return c, err
	}
	if c.mode, c.proxy, err = loadMode(getenv); err != nil {
		return c, err
	}
	return c, nil
}

func duration(s app.Setting, getenv func(string) string) (time.Duration, error) {
	v := s.Get(getenv)
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s=%q: want a positive duration such as 500ms or 2s", s.Name, v)
	}
	return d, nil
}
