package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/spreadlb/spread/internal/app"
)

func TestRoutes(t *testing.T) {
	e := newServer("backend7")
	tests := []struct {
		method, target, body string
		wantStatus           int
		wantBody             string
	}{
		{"GET", "/", "", http.StatusOK, "Hello, World!"},
		{"GET", "/healthz", "", http.StatusOK, "ok"},
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
	e := newServer("b1")
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
		env            map[string]string
		port, wantName string
	}{
		{nil, "5000", host + ":5000"},
		{map[string]string{"PORT": "5001"}, "5001", host + ":5001"},
		{map[string]string{"PORT": "5002", "BACKEND_NAME": "backend3"}, "5002", "backend3"},
	}
	for _, tc := range tests {
		port, name := loadConfig(func(k string) string { return tc.env[k] })
		if port != tc.port || name != tc.wantName {
			t.Errorf("env %v: got (%q, %q), want (%q, %q)", tc.env, port, name, tc.port, tc.wantName)
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
