// Package redistest starts a real redis-server process for tests.
//
// Tests in this project never use a fake Redis: each call to Start runs its
// own redis-server (found on PATH) on a private unix socket, so tests are
// isolated from each other and from any Redis already running.
package redistest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is a running redis-server.
type Server struct {
	// URL reaches the server, in the form REDIS_URL takes (unix://...).
	URL string
	// Client is connected to the server and closed when the test ends.
	Client *redis.Client
	cmd    *exec.Cmd
}

// Start runs a redis-server for the duration of the test, with extra
// command-line arguments if given. It fails the test (it never skips it) when
// redis-server is not installed.
func Start(t testing.TB, extra ...string) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server is needed for this test and is not on PATH (Debian: apt-get install redis-server; macOS: brew install redis): %v", err)
	}
	// A short directory: unix socket paths are limited to about 100 bytes,
	// which t.TempDir() can exceed for long test names.
	dir, err := os.MkdirTemp("", "redis")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "redis.sock")
	args := append([]string{
		"--port", "0", "--unixsocket", sock, "--unixsocketperm", "700",
		"--dir", dir, "--save", "", "--appendonly", "no", "--loglevel", "warning"}, extra...)
	cmd := exec.Command(bin, args...)
	logFile, err := os.Create(filepath.Join(dir, "redis.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	s := &Server{URL: "unix://" + sock, cmd: cmd}
	s.Client = redis.NewClient(&redis.Options{Network: "unix", Addr: sock})
	t.Cleanup(func() {
		s.Client.Close()
		cmd.Process.Kill()
		cmd.Wait()
		logFile.Close()
		os.RemoveAll(dir)
	})

	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := s.Client.Ping(ctx).Err()
		cancel()
		if err == nil {
			return s
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(logFile.Name())
			t.Fatalf("redis-server did not answer on %s: %v\n%s", sock, err, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// UserURL is URL with the ACL user name and password, as REDIS_URL takes
// them: unix://user:password@/path/redis.sock.
func (s *Server) UserURL(user, password string) string {
	return "unix://" + url.UserPassword(user, password).String() + "@" + strings.TrimPrefix(s.URL, "unix://")
}

// Pause stops the server's process (SIGSTOP), as `docker pause` does: its
// connections stay open and nothing answers, to test a hung Redis.
func (s *Server) Pause() { s.cmd.Process.Signal(syscall.SIGSTOP) }

// Resume lets a paused server go on (SIGCONT).
func (s *Server) Resume() { s.cmd.Process.Signal(syscall.SIGCONT) }

// Stop kills the server now, to test what happens when Redis goes away.
func (s *Server) Stop() {
	s.cmd.Process.Kill()
	s.cmd.Wait()
}

// Calls is how many times the server behind rdb has run cmd (lower case,
// as "lmove"), from INFO commandstats; 0 if never. Commands run inside
// scripts count too.
func Calls(ctx context.Context, rdb redis.Cmdable, cmd string) (int64, error) {
	info, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return 0, err
	}
	_, after, found := strings.Cut(info, "cmdstat_"+cmd+":calls=")
	if !found {
		return 0, nil
	}
	n, _, _ := strings.Cut(after, ",")
	return strconv.ParseInt(n, 10, 64)
}

// Stat is the number that INFO stats gives for name on the server behind
// rdb ("total_net_input_bytes", "total_connections_received").
func Stat(ctx context.Context, rdb redis.Cmdable, name string) (int64, error) {
	info, err := rdb.Info(ctx, "stats").Result()
	if err != nil {
		return 0, err
	}
	_, after, found := strings.Cut(info, name+":")
	if !found {
		return 0, fmt.Errorf("INFO stats has no %s", name)
	}
	v, _, _ := strings.Cut(after, "\r\n")
	return strconv.ParseInt(v, 10, 64)
}
