package check

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Programs are the project's programs that the manifests run, each image
// spread-NAME holding the binary NAME: the three of the tutorial's stack,
// and the lab, whose console (lab serve) the lab overlay runs.
var Programs = []string{"dispatcher", "backend", "seeder", "lab"}

// A Program is one of Programs, built from the checkout, that the check
// asks about its settings through its `check` command.
type Program struct {
	Name string // dispatcher, backend, seeder or lab
	Path string // the binary
	// Defaults is what `NAME check` printed with no variable set: every
	// setting the program reads, with its default.
	Defaults Settings
}

// Settings are the NAME=value lines that a program's `check` prints, in
// its table's order: each setting it reads, with the value it would use.
type Settings []Setting

// A Setting is one line of a program's `check`.
type Setting struct{ Name, Value string }

// Get returns the value of the setting name, and whether the program has it.
func (s Settings) Get(name string) (string, bool) {
	i := slices.IndexFunc(s, func(x Setting) bool { return x.Name == name })
	if i < 0 {
		return "", false
	}
	return s[i].Value, true
}

// Names lists the settings' names.
func (s Settings) Names() []string {
	var names []string
	for _, x := range s {
		names = append(names, x.Name)
	}
	return names
}

// listenSettings are the settings that say where a program listens: a
// port, the address it binds that port to, and when it listens there at
// all: the dispatcher's PORT and ADMIN_PORT, the backend's PORT, and, with
// CONTROL=1, its CONTROL_PORT; or one host:port setting, the lab console's
// LAB_ADDR. A program lacking a setting of the table does not listen there
// (the seeder listens nowhere) or binds every interface (the backend's PORT
// has no bind setting).
var listenSettings = []struct{ port, host, when, addr string }{
	{port: "PORT", host: "BIND_HOST"},
	{port: "ADMIN_PORT", host: "ADMIN_BIND_HOST"},
	{port: "CONTROL_PORT", host: "CONTROL_BIND_HOST", when: "CONTROL=1"},
	{addr: "LAB_ADDR"},
}

// stopSettings name, for each program that has one, the setting that
// bounds how long it may take to stop after SIGTERM: its pod's
// terminationGracePeriodSeconds must be longer, or Kubernetes kills it
// before it is done (a backend still in the list, requests cut).
var stopSettings = map[string]string{"backend": "DRAIN_TIMEOUT", "dispatcher": "SHUTDOWN_TIMEOUT"}

// advertiseSettings are the settings that give the URL other programs
// reach a program at, and when it is used: a backend with REGISTER=1 puts
// ADVERTISE_URL in the list, so its port must be one the backend listens
// on where the pod is reached.
var advertiseSettings = map[string]struct{ url, when string }{
	"backend": {url: "ADVERTISE_URL", when: "REGISTER=1"},
}

// A Listener is a port a program listens on, as its settings say.
type Listener struct {
	Port    int32
	Setting string // PORT, ADMIN_PORT, ..., LAB_ADDR
	// Loopback is the address when it is a loopback one (127.0.0.1, ::1,
	// localhost): then neither the kubelet's probes nor a Service reach it.
	Loopback string
}

// Listeners returns the ports a program with these settings listens on.
func (s Settings) Listeners() []Listener {
	var ls []Listener
	for _, l := range listenSettings {
		var port, host, setting string
		if l.addr != "" {
			v, ok := s.Get(l.addr)
			if !ok {
				continue
			}
			var err error
			if host, port, err = net.SplitHostPort(v); err != nil {
				continue // the program accepted it, so this is not one of its addresses
			}
			setting = l.addr
		} else {
			var ok bool
			if port, ok = s.Get(l.port); !ok {
				continue
			}
			if name, want, _ := strings.Cut(l.when, "="); l.when != "" {
				if v, _ := s.Get(name); v != want {
					continue
				}
			}
			host, _ = s.Get(l.host)
			setting = l.port
		}
		n, err := strconv.Atoi(port)
		if err != nil {
			continue // the program accepted it, so this is not one of its ports
		}
		ln := Listener{Port: int32(n), Setting: setting}
		if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() || host == "localhost" {
			ln.Loopback = host
		}
		ls = append(ls, ln)
	}
	return ls
}

// Build compiles each of Programs from the checkout at root (each module on
// its own, GOWORK=off, as the Dockerfile builds it) into dir, and asks each
// for its settings.
func Build(ctx context.Context, root, dir string) (map[string]*Program, error) {
	progs := map[string]*Program{}
	for _, name := range Programs {
		p := &Program{Name: name, Path: filepath.Join(dir, name)}
		cmd := exec.CommandContext(ctx, "go", "build", "-o", p.Path, ".")
		cmd.Dir = filepath.Join(root, name)
		cmd.Env = append(os.Environ(), "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build %s: %w\n%s", name, err, out)
		}
		var err error
		if p.Defaults, err = p.Check(ctx, nil); err != nil {
			return nil, fmt.Errorf("%s check with no variable set: %w", name, err)
		}
		progs[name] = p
	}
	return progs, nil
}

// Check runs `NAME check` with exactly env (NAME=value items; nothing else
// of this process's environment) and returns the settings it printed, or
// the error it printed, which names the variable it refused.
func (p *Program) Check(ctx context.Context, env []string) (Settings, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.Path, "check")
	cmd.Env = append([]string{}, env...) // not nil: nil would inherit ours
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		return nil, fmt.Errorf("%s", msg)
	}
	var s Settings
	for line := range strings.Lines(stdout.String()) {
		name, value, ok := strings.Cut(strings.TrimSuffix(line, "\n"), "=")
		if !ok {
			return nil, fmt.Errorf("%s check printed %q, want NAME=value lines", p.Name, line)
		}
		s = append(s, Setting{name, value})
	}
	return s, nil
}

// ProgramOf returns which of Programs the image runs, or "" for another
// image: the last part of the reference, without tag or digest, is
// spread-NAME (registry.example.com/team/spread-backend:v1 runs backend).
func ProgramOf(image string) string {
	ref, _, _ := strings.Cut(image, "@")
	last := ref[strings.LastIndex(ref, "/")+1:]
	last, _, _ = strings.Cut(last, ":")
	name, ok := strings.CutPrefix(last, "spread-")
	if ok && slices.Contains(Programs, name) {
		return name
	}
	return ""
}
