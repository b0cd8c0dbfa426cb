package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
)

// What each knob accepts, in the environment (LATENCY, ...) and in a POST
// /control body alike, so that the two messages say the same.
const (
	acceptsDuration = "a duration of 0 or more, such as 0, 250ms or 2s"
	acceptsCapacity = "a whole number, 0 or more (0 means no limit)"
	acceptsFailRate = "a number from 0 to 1 (the fraction of GET / answered 500)"
	acceptsDown     = "true or false"
)

func parseDuration(v string) (time.Duration, bool) {
	d, err := time.ParseDuration(v)
	return d, err == nil && d >= 0
}

func parseCapacity(v string) (int, bool) {
	n, err := strconv.Atoi(v)
	return n, err == nil && n >= 0
}

func parseFailRate(v string) (float64, bool) {
	f, err := strconv.ParseFloat(v, 64)
	return f, err == nil && f >= 0 && f <= 1 // NaN fails both
}

// change is a POST /control body, checked; a nil field is left as it is.
type change struct {
	latency, jitter *time.Duration
	capacity        *int
	failRate        *float64
	down            *bool
}

// controlFields are the fields of a POST /control body, in the order they
// are checked.
var controlFields = []string{"latency", "jitter", "capacity", "fail_rate", "down"}

// fieldError is what is wrong with one field of a POST /control body.
type fieldError struct{ Field, Msg string }

func (e *fieldError) Error() string { return e.Field + ": " + e.Msg }

// maxControlBody bounds a POST /control body; a real one is under 100 bytes.
const maxControlBody = 64 << 10

// parseChange reads a POST /control body: a JSON object whose fields are all
// optional, such as {"latency":"200ms","capacity":4,"jitter":"20ms",
// "fail_rate":0.2,"down":false}. The first bad field, unknown ones included,
// is an error that names it; then nothing may change.
func parseChange(body []byte) (change, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil || raw == nil {
		return change{}, &fieldError{"body", `want a JSON object such as {"latency":"200ms","capacity":4}, with the fields ` +
			strings.Join(controlFields, ", ")}
	}
	for _, k := range slices.Sorted(maps.Keys(raw)) {
		if !slices.Contains(controlFields, k) {
			return change{}, &fieldError{k, "unknown field: want " + strings.Join(controlFields, ", ")}
		}
	}
	var c change
	bad := func(field, accepts string) error {
		return &fieldError{field, fmt.Sprintf("want %s; got %s", accepts, raw[field])}
	}
	for _, f := range []struct {
		name string
		dst  **time.Duration
	}{{"latency", &c.latency}, {"jitter", &c.jitter}} {
		v, ok := raw[f.name]
		if !ok {
			continue
		}
		var s string
		if json.Unmarshal(v, &s) != nil {
			return change{}, bad(f.name, "a string holding "+acceptsDuration)
		}
		d, ok := parseDuration(s)
		if !ok {
			return change{}, bad(f.name, "a string holding "+acceptsDuration)
		}
		*f.dst = &d
	}
	if v, ok := raw["capacity"]; ok {
		n, ok := parseCapacity(string(v))
		if !ok {
			return change{}, bad("capacity", acceptsCapacity)
		}
		c.capacity = &n
	}
	if v, ok := raw["fail_rate"]; ok {
		f, ok := parseFailRate(string(v))
		if !ok {
			return change{}, bad("fail_rate", acceptsFailRate)
		}
		c.failRate = &f
	}
	if v, ok := raw["down"]; ok {
		var b bool
		if s := string(v); s != "true" && s != "false" || json.Unmarshal(v, &b) != nil {
			return change{}, bad("down", acceptsDown)
		}
		c.down = &b
	}
	return c, nil
}

// applyTo returns k with the change's fields set.
func (c change) applyTo(k knobs) knobs {
	if c.latency != nil {
		k.latency = *c.latency
	}
	if c.jitter != nil {
		k.jitter = *c.jitter
	}
	if c.capacity != nil {
		k.capacity = *c.capacity
	}
	if c.failRate != nil {
		k.failRate = *c.failRate
	}
	if c.down != nil {
		k.down = *c.down
	}
	return k
}

// controller applies POST /control: one change at a time, all of it or
// none of it.
type controller struct {
	mu   sync.Mutex
	svc  *service
	port *trafficPort
}

// apply makes the change. Up comes first and down last: if PORT cannot be
// listened on again, nothing has changed; and once the backend is down, no
// connection brings it new work.
func (c *controller) apply(ch change) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := ch.applyTo(c.svc.current())
	if !k.down {
		if err := c.port.setDown(false); err != nil {
			return err
		}
	}
	c.svc.set(k)
	if k.down {
		return c.port.setDown(true)
	}
	return nil
}

// newControlServer returns the routes of CONTROL_PORT:
//
//	POST /control  change the knobs (see parseChange); 200 and the new
//	               /stats, or 400 {"field", "error"} naming the bad field
//	GET  /stats    as on PORT, also while PORT is down
func newControlServer(name string, ctl *controller) *echo.Echo {
	e := newEcho(name)
	e.POST("/control", func(c echo.Context) error {
		body, err := io.ReadAll(http.MaxBytesReader(c.Response(), c.Request().Body, maxControlBody))
		if err != nil {
			return c.JSON(http.StatusBadRequest, controlError{"body", fmt.Sprintf("body: %v (at most %d bytes)", err, maxControlBody)})
		}
		ch, err := parseChange(body)
		var fe *fieldError
		if errors.As(err, &fe) {
			return c.JSON(http.StatusBadRequest, controlError{fe.Field, fe.Error()})
		}
		if err := ctl.apply(ch); err != nil {
			return c.JSON(http.StatusInternalServerError, controlError{"down", err.Error()})
		}
		return c.JSON(http.StatusOK, ctl.svc.stats(name))
	})
	e.GET("/stats", func(c echo.Context) error {
		return c.JSON(http.StatusOK, ctl.svc.stats(name))
	})
	return e
}

// controlError is the body of a POST /control that changed nothing.
type controlError struct {
	Field string `json:"field"`
	Error string `json:"error"`
}
