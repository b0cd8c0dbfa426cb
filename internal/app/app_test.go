package app

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
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

// serveOn runs ServeWith on a free loopback port until the test ends and
// returns the address.
func serveOn(t *testing.T, lim Limits) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	go func() { errc <- ServeWith(ctx, ln, h, time.Second, lim) }()
	t.Cleanup(func() { cancel(); <-errc })
	return ln.Addr().String()
}

// TestServeClosesIdleConnections: a keep-alive connection that sends no
// second request is closed by the server once IdleTimeout has passed. (With
// no IdleTimeout, net/http keeps it open for as long as the client likes.)
func TestServeClosesIdleConnections(t *testing.T) {
	addr := serveOn(t, Limits{IdleTimeout: 100 * time.Millisecond})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("first request: got %d (close %v), want 200 on a connection kept alive", resp.StatusCode, resp.Close)
	}
	// Now idle. The wait is generous: the server closes it long before.
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := br.Read(make([]byte, 1))
	if !errors.Is(err, io.EOF) {
		t.Errorf("idle keep-alive connection: got (%d bytes, %v), want EOF: the server closes it", n, err)
	}
}

// TestServeBoundsHeaderSize: a request whose headers pass MaxHeaderBytes
// is refused with 431; one under it is served.
func TestServeBoundsHeaderSize(t *testing.T) {
	addr := serveOn(t, Limits{})
	for _, tc := range []struct {
		size int
		want string
	}{
		{MaxHeaderBytes - 1024, "HTTP/1.1 200 OK"},
		{100 << 10, "HTTP/1.1 431 Request Header Fields Too Large"},
	} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		req := "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", tc.size) + "\r\nConnection: close\r\n\r\n"
		conn.Write([]byte(req))
		status, _ := bufio.NewReader(conn).ReadString('\n')
		conn.Close()
		if got := strings.TrimSpace(status); got != tc.want {
			t.Errorf("a header of %d bytes: got %q, want %q", tc.size, got, tc.want)
		}
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

func TestPrintSettings(t *testing.T) {
	settings := []Setting{
		{Name: "PORT", Default: "80"},
		{Name: "NAME"},
		{Name: "REDIS_URL", Default: "redis://localhost:6379/0"},
		{Name: "HASH_KEY", Default: "ip"},
	}
	tests := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, "PORT=80\nNAME=\nREDIS_URL=redis://localhost:6379/0\nHASH_KEY=ip\n"},
		{map[string]string{"PORT": "8000", "NAME": "b1", "HASH_KEY": "header:X-User"},
			"PORT=8000\nNAME=b1\nREDIS_URL=redis://localhost:6379/0\nHASH_KEY=header:X-User\n"},
		{map[string]string{"REDIS_URL": "redis://app:s3cret@redis:6379/0"},
			"PORT=80\nNAME=\nREDIS_URL=redis://app:xxxxx@redis:6379/0\nHASH_KEY=ip\n"},
		{map[string]string{"REDIS_URL": "redis+sentinel://s1:26379/0?master_name=m&password=s3cret&addr=s2:26379"},
			"PORT=80\nNAME=\nREDIS_URL=redis+sentinel://s1:26379/0?addr=s2%3A26379&master_name=m&password=xxxxx\nHASH_KEY=ip\n"},
		{map[string]string{"REDIS_URL": "unix:///run/redis.sock"},
			"PORT=80\nNAME=\nREDIS_URL=unix:///run/redis.sock\nHASH_KEY=ip\n"},
	}
	for _, tc := range tests {
		var b strings.Builder
		if err := PrintSettings(&b, settings, func(k string) string { return tc.env[k] }); err != nil {
			t.Fatal(err)
		}
		if b.String() != tc.want {
			t.Errorf("env %v: got\n%s\nwant\n%s", tc.env, b.String(), tc.want)
		}
		if strings.Contains(b.String(), "s3cret") {
			t.Errorf("env %v: the password is printed: %s", tc.env, b.String())
		}
	}
}

// A healthcheck reaches a listener bound to one address there, and one bound
// to every interface on 127.0.0.1: a dispatcher with ADMIN_BIND_HOST=127.0.0.2
// was reported unhealthy because the check dialled 127.0.0.1.
func TestHealthcheckFollowsTheBindAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := Healthcheck(ctx, LocalURL("127.0.0.2", port, "/readyz")); err != nil {
		t.Errorf("bound to 127.0.0.2: %v", err)
	}
	if err := Healthcheck(ctx, LocalURL("", port, "/readyz")); err == nil {
		t.Errorf("127.0.0.1:%s answered, but nothing listens there", port)
	}

	for _, tc := range []struct{ host, want string }{
		{"", "http://127.0.0.1:81/readyz"},
		{"0.0.0.0", "http://127.0.0.1:81/readyz"},
		{"::", "http://127.0.0.1:81/readyz"},
		{"::1", "http://[::1]:81/readyz"},
		{"10.1.2.3", "http://10.1.2.3:81/readyz"},
		{"admin.internal", "http://admin.internal:81/readyz"},
	} {
		if got := LocalURL(tc.host, "81", "/readyz"); got != tc.want {
			t.Errorf("LocalURL(%q): got %q, want %q", tc.host, got, tc.want)
		}
	}
}

// complaints is a log destination that hands each line to the test.
type complaints chan string

func (c complaints) Write(p []byte) (int, error) { c <- string(p); return len(p), nil }

// The server's own complaints (here a handler that sets its status twice)
// go to Limits.ErrorLog, the program's log, not to the standard logger.
func TestServeComplainsToErrorLog(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs := make(complaints, 16)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
		w.WriteHeader(http.StatusOK)
	})
	go func() { errc <- ServeWith(ctx, ln, h, time.Second, Limits{ErrorLog: log.New(logs, "", 0)}) }()
	defer func() { cancel(); <-errc }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTeapot {
		t.Errorf("got %s, want 418", resp.Status)
	}
	// The handler complained before its answer left, so the line is here.
	select {
	case got := <-logs:
		if !strings.Contains(got, "superfluous response.WriteHeader") {
			t.Errorf("the error log holds %q, want the server's complaint of a second WriteHeader", got)
		}
	default:
		t.Error("nothing in the error log, want the server's complaint of a second WriteHeader")
	}
}
