package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spreadlb/spread/internal/localrun"
	"github.com/spreadlb/spread/internal/redistest"
)

// The groups: contestants in one group do the same job and are compared
// with the group's first contestant, a dispatcher.
const (
	groupRedirect = "redirect"
	groupProxy    = "proxy"
	groupLong     = "long" // long.go
)

// contestant is one program under load: a dispatcher or a peer.
type contestant struct {
	key     string // short name: redis, local, haproxy-redir, haproxy-rules, nginx-302, proxy, caddy, haproxy, nginx
	group   string // groupRedirect, groupProxy or groupLong
	name    string // as the tables print it
	peer    string // the peer's program (haproxy, nginx, caddy); "" for a dispatcher
	env     []string
	lmove   bool   // ROTATION=redis: one LMOVE per request, counted by Redis
	rotates bool   // spreads requests over every backend (all but nginx's fixed redirect)
	list    string // groupLong: the list it balances over (shortKey or longKey)

	url  string     // where it listens, once started
	pid  int        // its process
	dash *dashboard // groupLong: its dashboard, open from its start
}

// catalogue lists every contestant, in the order the tables print them;
// each group's first is the dispatcher the others are compared with.
func catalogue() []*contestant {
	return append([]*contestant{
		{key: "redis", group: groupRedirect, name: "dispatcher ROTATION=redis", lmove: true, rotates: true,
			env: []string{"MODE=redirect", "ROTATION=redis"}},
		{key: "local", group: groupRedirect, name: "dispatcher ROTATION=local", rotates: true,
			env: []string{"MODE=redirect", "ROTATION=local"}},
		{key: "haproxy-redir", group: groupRedirect, name: "HAProxy roundrobin + redir", peer: "haproxy", rotates: true},
		{key: "haproxy-rules", group: groupRedirect, name: "HAProxy redirect rules (keep-alive)", peer: "haproxy", rotates: true},
		{key: "nginx-302", group: groupRedirect, name: "nginx return 302 (one fixed target)", peer: "nginx"},
		{key: "proxy", group: groupProxy, name: "dispatcher MODE=proxy ROTATION=redis", lmove: true, rotates: true,
			env: []string{"MODE=proxy", "ROTATION=redis"}},
		{key: "caddy", group: groupProxy, name: "Caddy reverse_proxy round_robin", peer: "caddy", rotates: true},
		{key: "haproxy", group: groupProxy, name: "HAProxy roundrobin", peer: "haproxy", rotates: true},
		{key: "nginx", group: groupProxy, name: "nginx proxy_pass + keepalive", peer: "nginx", rotates: true},
	}, longContestants()...)
}

// contestants are those of the catalogue in groups whose peer, if any, is
// in peers.
func contestants(groups []string, peers map[string]string) []*contestant {
	var cs []*contestant
	for _, c := range catalogue() {
		if _, ok := peers[c.peer]; slices.Contains(groups, c.group) && (c.peer == "" || ok) {
			cs = append(cs, c)
		}
	}
	return cs
}

// parseModes reads -modes: redirect, proxy, or both, comma-separated.
func parseModes(v string) ([]string, error) {
	var groups []string
	for g := range strings.SplitSeq(v, ",") {
		if g != groupRedirect && g != groupProxy && g != groupLong {
			return nil, fmt.Errorf("-modes %q: want redirect, proxy or long, comma-separated", v)
		}
		if !slices.Contains(groups, g) {
			groups = append(groups, g)
		}
	}
	return groups, nil
}

// goEnv is the GOMAXPROCS setting for the Go contestants; none for 0.
func goEnv(gomaxprocs int) []string {
	if gomaxprocs == 0 {
		return nil
	}
	return []string{"GOMAXPROCS=" + strconv.Itoa(gomaxprocs)}
}

// startDispatcher starts a dispatcher on the stack's list and waits until
// it answers from the seeded backends.
func (s *stack) startDispatcher(ctx context.Context, bins binaries, c *contestant, gomaxprocs int) error {
	port, err := localrun.FreePort()
	if err != nil {
		return err
	}
	adminPort, err := localrun.FreePort()
	if err != nil {
		return err
	}
	env := slices.Concat([]string{"PORT=" + strconv.Itoa(port), "ADMIN_PORT=" + strconv.Itoa(adminPort),
		"REDIS_URL=" + s.redisURL,
		// No log line per request: the bench measures the dispatching, not
		// the writing of access logs, which the peers do not write either.
		"LOG_LEVEL=warn",
		// No active health checks, as none of the peers is given any.
		"HEALTH_INTERVAL=0"}, c.env, goEnv(gomaxprocs))
	p, err := s.procs.Start(ctx, "dispatcher-"+c.key, env, bins.dispatcher)
	if err != nil {
		return err
	}
	c.url, c.pid = fmt.Sprintf("http://127.0.0.1:%d/", port), p.Pid()
	admin := fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	if err := localrun.WaitFor(ctx, time.Second, localrun.HTTPOK(admin+"/readyz")); err != nil {
		return fmt.Errorf("dispatcher not ready: %w", err)
	}
	if c.group == groupLong {
		if c.dash, err = openDashboard(ctx, admin); err != nil {
			return err
		}
	}
	return s.check(c)
}

// startPeer writes the peer's configuration into dir, starts it, and waits
// until it answers from the backends.
func (s *stack) startPeer(ctx context.Context, dir, program string, c *contestant, gomaxprocs int) error {
	port, err := localrun.FreePort()
	if err != nil {
		return err
	}
	e := peerEnv{listen: port, dir: dir}
	for _, u := range s.backends {
		e.backends = append(e.backends, strings.TrimPrefix(u, "http://"))
	}
	redirect := c.group == groupRedirect
	var config, file string
	var args, env []string
	logName := c.peer + "-" + c.group
	switch c.peer {
	case "haproxy":
		job := map[string]haproxyJob{"haproxy-redir": haproxyRedir, "haproxy-rules": haproxyRules}[c.key]
		if !redirect {
			job = haproxyForward
		}
		logName = c.key
		config, file = haproxyConfig(e, job), c.key+".cfg"
		args = []string{"-db", "-f", filepath.Join(dir, file)}
	case "nginx":
		config, file = nginxConfig(e, redirect), "nginx-"+c.group+".conf"
		if err := os.MkdirAll(filepath.Join(dir, "nginx-"+c.group+"-temp"), 0o755); err != nil {
			return err
		}
		args = []string{"-e", filepath.Join(dir, "nginx-"+c.group+".log"), "-p", dir, "-c", filepath.Join(dir, file)}
	case "caddy":
		config, file = caddyfile(e), "Caddyfile"
		args = []string{"run", "--config", filepath.Join(dir, file), "--adapter", "caddyfile"}
		// Caddy keeps its state under XDG_DATA_HOME and XDG_CONFIG_HOME:
		// in the temporary directory, not the user's home.
		env = slices.Concat([]string{"XDG_DATA_HOME=" + filepath.Join(dir, "caddy-data"),
			"XDG_CONFIG_HOME=" + filepath.Join(dir, "caddy-config")}, goEnv(gomaxprocs))
	default:
		return fmt.Errorf("no peer %q", c.peer)
	}
	if err := os.WriteFile(filepath.Join(dir, file), []byte(config), 0o644); err != nil {
		return err
	}
	p, err := s.procs.Start(ctx, logName, env, program, args...)
	if err != nil {
		return err
	}
	c.url, c.pid = fmt.Sprintf("http://127.0.0.1:%d/", port), p.Pid()
	if err := localrun.WaitFor(ctx, time.Second, answers(c.url)); err != nil {
		return fmt.Errorf("%s did not answer (its log: %s): %w", c.peer, s.procs.LogPath(logName), err)
	}
	return s.check(c)
}

// measure runs one slice of load at c and returns what the load generator
// measured, and how many LMOVE calls Redis counted and how many bytes it
// received meanwhile. The other contestants are idle then, so the counts
// are c's (but for the other dispatchers' few background commands).
func (s *stack) measure(ctx context.Context, c *contestant, load loader, conns int, dur time.Duration) (r result, lmoves, redisIn int64, err error) {
	before, err := redistest.Calls(ctx, s.redis, "lmove")
	if err != nil {
		return result{}, 0, 0, err
	}
	inBefore, err := netInput(ctx, s.redis)
	if err != nil {
		return result{}, 0, 0, err
	}
	r, err = load.run(ctx, c.url, conns, dur)
	if err != nil {
		return r, 0, 0, err
	}
	after, err := redistest.Calls(ctx, s.redis, "lmove")
	if err != nil {
		return r, 0, 0, err
	}
	inAfter, err := netInput(ctx, s.redis)
	return r, after - before, inAfter - inBefore, err
}

// check makes sure a contestant does its job before it is measured, as a
// user would see it: 2 × (number of backends) requests in a row are each
// redirected to a backend (Location) or answered by one (200, its body,
// its X-Backend), and a contestant that balances sends them to every
// backend. A fast error page is no result.
func (s *stack) check(c *contestant) error {
	client := &http.Client{Timeout: 5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	seen := map[string]bool{}
	for range 2 * len(s.backends) {
		resp, err := client.Get(c.url)
		if err != nil {
			return err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if c.group == groupRedirect {
			loc := strings.TrimSuffix(resp.Header.Get("Location"), "/")
			if resp.StatusCode != http.StatusFound || !slices.Contains(s.backends, loc) {
				return fmt.Errorf("answered %d with Location %q, want 302 to one of %q", resp.StatusCode, loc, s.backends)
			}
			seen[loc] = true
			continue
		}
		name, names := resp.Header.Get("X-Backend"), s.names
		if c.group == groupLong {
			names = s.longNames
		}
		if resp.StatusCode != http.StatusOK || string(body) != "Hello, World!" || !slices.Contains(names, name) {
			return fmt.Errorf("answered %d %q from X-Backend %q, want 200 \"Hello, World!\" from one of %q",
				resp.StatusCode, body, name, names)
		}
		seen[name] = true
	}
	if want := len(s.backends); c.rotates && len(seen) != want {
		return fmt.Errorf("%d requests reached %d of the %d backends, want all", 2*want, len(seen), want)
	}
	return nil
}

// answers reports whether anything answers HTTP at url.
func answers(url string) func(context.Context) error {
	return func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			return err
		}
		return resp.Body.Close()
	}
}
