package check

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Programs are the project's programs that the manifests run, each image
// spread-NAME holding the binary NAME.
var Programs = []string{"dispatcher", "backend", "seeder"}

// A Program is one of Programs, built from the checkout, that the check
// asks about its settings through its `check` command.
type Program struct {
	Name string // dispatcher, backend or seeder
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

// portSettings are the settings whose values are ports the programs listen
// on: a backend's PORT, a dispatcher's PORT and ADMIN_PORT. The seeder has
// neither and listens on nothing.
var portSettings = []string{"PORT", "ADMIN_PORT"}

// Ports returns the ports a program with these settings listens on, each
// with the setting it comes from.
func (s Settings) Ports() map[string]string {
	ports := map[string]string{}
	for _, name := range portSettings {
		if v, ok := s.Get(name); ok {
			ports[v] = name
		}
	}
	return ports
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
