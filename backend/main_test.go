package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spreadlb/spread/internal/app"
)

func TestRoutes(t *testing.T) {
	e := newServer("backend7", newService(knobs{}))
	tests := []struct {
		method, target, body string
		wantStatus           int
		wantBody             string
	}{
		{"GET", "/", "", http.StatusOK, "Hello, World!"},
		{"GET", "/healthz", "", http.StatusOK, "ok"},
		{"GET", "/stats", "", http.StatusOK, ""},
		{"GET", "/nope", "", http.StatusNotFound, ""},
		{"POST", "/whoami?x=1", "payload", http.StatusOK, ""},
	}
	for _, tc := range tests {
		req := httptest.NewRequest(tc.method, tc.target, strings.NewReader(tc.body))
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		if rec.Code != tc.wantStatus {
			t.Errorf("%s %s: got status %d, want %d", tc.method, tc.target, rec.Code, tc.wantStatus)
		}
		if got := rec.Header().Get("X-Backend"); got != "backend7" {
			t.Errorf("%s %s: got X-Backend %q, want %q", tc.method, tc.target, got, "backend7")
		}
		if tc.wantBody != "" && rec.Body.String() != tc.wantBody {
			t.Errorf("%s %s: got body %q, want %q", tc.method, tc.target, rec.Body.String(), tc.wantBody)
		}
	}
}

func TestWhoami(t *testing.T) {
	rec := httptest.NewRecorder()
	e := newServer("b1", newService(knobs{}))
	e.ServeHTTP(rec, httptest.NewRequest("PUT", "/whoami?a=1&b=2", strings.NewReader("hello")))
	var got whoami
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatalf("body %q: %v", rec.Body.String(), err)
	}
	want := whoami{Backend: "b1", Method: "PUT", Path: "/whoami", Query: "a=1&b=2", Body: "hello"}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestLoadConfig(t *testing.T) {
	host, _ := os.Hostname()
	tests := []struct {
		env  map[string]string
		want config
	}{
		{nil, config{port: "5000", name: host + ":5000"}},
		{map[string]string{"PORT": "5001"}, config{port: "5001", name: host + ":5001"}},
		{map[string]string{"PORT": "5002", "BACKEND_NAME": "backend3"}, config{port: "5002", name: "backend3"}},
		{map[string]string{"BACKEND_NAME": "b", "LATENCY": "250ms", "LATENCY_JITTER": "1s", "CAPACITY": "3", "FAIL_RATE": "0.25"},
			config{port: "5000", name: "b", knobs: knobs{latency: 250 * time.Millisecond, jitter: time.Second, capacity: 3, failRate: 0.25}}},
		{map[string]string{"BACKEND_NAME": "b", "LATENCY": "0s", "LATENCY_JITTER": "0", "CAPACITY": "0", "FAIL_RATE": "1"},
			config{port: "5000", name: "b", knobs: knobs{failRate: 1}}},
		// Without CONTROL=1 the control settings are not read.
		{map[string]string{"BACKEND_NAME": "b", "CONTROL": "0", "CONTROL_PORT": "x", "CONTROL_BIND_HOST": "a b"},
			config{port: "5000", name: "b"}},
		{map[string]string{"BACKEND_NAME": "b", "CONTROL": "1"},
			config{port: "5000", name: "b", control: true, controlHost: "127.0.0.1", controlPort: "9000"}},
		{map[string]string{"BACKEND_NAME": "b", "CONTROL": "1", "CONTROL_PORT": "6001", "CONTROL_BIND_HOST": "0.0.0.0"},
			config{port: "5000", name: "b", control: true, controlHost: "0.0.0.0", controlPort: "6001"}},
		{map[string]string{"BACKEND_NAME": "b", "DRAIN_TIMEOUT": "3s"}, config{port: "5000", name: "b", drain: 3 * time.Second}},
		// Without REGISTER=1 the registration's settings are not read.
		{map[string]string{"BACKEND_NAME": "b", "ADVERTISE_URL": "ftp://x", "HEARTBEAT": "soon", "REDIS_KEY": " "},
			config{port: "5000", name: "b"}},
		{map[string]string{"PORT": "5004", "BACKEND_NAME": "b", "REGISTER": "1"},
			config{port: "5004", name: "b", register: true, advertise: "http://" + net.JoinHostPort(strings.ToLower(host), "5004"),
				heartbeat: 2 * time.Second, redisURL: "redis://localhost:6379/0", key: "servers"}},
		{map[string]string{"BACKEND_NAME": "b", "REGISTER": "1", "ADVERTISE_URL": "http://backend4:5000", "HEARTBEAT": "500ms",
			"REDIS_URL": "redis://redis:6379/1", "REDIS_KEY": "proxied"},
			config{port: "5000", name: "b", register: true, advertise: "http://backend4:5000",
				heartbeat: 500 * time.Millisecond, redisURL: "redis://redis:6379/1", key: "proxied"}},
	}
	for _, tc := range tests {
		if tc.want.drain == 0 {
			tc.want.drain = 10 * time.Second
		}
		got, err := loadConfig(func(k string) string { return tc.env[k] })
		if err != nil || got != tc.want {
			t.Errorf("env %v: got %+v, %v, want %+v", tc.env, got, err, tc.want)
		}
	}
}

// TestBadSettingsRefused runs the program with each bad value: it must
// return an error naming the variable and the values it accepts, and not
// serve (with ctx already done, serving would return nil).
func TestBadSettingsRefused(t *testing.T) {
	tests := []struct {
		name, value, accepts string
		with                 map[string]string // other settings
	}{
		{"LATENCY", "-1s", "a duration of 0 or more", nil},
		{"LATENCY", "slow", "a duration of 0 or more", nil},
		{"LATENCY", "5", "a duration of 0 or more", nil}, // a duration needs a unit
		{"LATENCY_JITTER", "-5ms", "a duration of 0 or more", nil},
		{"CAPACITY", "many", "a whole number, 0 or more", nil},
		{"CAPACITY", "-1", "a whole number, 0 or more", nil},
		{"CAPACITY", "1.5", "a whole number, 0 or more", nil},
		{"FAIL_RATE", "1.5", "a number from 0 to 1", nil},
		{"FAIL_RATE", "-0.1", "a number from 0 to 1", nil},
		{"FAIL_RATE", "NaN", "a number from 0 to 1", nil},
		{"FAIL_RATE", "20%", "a number from 0 to 1", nil},
		{"CONTROL", "yes", "1 (serve POST /control on CONTROL_PORT) or 0", nil},
		{"CONTROL_PORT", "http", "a port number, 0 to 65535", map[string]string{"CONTROL": "1"}},
		{"CONTROL_PORT", "65536", "a port number, 0 to 65535", map[string]string{"CONTROL": "1"}},
		{"CONTROL_BIND_HOST", "127.0.0.1:9000", "an IP address", map[string]string{"CONTROL": "1"}},
		{"CONTROL_BIND_HOST", "backend_1", "an IP address", map[string]string{"CONTROL": "1"}},
		{"DRAIN_TIMEOUT", "0", "a positive duration", nil},
		{"DRAIN_TIMEOUT", "soon", "a positive duration", nil},
		{"REGISTER", "yes", "1 (announce this backend in Redis) or 0", nil},
		{"ADVERTISE_URL", "ftp://backend4:5000", "the http(s) URL the dispatchers reach this backend at", map[string]string{"REGISTER": "1"}},
		{"ADVERTISE_URL", "http://user:pw@backend4", "the http(s) URL the dispatchers reach this backend at", map[string]string{"REGISTER": "1"}},
		{"HEARTBEAT", "0", "a duration from 100ms to 1h0m0s", map[string]string{"REGISTER": "1", "ADVERTISE_URL": "http://b4:5000"}},
		{"HEARTBEAT", "2", "a duration from 100ms to 1h0m0s", map[string]string{"REGISTER": "1", "ADVERTISE_URL": "http://b4:5000"}},
		{"HEARTBEAT", "2h", "a duration from 100ms to 1h0m0s", map[string]string{"REGISTER": "1", "ADVERTISE_URL": "http://b4:5000"}},
		{"HEARTBEAT", "1000000h", "a duration from 100ms to 1h0m0s", map[string]string{"REGISTER": "1", "ADVERTISE_URL": "http://b4:5000"}},
		{"REDIS_KEY", "a b", "a Redis key name", map[string]string{"REGISTER": "1", "ADVERTISE_URL": "http://b4:5000"}},
		// Kubernetes' POD_IP on an IPv6 cluster, without the brackets a URL needs.
		{"ADVERTISE_URL", "http://fd00::1:5000", "the http(s) URL the dispatchers reach this backend at", map[string]string{"REGISTER": "1"}},
		{"ADVERTISE_URL", "http://b4:0", "the http(s) URL the dispatchers reach this backend at", map[string]string{"REGISTER": "1"}},
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	for _, tc := range tests {
		env := map[string]string{"PORT": "0", tc.name: tc.value}
		for k, v := range tc.with {
			env[k] = v
		}
		err := run(ctx, nil, func(k string) string { return env[k] }, io.Discard)
		want := fmt.Sprintf("%s=%q: want %s", tc.name, tc.value, tc.accepts)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s=%q: got error %v, want one containing %q", tc.name, tc.value, err, want)
		}
	}
}

func TestUnknownCommand(t *testing.T) {
	err := run(t.Context(), []string{"serve-please"}, func(string) string { return "" }, os.Stderr)
	if err == nil || !strings.Contains(err.Error(), "unknown command") {
		t.Errorf("got %v, want an unknown command error", err)
	}
}

func TestREADMEListsSettings(t *testing.T) {
	if err := app.CheckREADME("../README.md", "backend", settings); err != nil {
		t.Error(err)
	}
}

// TestCheck runs `backend check`: an accepted environment prints every
// setting with the value the backend would use, and exits 0; a refused one
// is an error naming the variable.
func TestCheck(t *testing.T) {
	env := map[string]string{"PORT": "5001", "LATENCY": "40ms"}
	out := stdoutOf(t, func() {
		if err := run(t.Context(), []string{"check"}, func(k string) string { return env[k] }, io.Discard); err != nil {
			t.Errorf("check: got %v, want no error", err)
		}
	})
	want := "PORT=5001\nBACKEND_NAME=\nLATENCY=40ms\nLATENCY_JITTER=0\nCAPACITY=0\nFAIL_RATE=0\n" +
		"CONTROL=0\nCONTROL_PORT=9000\nCONTROL_BIND_HOST=127.0.0.1\n" +
		"REGISTER=0\nADVERTISE_URL=\nHEARTBEAT=2s\nDRAIN_TIMEOUT=10s\n" +
		"REDIS_URL=redis://localhost:6379/0\nREDIS_KEY=servers\nREDIS_TLS_CA=\nREDIS_TLS_CERT=\nREDIS_TLS_KEY=\n"
	if out != want {
		t.Errorf("check printed\n%s\nwant\n%s", out, want)
	}
	env = map[string]string{"CAPACITY": "lots"}
	out = stdoutOf(t, func() {
		err := run(t.Context(), []string{"check"}, func(k string) string { return env[k] }, io.Discard)
		if want := `CAPACITY="lots"`; err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("check with CAPACITY=lots: got %v, want an error containing %q", err, want)
		}
	})
	if out != "" {
		t.Errorf("check with a refused setting printed %q, want nothing", out)
	}
}

// stdoutOf returns what f writes to os.Stdout, where `backend check` prints.
func stdoutOf(t *testing.T, f func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stdout
	os.Stdout = w
	defer func() { os.Stdout = saved }()
	done := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		done <- string(b)
	}()
	f()
	w.Close()
	return <-done
}
