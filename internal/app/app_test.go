package app

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestSettingGet(t *testing.T) {
	s := Setting{Name: "PORT", Default: "80"}
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	if got := s.Get(getenv); got != "80" {
		t.Errorf("unset: got %q, want %q", got, "80")
	}
	env["PORT"] = "8081"
	if got := s.Get(getenv); got != "8081" {
		t.Errorf("set: got %q, want %q", got, "8081")
	}
}

func TestUndocumented(t *testing.T) {
	readme := "| variable | default | read by | meaning |\n|---|---|---|---|\n" +
		"| `PORT` | `80` | dispatcher | port |\n" +
		"| `PORT` | `5000` | backend | port |\n" +
		"| `NAME` | (empty) | backend | name |\n" +
		"| `KEY` | `servers` | seeder, dispatcher | key |\n"
	tests := []struct {
		program string
		s       Setting
		ok      bool
	}{
		{"dispatcher", Setting{Name: "PORT", Default: "80"}, true},
		{"backend", Setting{Name: "PORT", Default: "5000"}, true},
		{"backend", Setting{Name: "PORT", Default: "80"}, false}, // the dispatcher's row
		{"dispatcher", Setting{Name: "PORT", Default: "8"}, false},
		{"backend", Setting{Name: "NAME"}, true},
		{"backend", Setting{Name: "NAME", Default: "x"}, false},
		{"seeder", Setting{Name: "KEY", Default: "servers"}, true},
		{"dispatcher", Setting{Name: "KEY", Default: "servers"}, true},
		{"backend", Setting{Name: "KEY", Default: "servers"}, false},
		{"backend", Setting{Name: "GONE", Default: "x"}, false},
	}
	for _, tc := range tests {
		missing := Undocumented(readme, tc.program, []Setting{tc.s})
		if ok := len(missing) == 0; ok != tc.ok {
			t.Errorf("%s %s=%q: got documented=%v, want %v (missing %q)", tc.program, tc.s.Name, tc.s.Default, ok, tc.ok, missing)
		}
	}
}

func TestServeShutsDownGracefully(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			time.Sleep(300 * time.Millisecond)
		}
		w.Write([]byte("done"))
	})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- Serve(ctx, ln, h, 5*time.Second) }()

	url := "http://" + ln.Addr().String()
	if err := Healthcheck(context.Background(), url+"/"); err != nil {
		t.Fatalf("healthcheck of a serving server: %v", err)
	}
	respc := make(chan int, 1)
	go func() {
		resp, err := http.Get(url + "/slow")
		if err != nil {
			respc <- 0
			return
		}
		resp.Body.Close()
		respc <- resp.StatusCode
	}()
	<-started
	cancel() // as SIGTERM does, while /slow is in flight
	if code := <-respc; code != http.StatusOK {
		t.Errorf("request in flight at shutdown: got status %d, want 200", code)
	}
	if err := <-errc; err != nil {
		t.Errorf("Serve after shutdown: got %v, want nil", err)
	}
	if err := Healthcheck(context.Background(), url+"/"); err == nil {
		t.Error("healthcheck after shutdown: got nil, want an error")
	}
}

func TestHealthcheckStatus(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	if err := Healthcheck(context.Background(), srv.URL); err == nil {
		t.Error("503: got nil, want an error")
	}
}
