package localrun

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"
)

// Build compiles each program, a module directory under root (backend,
// dispatcher, seeder), into dir/<program>, each module on its own
// (GOWORK=off), as `make build` and the images do.
func Build(ctx context.Context, root, dir string, programs ...string) error {
	for _, p := range programs {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, p), ".")
		cmd.Dir = filepath.Join(root, p)
		cmd.Env = append(os.Environ(), "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %w\n%s", p, err, out)
		}
	}
	return nil
}

// Procs are the programs started in one directory, which holds their logs.
// The zero value with Dir set is ready to use.
type Procs struct {
	// Dir holds each program's output, in Dir/<name>.log.
	Dir     string
	started []*Proc
}

// Proc is a program started by Procs.Start.
type Proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when it has exited
}

// Start runs prog with args, its environment that of this process plus
// env, its standard output and error in Dir/<name>.log. When ctx ends, the
// program gets SIGTERM, and is killed 15 s later if still running.
func (ps *Procs) Start(ctx context.Context, name string, env []string, prog string, args ...string) (*Proc, error) {
	logf, err := os.Create(ps.LogPath(name))
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 15 * time.Second
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	p := &Proc{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); logf.Close(); close(p.done) }()
	ps.started = append(ps.started, p)
	return p, nil
}

// StartRedis starts redis-server, named "redis", on a free port of
// 127.0.0.1 (TCP on loopback, as the dispatcher reaches Redis in compose),
// without persistence, its working directory Dir. It returns the server's
// host:port; it does not wait for the server to answer.
func (ps *Procs) StartRedis(ctx context.Context) (addr string, err error) {
	port, err := FreePort()
	if err != nil {
		return "", err
	}
	if _, err := ps.Start(ctx, "redis", nil, "redis-server", "--port", strconv.Itoa(port),
		"--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", ps.Dir); err != nil {
		return "", fmt.Errorf("redis-server (Debian: apt-get install redis-server): %w", err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port), nil
}

// LogPath is where the program started as name writes its output.
func (ps *Procs) LogPath(name string) string {
	return filepath.Join(ps.Dir, name+".log")
}

// LogTail is the last 2000 bytes of a program's log, quoted, for error
// messages.
func (ps *Procs) LogTail(name string) string {
	b, _ := os.ReadFile(ps.LogPath(name))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return fmt.Sprintf("%q", b)
}

// Stop stops every program still running, last started first.
func (ps *Procs) Stop() {
	for _, p := range slices.Backward(ps.started) {
		select {
		case <-p.done:
		default:
			p.Stop()
		}
	}
}

// Done is closed when the program has exited and its log is closed.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Pid is the program's process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Stop sends SIGTERM and waits up to 15 s for the exit, then kills the
// program and waits for that. Its log is closed when Stop returns.
func (p *Proc) Stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// FreePort is a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// HTTPOK is a check for WaitFor: GET url answers 200 OK.
func HTTPOK(url string) func(context.Context) error {
	return func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		return nil
	}
}

// WaitFor retries check every 50 ms for up to 10 s, giving each try up to
// perTry, until it returns nil or ctx ends; it returns the last error.
func WaitFor(ctx context.Context, perTry time.Duration, check func(context.Context) error) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, perTry)
		err := check(cctx)
		cancel()
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}
