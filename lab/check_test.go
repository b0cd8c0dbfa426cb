package main

import (
	"bytes"
	"maps"
	"strings"
	"testing"
)

// TestCheck runs `lab check` as make k8s-check does: every setting of lab
// serve printed as NAME=value with the value it would use, and a value it
// cannot use refused, naming the setting, with nothing printed.
func TestCheck(t *testing.T) {
	var out bytes.Buffer
	if err := run(t.Context(), []string{"check"}, envOf(nil), &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	var names []string
	for _, s := range append(settings, serveSettings...) {
		names = append(names, s.name)
	}
	names = append(names, "REDIS_TLS_CA", "REDIS_TLS_CERT", "REDIS_TLS_KEY")
	if len(lines) != len(names) {
		t.Fatalf("lab check printed %d lines, want %d, one per setting:\n%s", len(lines), len(names), out.String())
	}
	for i, name := range names {
		if got, _, _ := strings.Cut(lines[i], "="); got != name {
			t.Errorf("line %d: got %q, want %s=...", i+1, lines[i], name)
		}
	}
	for _, want := range []string{"LAB_ADDR=127.0.0.1:8099", "LAB_RATE=", "LAB_FAST=2", "REDIS_KEY=servers", "REDIS_URL="} {
		if !strings.Contains(out.String(), "\n"+want+"\n") {
			t.Errorf("lab check with no variable set: want the line %q in\n%s", want, out.String())
		}
	}

	// The console of the Kubernetes overlay and compose's lab profile.
	running := map[string]string{
		"LAB_ADDR":        "0.0.0.0:8099",
		"LAB_TOKEN":       "secret-token",
		"LAB_BACKENDS":    "http://fast1:5000=http://fast1:9000,http://fast2:5000=http://fast2:9000,http://slow:5000=http://slow:9000",
		"LAB_DISPATCHERS": "http://d1:8000=http://d1:8080,http://d2:8000=http://d2:8080",
		"REDIS_URL":       "redis://:hunter2@redis:6379/0",
		"REDIS_KEY":       "lab",
		"LAB_RATE":        "300",
	}
	out.Reset()
	if err := run(t.Context(), []string{"check"}, envOf(running), &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"LAB_ADDR=0.0.0.0:8099", "LAB_TOKEN=xxxxx", "REDIS_KEY=lab", "LAB_RATE=300",
		"REDIS_URL=redis://:xxxxx@redis:6379/0", "LAB_BACKENDS=" + running["LAB_BACKENDS"]} {
		if !strings.Contains(out.String(), want+"\n") {
			t.Errorf("want the line %q in\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "secret-token") || strings.Contains(out.String(), "hunter2") {
		t.Errorf("lab check printed a secret:\n%s", out.String())
	}

	with := func(k, v string) map[string]string {
		m := maps.Clone(running)
		m[k] = v
		return m
	}
	for _, tc := range []struct {
		env  map[string]string
		want string // the start of the message
	}{
		{with("REDIS_URL", "mysql://redis:3306"), "REDIS_URL: redis: invalid URL scheme: mysql"},
		{with("REDIS_TLS_CERT", "/no/such/cert.pem"), "REDIS_TLS_CERT is set and REDIS_TLS_KEY is not"},
		{with("LAB_ADDR", "8099"), `LAB_ADDR="8099": want host:port`},
		{with("LAB_SLOW_CAPACITY", "0"), `LAB_SLOW_CAPACITY="0": want a whole number, 1 or more`},
		{with("LAB_BACKENDS", "http://fast1:5000=http://fast1:9000"), "LAB_BACKENDS="},
	} {
		out.Reset()
		err := run(t.Context(), []string{"check"}, envOf(tc.env), &out)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want an error starting %q", tc.env, err, tc.want)
		}
		if out.Len() > 0 {
			t.Errorf("%v: printed %q, want nothing", tc.env, out.String())
		}
	}
}
