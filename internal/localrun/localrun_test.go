package localrun_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spreadlb/spread/internal/localrun"
)

// serveEnv makes the test binary a small HTTP server on the port it names,
// the program the tests start.
const serveEnv = "LOCALRUN_TEST_SERVE"

func TestMain(m *testing.M) {
	if port := os.Getenv(serveEnv); port != "" {
		serve(port)
		return
	}
	os.Exit(m.Run())
}

// serve answers 200 "hello" on 127.0.0.1:port until SIGTERM, saying in its
// output that it started and that it stopped.
func serve(port string) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	fmt.Println("listening on", port)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "hello")
	})}
	go srv.Serve(ln)
	<-ctx.Done()
	srv.Close()
	fmt.Println("stopped by SIGTERM")
}

func TestStartWaitStop(t *testing.T) {
	ctx := context.Background()
	port, err := localrun.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	ps := &localrun.Procs{Dir: t.TempDir()}
	defer ps.Stop()
	p, err := ps.Start(ctx, "hello", []string{fmt.Sprintf("%s=%d", serveEnv, port)}, os.Args[0], "-test.run=^$")
	if err != nil {
		t.Fatal(err)
	}
	if p.Pid() <= 0 {
		t.Errorf("got pid %d, want > 0", p.Pid())
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	if err := localrun.WaitFor(ctx, time.Second, localrun.HTTPOK(url)); err != nil {
		t.Fatalf("the program did not answer: %v (log: %s)", err, ps.LogTail("hello"))
	}

	ps.Stop()
	if err := localrun.HTTPOK(url)(ctx); err == nil {
		t.Errorf("GET %s answered after Stop, want no answer", url)
	}
	if got, want := ps.LogPath("hello"), filepath.Join(ps.Dir, "hello.log"); got != want {
		t.Errorf("got log path %q, want %q", got, want)
	}
	log, err := os.ReadFile(ps.LogPath("hello"))
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("listening on %d\nstopped by SIGTERM\n", port)
	if string(log) != want {
		t.Errorf("got log %q, want %q", log, want)
	}
	if got := ps.LogTail("hello"); got != fmt.Sprintf("%q", want) {
		t.Errorf("got log tail %s, want %q", got, want)
	}
}

func TestHTTPOKNames404(t *testing.T) {
	srv := &http.Server{Handler: http.NotFoundHandler()}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	url := "http://" + ln.Addr().String() + "/healthz"
	err = localrun.HTTPOK(url)(context.Background())
	if want := url + ": 404 Not Found"; err == nil || err.Error() != want {
		t.Errorf("got error %v, want %q", err, want)
	}
}

func TestBuild(t *testing.T) {
	root, dir := t.TempDir(), t.TempDir()
	hello := filepath.Join(root, "hello")
	if err := os.Mkdir(hello, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"go.mod":  "module hello\n\ngo 1.22\n",
		"main.go": "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"built\") }\n",
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(hello, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := localrun.Build(context.Background(), root, dir, "hello"); err != nil {
		t.Fatal(err)
	}
	ps := &localrun.Procs{Dir: dir}
	p, err := ps.Start(context.Background(), "run", nil, filepath.Join(dir, "hello"))
	if err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	if log, _ := os.ReadFile(ps.LogPath("run")); string(log) != "built\n" {
		t.Errorf("got output %q, want %q", log, "built\n")
	}

	err = localrun.Build(context.Background(), root, dir, "missing")
	if err == nil || !strings.HasPrefix(err.Error(), "go build missing: ") {
		t.Errorf("got error %v, want one starting %q", err, "go build missing: ")
	}
}

func TestStartRedis(t *testing.T) {
	ctx := context.Background()
	ps := &localrun.Procs{Dir: t.TempDir()}
	defer ps.Stop()
	addr, err := ps.StartRedis(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Errorf("got address %q, want 127.0.0.1:port", addr)
	}
	var reply string
	ping := func(ctx context.Context) error {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		defer conn.Close()
		if _, err := conn.Write([]byte("PING\r\n")); err != nil {
			return err
		}
		b := make([]byte, 7)
		n, err := io.ReadFull(conn, b)
		reply = string(b[:n])
		return err
	}
	if err := localrun.WaitFor(ctx, time.Second, ping); err != nil {
		t.Fatalf("redis-server did not answer: %v (log: %s)", err, ps.LogTail("redis"))
	}
	if reply != "+PONG\r\n" {
		t.Errorf("got %q, want %q", reply, "+PONG\r\n")
	}
	ps.Stop()
	if err := ping(ctx); err == nil {
		t.Errorf("redis-server answered %q after Stop, want no answer", reply)
	}
}
