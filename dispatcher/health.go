package main

import (
	"fmt"
	"strconv"
	"time"

	"github.com/spreadlb/spread/internal/app"
	"github.com/spreadlb/spread/internal/rotation"
)

// The health check settings (see rotation.Health); part of settings.
var (
	healthIntervalSetting = app.Setting{Name: "HEALTH_INTERVAL", Default: rotation.DefaultHealthInterval.String(),
		Usage: "how often each backend origin is probed (GET /healthz), by one dispatcher at a time; 0 turns this dispatcher's probes off"}
	healthTimeoutSetting = app.Setting{Name: "HEALTH_TIMEOUT", Default: rotation.DefaultHealthTimeout.String(),
		Usage: "how long a probe may take before it counts as failed"}
	healthFallsSetting = app.Setting{Name: "HEALTH_FALLS", Default: strconv.Itoa(rotation.DefaultHealthFalls),
		Usage: "failed probes in a row that mark a backend down (skipped by the rotation)"}
	healthRisesSetting = app.Setting{Name: "HEALTH_RISES", Default: strconv.Itoa(rotation.DefaultHealthRises),
		Usage: "passed probes in a row that bring a down backend back"}

	healthSettings = []app.Setting{healthIntervalSetting, healthTimeoutSetting, healthFallsSetting, healthRisesSetting}
)

// loadHealth reads the health check settings. An Interval of 0 means this
// dispatcher does not probe (it still skips what others marked down).
func loadHealth(getenv func(string) string) (rotation.HealthConfig, error) {
	var h rotation.HealthConfig
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
