package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// The peers are the proxies a user compares the dispatcher with: HAProxy,
// nginx and Caddy, each run from a configuration file the bench writes
// into its temporary directory, as a plain process on a loopback port. The
// configurations give every side the same conditions: the same three
// backends, keep-alive connections to them, no access log, one worker
// (nginx worker_processes 1, HAProxy nbthread 1; the Go programs, the
// dispatcher and Caddy, run with GOMAXPROCS=1 unless -gomaxprocs says
// otherwise), no active health checks, and the same X-Forwarded-For,
// -Host and -Proto headers to the backends that the dispatcher sends.
// docs/peers.md shows each configuration as generated; a test keeps it so.

// peerProgram is a peer's executable and the Debian package that has it.
type peerProgram struct{ name, pkg string }

var peerPrograms = []peerProgram{{"haproxy", "haproxy"}, {"nginx", "nginx-light"}, {"caddy", "caddy"}}

// lookPeer finds a peer's executable on PATH, or in /usr/sbin, where
// Debian puts haproxy and nginx and which a user's PATH may lack.
func lookPeer(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return exec.LookPath(filepath.Join("/usr/sbin", name))
}

// peerEnv is where a peer's configuration is generated for: the port it
// listens on, the backends as host:port, and the temporary directory
// (nginx keeps its pid file and temporary files there).
type peerEnv struct {
	listen   int
	backends []string
	dir      string
}

// Keep-alive to the backends: the dispatcher's transport keeps up to 128
// idle connections per backend; Caddy is given the same, nginx 64 in all
// (it cannot have more than 64 requests in flight with 64 clients), and
// HAProxy keeps every idle server connection by default.
const (
	idleConnsPerBackend = 128
	nginxKeepalive      = 64
	// nginx closes a keep-alive connection after 1000 requests by default,
	// on both sides; the others have no such limit, so nginx gets none
	// that a bench run could reach.
	nginxKeepaliveRequests = 1000000
)

// haproxyJob is what HAProxy does with a request.
type haproxyJob int

const (
	haproxyRedir   haproxyJob = iota // balance roundrobin; server ... redir answers a redirect
	haproxyRules                     // a counter in a stick table picks the redirect rule
	haproxyForward                   // balance roundrobin; forward the request
)

// haproxyConfig is HAProxy's configuration for job.
//
// haproxyRedir: round robin over the backends, and each server answers
// with a redirect (server ... redir: a 302 whose Location is the prefix
// joined with the request's path and query). HAProxy closes the client's
// connection after each such redirect ("connection: close"), so every
// request costs a new connection.
//
// haproxyRules: the same rotation with keep-alive: a one-entry stick
// table's counter (sc_inc_gpc0) counts the requests, and the count modulo
// the number of backends picks one of the http-request redirect rules,
// which keep the connection open.
//
// haproxyForward: round robin over the backends, forwarding the request;
// HAProxy keeps idle server connections by default (http-reuse safe).
func haproxyConfig(e peerEnv, job haproxyJob) string {
	var b strings.Builder
	what, front := map[haproxyJob]string{haproxyRedir: "redirect round robin with server ... redir",
		haproxyRules: "redirect round robin with http-request redirect rules", haproxyForward: "proxy round robin"}[job], "redirect"
	if job == haproxyForward {
		front = "proxy"
	}
	fmt.Fprintf(&b, "# HAProxy, %s, as spread's bench generates it.\n", what)
	b.WriteString("# No log directive: nothing is logged.\n")
	b.WriteString("global\n\tnbthread 1\n\tmaxconn 4096\n\n")
	b.WriteString("defaults\n\tmode http\n")
	if job == haproxyForward {
		b.WriteString("\toption forwardfor\n")
	}
	b.WriteString("\ttimeout connect 2s\n\ttimeout client 30s\n\ttimeout server 30s\n\n")
	if job == haproxyRules {
		b.WriteString("backend rotation\n\tstick-table type integer size 1 store gpc0\n\n")
	}
	fmt.Fprintf(&b, "frontend %s\n\tbind 127.0.0.1:%d\n", front, e.listen)
	switch job {
	case haproxyForward:
		b.WriteString("\thttp-request set-header X-Forwarded-Proto http\n")
		b.WriteString("\thttp-request set-header X-Forwarded-Host %[req.hdr(host)]\n")
	case haproxyRules:
		b.WriteString("\thttp-request track-sc0 int(0) table rotation\n")
		fmt.Fprintf(&b, "\thttp-request set-var(txn.turn) sc_inc_gpc0(0),mod(%d)\n", len(e.backends))
		for i, hp := range e.backends {
			fmt.Fprintf(&b, "\thttp-request redirect prefix http://%s code 302", hp)
			if i < len(e.backends)-1 {
				fmt.Fprintf(&b, " if { var(txn.turn) -m int %d }", i+1)
			}
			b.WriteString("\n")
		}
		return b.String()
	}
	b.WriteString("\tdefault_backend backends\n\n")
	b.WriteString("backend backends\n\tbalance roundrobin\n")
	for i, hp := range e.backends {
		fmt.Fprintf(&b, "\tserver backend%d %s", i+1, hp)
		if job == haproxyRedir {
			fmt.Fprintf(&b, " redir http://%s", hp)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// nginxConfig is nginx's configuration: with redirect, every request is
// answered with a redirect to the first backend (nginx has no balancing of
// redirects, so this is one fixed target: the least work a redirect can
// be); else proxy_pass round robin over the backends, HTTP/1.1 with
// keep-alive.
func nginxConfig(e peerEnv, redirect bool) string {
	var b strings.Builder
	name := "nginx-proxy"
	if redirect {
		name = "nginx-redirect"
		b.WriteString("# nginx, a redirect to one fixed backend, as spread's bench generates it.\n")
	} else {
		b.WriteString("# nginx, proxy round robin, as spread's bench generates it.\n")
	}
	temp := filepath.Join(e.dir, name+"-temp")
	fmt.Fprintf(&b, "worker_processes 1;\ndaemon off;\npid %s;\nerror_log %s warn;\n",
		filepath.Join(e.dir, name+".pid"), filepath.Join(e.dir, name+".log"))
	b.WriteString("events {\n\tworker_connections 4096;\n}\n")
	b.WriteString("http {\n\taccess_log off;\n")
	for _, t := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		fmt.Fprintf(&b, "\t%s_temp_path %s;\n", t, filepath.Join(temp, t))
	}
	fmt.Fprintf(&b, "\tkeepalive_requests %d;\n", nginxKeepaliveRequests)
	if !redirect {
		b.WriteString("\tupstream backends {\n")
		for _, hp := range e.backends {
			fmt.Fprintf(&b, "\t\tserver %s;\n", hp)
		}
		fmt.Fprintf(&b, "\t\tkeepalive %d;\n\t\tkeepalive_requests %d;\n\t}\n", nginxKeepalive, nginxKeepaliveRequests)
	}
	fmt.Fprintf(&b, "\tserver {\n\t\tlisten 127.0.0.1:%d;\n\t\tlocation / {\n", e.listen)
	if redirect {
		fmt.Fprintf(&b, "\t\t\treturn 302 http://%s$request_uri;\n", e.backends[0])
	} else {
		b.WriteString("\t\t\tproxy_pass http://backends;\n")
		b.WriteString("\t\t\tproxy_http_version 1.1;\n")
		b.WriteString("\t\t\tproxy_set_header Connection \"\";\n")
		b.WriteString("\t\t\tproxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n")
		b.WriteString("\t\t\tproxy_set_header X-Forwarded-Host $http_host;\n")
		b.WriteString("\t\t\tproxy_set_header X-Forwarded-Proto $scheme;\n")
	}
	b.WriteString("\t\t}\n\t}\n}\n")
	return b.String()
}

// caddyfile is Caddy's configuration: reverse_proxy round robin over the
// backends. Caddy writes no access log unless a site has a log directive,
// and sends X-Forwarded-For, -Host and -Proto by default.
func caddyfile(e peerEnv) string {
	var b strings.Builder
	b.WriteString("# Caddy, proxy round robin, as spread's bench generates it.\n")
	b.WriteString("{\n\tadmin off\n\tauto_https off\n}\n\n")
	fmt.Fprintf(&b, ":%d {\n\tbind 127.0.0.1\n\treverse_proxy %s {\n", e.listen, strings.Join(e.backends, " "))
	b.WriteString("\t\tlb_policy round_robin\n")
	fmt.Fprintf(&b, "\t\ttransport http {\n\t\t\tkeepalive 90s\n\t\t\tkeepalive_idle_conns_per_host %d\n\t\t}\n", idleConnsPerBackend)
	b.WriteString("\t}\n}\n")
	return b.String()
}

// choosePeers reads -peers: "auto" runs the peers that are installed and
// names the others, "none" runs none, and a comma-separated list of
// haproxy, nginx and caddy runs those, each of which must be installed.
// It returns the executables by name, and a line on what was left out.
func choosePeers(flag string, look func(string) (string, error)) (map[string]string, string, error) {
	found := map[string]string{}
	switch flag {
	case "none":
		return found, "", nil
	case "auto":
		var missing []string
		for _, p := range peerPrograms {
			if path, err := look(p.name); err == nil {
				found[p.name] = path
			} else {
				missing = append(missing, fmt.Sprintf("%s (Debian: apt-get install %s)", p.name, p.pkg))
			}
		}
		note := ""
		if len(missing) > 0 {
			note = "not installed, so not measured: " + strings.Join(missing, ", ")
		}
		return found, note, nil
	}
	for name := range strings.SplitSeq(flag, ",") {
		i := slices.IndexFunc(peerPrograms, func(p peerProgram) bool { return p.name == name })
		if i < 0 {
			return nil, "", fmt.Errorf("-peers %q: want auto, none, or a comma-separated list of haproxy, nginx and caddy", flag)
		}
		path, err := look(name)
		if err != nil {
			return nil, "", fmt.Errorf("-peers %s: %s is not installed (Debian: apt-get install %s)", flag, name, peerPrograms[i].pkg)
		}
		found[name] = path
	}
	return found, "", nil
}
