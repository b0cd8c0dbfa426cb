package main

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
)

// docEnv is the example that docs/peers.md shows the configurations for.
var docEnv = peerEnv{listen: 8081, dir: "/tmp/spread-bench123",
	backends: []string{"127.0.0.1:5001", "127.0.0.1:5002", "127.0.0.1:5003"}}

// docConfigs are the configurations docs/peers.md must show, literally.
func docConfigs() map[string]string {
	return map[string]string{
		"HAProxy, redirect":       haproxyConfig(docEnv, haproxyRedir),
		"HAProxy, redirect rules": haproxyConfig(docEnv, haproxyRules),
		"nginx, redirect":         nginxConfig(docEnv, true),
		"Caddy, proxy":            caddyfile(docEnv),
		"HAProxy, proxy":          haproxyConfig(docEnv, haproxyForward),
		"nginx, proxy":            nginxConfig(docEnv, false),
	}
}

// docs/peers.md shows each configuration exactly as the bench writes it,
// so that a reader can check what the peers were given.
func TestPeerConfigsAreInDocs(t *testing.T) {
	doc, err := os.ReadFile("../docs/peers.md")
	if err != nil {
		t.Fatal(err)
	}
	for name, config := range docConfigs() {
		if !strings.Contains(string(doc), "\n"+config+"```\n") {
			t.Errorf("docs/peers.md lacks the %s configuration as generated; want a code block of:\n%s", name, config)
		}
	}
}

// Every peer gets the same backends in the same order (nginx's redirect:
// the first only), one worker, and no access log; the proxies keep
// connections to the backends alive.
func TestPeerConfigsGiveTheSameConditions(t *testing.T) {
	for name, config := range docConfigs() {
		backends := docEnv.backends
		if name == "nginx, redirect" {
			backends = backends[:1]
			if strings.Contains(config, docEnv.backends[1]) {
				t.Errorf("%s: names more than the first backend:\n%s", name, config)
			}
		}
		pos := -1
		for _, b := range backends {
			i := strings.Index(config, b)
			if i < 0 || i < pos {
				t.Errorf("%s: backend %s missing or out of order", name, b)
			}
			pos = i
		}
		if !strings.Contains(config, "127.0.0.1:8081") && !strings.Contains(config, ":8081 {") {
			t.Errorf("%s: does not listen on port 8081", name)
		}
		want := map[string][]string{
			"HAProxy": {"nbthread 1"},
			"nginx":   {"worker_processes 1;", "access_log off;", "keepalive_requests 1000000;"},
			"Caddy":   {"admin off", "auto_https off", "lb_policy round_robin", "keepalive_idle_conns_per_host 128"},
		}[strings.Split(name, ",")[0]]
		switch name {
		case "nginx, proxy":
			want = append(want, "keepalive 64;", "proxy_http_version 1.1;", `proxy_set_header Connection "";`)
		case "HAProxy, redirect", "HAProxy, proxy":
			want = append(want, "balance roundrobin")
		case "HAProxy, redirect rules":
			want = append(want, "sc_inc_gpc0(0),mod(3)", "if { var(txn.turn) -m int 1 }", "if { var(txn.turn) -m int 2 }")
		}
		for _, w := range want {
			if !strings.Contains(config, w) {
				t.Errorf("%s: no %q in\n%s", name, w, config)
			}
		}
		if strings.HasPrefix(name, "HAProxy") && strings.Contains(config, "\tlog") {
			t.Errorf("%s: has a log directive:\n%s", name, config)
		}
	}
	for _, tt := range []struct {
		job         haproxyJob
		what        string
		redir, rule int // servers with redir, redirect rules
	}{{haproxyRedir, "redirect", 3, 0}, {haproxyRules, "redirect rules", 0, 3}, {haproxyForward, "proxy", 0, 0}} {
		config := haproxyConfig(docEnv, tt.job)
		redir, rule := strings.Count(config, " redir http://127.0.0.1:500"), strings.Count(config, "http-request redirect prefix http://127.0.0.1:500")
		if redir != tt.redir || rule != tt.rule {
			t.Errorf("HAProxy %s: got %d servers with redir and %d redirect rules, want %d and %d", tt.what, redir, rule, tt.redir, tt.rule)
		}
	}
}

func TestChoosePeers(t *testing.T) {
	installed := func(names ...string) func(string) (string, error) {
		return func(name string) (string, error) {
			if slices.Contains(names, name) {
				return "/usr/sbin/" + name, nil
			}
			return "", errors.New("not found")
		}
	}
	tests := []struct {
		flag      string
		installed []string
		want      []string // the peers chosen
		note      string   // part of the note on the missing ones
		err       string   // part of the error; "" for none
	}{
		{flag: "auto", installed: []string{"haproxy", "nginx", "caddy"}, want: []string{"caddy", "haproxy", "nginx"}},
		{flag: "auto", installed: []string{"nginx"}, want: []string{"nginx"},
			note: "not measured: haproxy (Debian: apt-get install haproxy), caddy (Debian: apt-get install caddy)"},
		{flag: "none", installed: []string{"haproxy", "nginx", "caddy"}},
		{flag: "caddy,haproxy", installed: []string{"haproxy", "nginx", "caddy"}, want: []string{"caddy", "haproxy"}},
		{flag: "nginx", installed: []string{"caddy"}, err: "nginx is not installed (Debian: apt-get install nginx-light)"},
		{flag: "traefik", installed: []string{"caddy"}, err: "want auto, none, or a comma-separated list of haproxy, nginx and caddy"},
	}
	for _, tt := range tests {
		got, note, err := choosePeers(tt.flag, installed(tt.installed...))
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("-peers %s: got error %v, want one with %q", tt.flag, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("-peers %s: %v", tt.flag, err)
			continue
		}
		var names []string
		for n := range got {
			names = append(names, n)
		}
		slices.Sort(names)
		if !slices.Equal(names, tt.want) || !strings.Contains(note, tt.note) || (tt.note == "") != (note == "") {
			t.Errorf("-peers %s with %q installed: got %q, note %q; want %q, note with %q", tt.flag, tt.installed, names, note, tt.want, tt.note)
		}
	}
}

// -modes and the installed peers decide who runs: each group's dispatchers
// always, and the peers that are there.
func TestContestants(t *testing.T) {
	keys := func(cs []*contestant) []string {
		var k []string
		for _, c := range cs {
			k = append(k, c.key)
		}
		return k
	}
	all := map[string]string{"haproxy": "", "nginx": "", "caddy": ""}
	tests := []struct {
		modes string
		peers map[string]string
		want  []string
	}{
		{"redirect,proxy", all, []string{"redis", "local", "haproxy-redir", "haproxy-rules", "nginx-302", "proxy", "caddy", "haproxy", "nginx"}},
		{"redirect", map[string]string{}, []string{"redis", "local"}},
		{"proxy", map[string]string{"caddy": ""}, []string{"proxy", "caddy"}},
		{"proxy,redirect,proxy", map[string]string{"haproxy": ""}, []string{"redis", "local", "haproxy-redir", "haproxy-rules", "proxy", "haproxy"}},
		{"long", all, []string{"lc-3", "lc-10k", "rr-3", "rr-10k"}},
	}
	for _, tt := range tests {
		groups, err := parseModes(tt.modes)
		if err != nil {
			t.Fatalf("-modes %s: %v", tt.modes, err)
		}
		if got := keys(contestants(groups, tt.peers)); !slices.Equal(got, tt.want) {
			t.Errorf("-modes %s, peers %v: got %q, want %q", tt.modes, tt.peers, got, tt.want)
		}
	}
	for _, bad := range []string{"", "redirect,", "proxies"} {
		if _, err := parseModes(bad); err == nil || !strings.Contains(err.Error(), "want redirect, proxy or long") {
			t.Errorf("-modes %q: got error %v, want one naming the values", bad, err)
		}
	}
}

// In every turn each contestant has one slice, and each turn starts one
// further along.
func TestTurnOrder(t *testing.T) {
	cs := contestants([]string{groupRedirect}, map[string]string{"haproxy": ""})
	for n, want := range []string{"redis local haproxy-redir haproxy-rules", "local haproxy-redir haproxy-rules redis",
		"haproxy-redir haproxy-rules redis local", "haproxy-rules redis local haproxy-redir", "redis local haproxy-redir haproxy-rules"} {
		var got []string
		for _, c := range turnOrder(cs, n) {
			got = append(got, c.key)
		}
		if strings.Join(got, " ") != want {
			t.Errorf("turn %d: got %q, want %q", n, strings.Join(got, " "), want)
		}
	}
}
