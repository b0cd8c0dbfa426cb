package app

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
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
	readme := "| name | default |\n|---|---|\n| `PORT` | `80` | port |\n| `NAME` | (empty) | name |\n"
	settings := []Setting{{Name: "PORT", Default: "80"}, {Name: "NAME"}, {Name: "PORT", Default: "5000"}, {Name: "GONE", Default: "x"}}
	got := Undocumented(readme, settings)
	want := []string{"PORT (default `5000`)", "GONE (default `x`)"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
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
