package main

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/spreadlb/spread/internal/pick"

	"github.com/spreadlb/spread/internal/app"
	"github.com/spreadlb/spread/internal/redistest"
	"github.com/spreadlb/spread/internal/store"
)

// seeder runs the CLI against srv and returns its stdout.
func seeder(t *testing.T, srv *redistest.Server, env map[string]string, args ...string) (string, error) {
	t.Helper()
	getenv := func(k string) string {
		if v, ok := env[k]; ok || k != "REDIS_URL" {
			return v
		}
		return srv.URL
	}
	var out bytes.Buffer
	err := run(context.Background(), args, getenv, &out)
	return out.String(), err
}

func lrange(t *testing.T, srv *redistest.Server) []string {
	t.Helper()
	got, err := srv.Client.LRange(context.Background(), "servers", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestSeed(t *testing.T) {
	custom := []string{"http://a.example:8000", "https://b.example/app"}
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want []string
	}{
		{"bare seeder means the tutorial's three", nil, nil, tutorialServers},
		{"seed without URLs", nil, []string{"seed"}, tutorialServers},
		{"seed with URLs", nil, append([]string{"seed"}, custom...), custom},
		{"URLs without the word seed", nil, custom, custom},
		{"SERVERS", map[string]string{"SERVERS": " http://a.example:8000, https://b.example/app,"}, []string{"seed"}, custom},
		{"arguments win over SERVERS", map[string]string{"SERVERS": "http://c.example"}, custom, custom},
		{"duplicates are kept (they are weights)", nil, []string{"http://a:1", "http://a:1"}, []string{"http://a:1", "http://a:1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t)
			srv.Client.RPush(context.Background(), "servers", "http://old.example")
			for range 2 { // seeding twice leaves the same list
				out, err := seeder(t, srv, tc.env, tc.args...)
				if err != nil {
					t.Fatalf("seeder %q: %v", tc.args, err)
				}
				if !strings.HasSuffix(out, strings.Join(tc.want, "\n")+"\n") {
					t.Errorf("output %q does not end with the list %q", out, tc.want)
				}
			}
			if got := lrange(t, srv); !slices.Equal(got, tc.want) {
				t.Errorf("LRANGE: got %q, want %q", got, tc.want)
			}
		})
	}
}

// badInputs are mistakes in what the user typed (a bad URL, origin,
// weight, flag, command or Redis setting), each with what its message must
// mention.
var badInputs = []struct {
	args    []string
	env     map[string]string
	mention string
}{
	{[]string{"seed", "http://ok.example", "javascript:alert(1)"}, nil, "javascript:alert(1)"},
	{[]string{"http://ok.example", "//evil.example"}, nil, "//evil.example"},
	{[]string{"seed"}, map[string]string{"SERVERS": "http://ok.example,http://u:p@x.example"}, "http://u:p@x.example"},
	{[]string{"seed", "http://a.example/?q=1"}, nil, "must not have a query"},
	{[]string{"seed", "http://a.example:65536"}, nil, "port must be 1-65535"},
	{[]string{"seed", "http://[fe80::1%25eth0]:5000"}, nil, "host must be a DNS name or an IP address"},
	{[]string{"seed", ""}, nil, "empty"},
	{[]string{"add", "/relative"}, nil, "/relative"},
	{[]string{"add", "http://a.example\r\nX-Evil: 1"}, nil, "http://a.example\\r\\nX-Evil: 1"},
	{[]string{"add", "http://u@a.example"}, nil, "must not contain user info"},
	{[]string{"add"}, nil, "exactly one URL"},
	{[]string{"add", "http://a.example", "http://b.example"}, nil, "exactly one URL"},
	{[]string{"remove"}, nil, "exactly one URL"},
	{[]string{"watch", "-n", "-1"}, nil, "must not be negative"},
	{[]string{"watch", "-x"}, nil, "flag provided but not defined"},
	{[]string{"watch", "-i", "1"}, nil, `invalid value "1" for flag -i`},
	{[]string{"watch", "5"}, nil, `unexpected argument "5"`},
	{[]string{"watch", "-n", "1", "-i", "0", "extra"}, nil, `unexpected argument "extra"`},
	{[]string{"list", "extra"}, nil, "takes no arguments"},
	{[]string{"frobnicate"}, nil, `unknown command "frobnicate"`},
	{[]string{"seed", "-probe", "http://a:1"}, nil, "ORIGIN=PROBE_ORIGIN"},
	{[]string{"seed", "-probe", "http://a:1=ftp://b", "http://a:1"}, nil, "ftp://b"},
	{[]string{"seed", "-probe", "http://a:1/app=http://b:1", "http://a:1"}, nil, "no path"},
	{[]string{"seed", "-probe", "http://a:1=http://b:1", "-probe", "HTTP://A:1/=http://c:1", "http://a:1"}, nil, "http://a:1 given two probe addresses"},
	{[]string{"probe", "http://a:1"}, nil, "seeder probe ORIGIN PROBE_ORIGIN"},
	{[]string{"probe", "remove"}, nil, "seeder probe ORIGIN PROBE_ORIGIN"},
	{[]string{"probe", "http://a:1", "javascript:x"}, nil, "javascript:x"},
	{[]string{"probe", "http://a:1/app", "http://b:1"}, nil, "no path"},
	{[]string{"strategy", "fastest"}, nil, `unknown strategy "fastest"`},
	{[]string{"strategy", "hash", "HASH_KEY"}, nil, `"HASH_KEY": want KEY=VALUE`},
	// A bad weight, a bad URL among weighted ones, a weight given to add.
	{[]string{"seed", "http://a:5000*2", "http://b:5001*0"}, nil, `"http://b:5001*0"`},
	{[]string{"seed", "http://a:5000*101"}, nil, `"http://a:5000*101"`},
	{[]string{"seed", "http://a:5000*99999999999999999999"}, nil, `"http://a:5000*99999999999999999999"`},
	{[]string{"http://a:5000*two", "http://b:5001"}, nil, `"http://a:5000*two"`},
	{[]string{"seed", "http://a:5000*"}, nil, `"http://a:5000*"`},
	{[]string{"seed"}, map[string]string{"SERVERS": "http://a:5000*-1"}, `"http://a:5000*-1"`},
	{[]string{"seed", "http://a:5000*2", "javascript:alert(1)*2"}, nil, "javascript:alert(1)"},
	{[]string{"add", "http://a:5000*2"}, nil, `"http://a:5000*2"`},
	// Bad Redis settings.
	{[]string{"seed", "http://a:5000"}, map[string]string{"REDIS_KEY": " "}, "REDIS_KEY"},
	{[]string{"add", "http://a:5000"}, map[string]string{"REDIS_KEY": "my servers"}, "REDIS_KEY"},
	{[]string{"seed", "http://a:5000"}, map[string]string{"REDIS_TLS_CERT": "/nonexistent/client.crt"}, "REDIS_TLS_KEY"},
	{[]string{"seed", "http://a:5000"}, map[string]string{"REDIS_TLS_CA": "/nonexistent/ca.crt"}, "REDIS_TLS_CA"},
}

// keyspace is every key on srv with its value (DUMP), to compare.
func keyspace(t *testing.T, srv *redistest.Server) map[string]string {
	t.Helper()
	ctx := context.Background()
	keys, err := srv.Client.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, k := range keys {
		if out[k], err = srv.Client.Dump(ctx, k).Result(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// Bad input is named, the exit status is 2, and Redis is untouched: no
// key, the list's version included, changes.
func TestBadInputChangesNothing(t *testing.T) {
	srv := redistest.Start(t)
	for _, args := range [][]string{{"seed", "-probe", "http://127.0.0.1:5000=http://backend1:5000"}, {"strategy", "random"}} {
		if _, err := seeder(t, srv, nil, args...); err != nil {
			t.Fatal(err)
		}
	}
	before := keyspace(t, srv)
	for _, tc := range badInputs {
		_, err := seeder(t, srv, tc.env, tc.args...)
		switch {
		case err == nil:
			t.Errorf("seeder %q: got no error, want one", tc.args)
		case exitCode(err) != 2:
			t.Errorf("seeder %q: got exit status %d, want 2 (%v)", tc.args, exitCode(err), err)
		case !strings.Contains(err.Error(), tc.mention):
			t.Errorf("seeder %q: error %q does not mention %q", tc.args, err, tc.mention)
		}
		if got := lrange(t, srv); !slices.Equal(got, tutorialServers) {
			t.Fatalf("seeder %q changed the list: got %q, want %q", tc.args, got, tutorialServers)
		}
		if after := keyspace(t, srv); !maps.Equal(after, before) {
			t.Fatalf("seeder %q changed Redis: keys %q, want %q", tc.args, slices.Sorted(maps.Keys(after)), slices.Sorted(maps.Keys(before)))
		}
	}
}

// Bad input is named with exit status 2 before Redis is asked anything:
// with Redis down too, the message is the mistake, not "redis unavailable".
func TestBadInputIsNamedBeforeRedis(t *testing.T) {
	srv := redistest.Start(t)
	srv.Stop()
	for _, tc := range badInputs {
		_, err := seeder(t, srv, tc.env, tc.args...)
		if err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), tc.mention) {
			t.Errorf("seeder %q with Redis down: got %v (exit status %d), want exit status 2 and a message mentioning %q", tc.args, err, exitCode(err), tc.mention)
		}
	}
}

func TestListAddRemove(t *testing.T) {
	srv := redistest.Start(t)
	if _, err := seeder(t, srv, nil, "seed", "http://a:1", "http://b:2"); err != nil {
		t.Fatal(err)
	}
	if out, err := seeder(t, srv, nil, "add", "http://c:3"); err != nil || !strings.Contains(out, "3 entries") {
		t.Errorf("add: got (%q, %v), want a line saying 3 entries", out, err)
	}
	out, err := seeder(t, srv, nil, "list")
	if want := "http://a:1\nhttp://b:2\nhttp://c:3\n"; err != nil || out != want {
		t.Errorf("list: got (%q, %v), want %q", out, err, want)
	}
	out, err = seeder(t, srv, nil, "remove", "http://a:1")
	if want := "removed http://a:1 from \"servers\" (1 occurrence; 2 entries left)\n"; err != nil || out != want {
		t.Errorf("remove: got (%q, %v), want %q", out, err, want)
	}
	_, err = seeder(t, srv, nil, "remove", "http://a:1")
	if !errors.Is(err, store.ErrNotInList) || exitCode(err) != 1 {
		t.Errorf("remove of a missing URL: got %v (exit %d), want ErrNotInList (exit 1)", err, exitCode(err))
	}
	// An invalid entry put there by hand can still be removed.
	srv.Client.RPush(context.Background(), "servers", "javascript:alert(1)")
	if _, err := seeder(t, srv, nil, "remove", "javascript:alert(1)"); err != nil {
		t.Errorf("remove of an invalid entry: %v", err)
	}
	if got, want := lrange(t, srv), []string{"http://b:2", "http://c:3"}; !slices.Equal(got, want) {
		t.Errorf("LRANGE: got %q, want %q", got, want)
	}
}

// Scheme and host are case-insensitive (RFC 3986, 6.2.2.1): seed, add and
// SERVERS store them in lower case and the path as typed, so two spellings
// of one backend are one entry (least-conn and p2c count per entry);
// weights of two spellings add up; remove and probe find an entry whatever
// the spelling. An entry written in upper case before (by hand, or by an
// older seeder) is still removed by its own spelling.
func TestSchemeAndHostAreStoredInLowerCase(t *testing.T) {
	srv := redistest.Start(t)
	steps := []struct {
		args []string
		env  map[string]string
		want []string // LRANGE after
	}{
		{[]string{"seed", "HTTP://UPPER:5000/App", "http://upper:5000/App"}, nil, []string{"http://upper:5000/App", "http://upper:5000/App"}},
		{[]string{"seed"}, map[string]string{"SERVERS": "Https://B.Example/X%2Fy"}, []string{"https://b.example/X%2Fy"}},
		{[]string{"add", "HTTP://C.EXAMPLE:1"}, nil, []string{"https://b.example/X%2Fy", "http://c.example:1"}},
		{[]string{"remove", "HTTPS://b.EXAMPLE/X%2Fy"}, nil, []string{"http://c.example:1"}},
		// One URL in two spellings: one backend of weight 3, not two.
		{[]string{"seed", "HTTP://A:1*2", "http://a:1", "http://b:2"}, nil, []string{"http://a:1", "http://a:1", "http://b:2", "http://a:1"}},
	}
	for _, st := range steps {
		if out, err := seeder(t, srv, st.env, st.args...); err != nil {
			t.Fatalf("seeder %q: %v (output %q)", st.args, err, out)
		}
		if got := lrange(t, srv); !slices.Equal(got, st.want) {
			t.Errorf("seeder %q: LRANGE got %q, want %q", st.args, got, st.want)
		}
	}
	out, err := seeder(t, srv, nil, "remove", "HTTP://A:1")
	if want := "removed http://a:1 from \"servers\" (3 occurrences; 1 entry left)\n"; err != nil || out != want {
		t.Errorf("remove HTTP://A:1: got (%q, %v), want %q", out, err, want)
	}
	// Written as typed by hand: its own spelling removes it, and so does
	// its lower-case one where it was the same backend.
	srv.Client.RPush(context.Background(), "servers", "HTTP://OLD:1", "http://old:1")
	out, err = seeder(t, srv, nil, "remove", "HTTP://OLD:1")
	if want := "removed http://old:1 from \"servers\" (2 occurrences; 1 entry left)\n"; err != nil || out != want {
		t.Errorf("remove HTTP://OLD:1: got (%q, %v), want %q", out, err, want)
	}
	if got, want := lrange(t, srv), []string{"http://b:2"}; !slices.Equal(got, want) {
		t.Errorf("LRANGE: got %q, want %q", got, want)
	}

	for _, st := range []struct {
		args []string
		want string
	}{
		{[]string{"probe", "HTTP://LOCALHOST:5000", "HTTP://Backend1:5000"}, "http://localhost:5000 is probed at http://backend1:5000/healthz\n"},
		{[]string{"probe"}, "http://localhost:5000 http://backend1:5000\n"},
		{[]string{"probe", "remove", "HTTP://LocalHost:5000"}, "http://localhost:5000 is probed at its own address again\n"},
		{[]string{"probe"}, ""},
	} {
		if out, err := seeder(t, srv, nil, st.args...); err != nil || out != st.want {
			t.Errorf("seeder %q: got (%q, %v), want %q", st.args, out, err, st.want)
		}
	}
}

// The probe addresses: set with seed -probe (replacing them all, in the
// same step as the list) or probe ORIGIN PROBE_ORIGIN, listed, removed.
func TestProbe(t *testing.T) {
	srv := redistest.Start(t)
	out, err := seeder(t, srv, nil, "seed", "-probe=http://localhost:5000=http://backend1:5000",
		"-probe", "http://localhost:5001/=http://backend2:5001", "http://localhost:5000", "http://localhost:5001")
	if err != nil || !strings.Contains(out, "probe addresses in \"{servers}:probe\": 2") {
		t.Fatalf("seed -probe: got (%q, %v), want a line saying 2 probe addresses", out, err)
	}
	steps := []struct {
		args []string
		want string
	}{
		{[]string{"probe"}, "http://localhost:5000 http://backend1:5000\nhttp://localhost:5001 http://backend2:5001\n"},
		{[]string{"probe", "http://LOCALHOST:5002", "http://backend3:5002"}, "http://localhost:5002 is probed at http://backend3:5002/healthz\n"},
		{[]string{"probe", "remove", "http://localhost:5000"}, "http://localhost:5000 is probed at its own address again\n"},
		{[]string{"probe", "list"}, "http://localhost:5001 http://backend2:5001\nhttp://localhost:5002 http://backend3:5002\n"},
		// seed without -probe leaves them; with -probe replaces them all.
		{[]string{"seed", "http://localhost:5000"}, "seeded \"servers\" with 1 URL\nhttp://localhost:5000\n"},
		{[]string{"probe"}, "http://localhost:5001 http://backend2:5001\nhttp://localhost:5002 http://backend3:5002\n"},
		{[]string{"seed", "-probe", "http://localhost:5000=http://b:5000", "http://localhost:5000"}, "seeded \"servers\" with 1 URL\nprobe addresses in \"{servers}:probe\": 1\nhttp://localhost:5000\n"},
		{[]string{"probe"}, "http://localhost:5000 http://b:5000\n"},
		// One origin in two spellings is one probe address.
		{[]string{"seed", "-probe", "http://localhost:5000=http://c:5000", "-probe", "HTTP://LOCALHOST:5000/=http://c:5000", "http://localhost:5000"}, "seeded \"servers\" with 1 URL\nprobe addresses in \"{servers}:probe\": 1\nhttp://localhost:5000\n"},
		{[]string{"probe"}, "http://localhost:5000 http://c:5000\n"},
	}
	for _, st := range steps {
		out, err := seeder(t, srv, nil, st.args...)
		if err != nil || out != st.want {
			t.Errorf("seeder %q: got (%q, %v), want %q", st.args, out, err, st.want)
		}
	}
	// An origin without a probe address: the message names the probe
	// hash as what it is, not as the rotation list.
	_, err = seeder(t, srv, nil, "probe", "remove", "http://nowhere:1")
	if want := `no probe address set for "http://nowhere:1" in "{servers}:probe"`; !errors.Is(err, store.ErrNoProbe) ||
		exitCode(err) != 1 || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "rotation list") {
		t.Errorf("probe remove of an unknown origin: got %v (exit %d), want ErrNoProbe saying %s (exit 1)", err, exitCode(err), want)
	}
}

// list marks the entries the health checks took out of the store.
func TestListMarksDownEntries(t *testing.T) {
	srv := redistest.Start(t)
	if _, err := seeder(t, srv, nil, "seed", "http://a:1", "http://b:2", "http://c:3"); err != nil {
		t.Fatal(err)
	}
	srv.Client.SAdd(context.Background(), "{servers}:down", "http://b:2")
	out, err := seeder(t, srv, nil, "list")
	if want := "http://a:1\nhttp://b:2\tdown\nhttp://c:3\n"; err != nil || out != want {
		t.Errorf("list: got (%q, %v), want %q", out, err, want)
	}
}

func TestWatchPrintsEachRotation(t *testing.T) {
	srv := redistest.Start(t)
	if _, err := seeder(t, srv, nil, "seed", "http://a:1", "http://b:2", "http://c:3"); err != nil {
		t.Fatal(err)
	}
	out, err := seeder(t, srv, nil, "watch", "-n", "7", "-i", "0")
	if err != nil {
		t.Fatal(err)
	}
	// Each line: the step's address, then the tally of steps per entry.
	want := "http://c:3  tally: http://c:3=1\n" +
		"http://b:2  tally: http://b:2=1 http://c:3=1\n" +
		"http://a:1  tally: http://a:1=1 http://b:2=1 http://c:3=1\n" +
		"http://c:3  tally: http://a:1=1 http://b:2=1 http://c:3=2\n" +
		"http://b:2  tally: http://a:1=1 http://b:2=2 http://c:3=2\n" +
		"http://a:1  tally: http://a:1=2 http://b:2=2 http://c:3=2\n" +
		"http://c:3  tally: http://a:1=2 http://b:2=2 http://c:3=3\n"
	if out != want {
		t.Errorf("got %q, want %q", out, want)
	}
	if _, err := seeder(t, srv, nil, "remove", "http://a:1"); err != nil {
		t.Fatal(err)
	}
	if _, err := seeder(t, srv, nil, "remove", "http://b:2"); err != nil {
		t.Fatal(err)
	}
	if _, err := seeder(t, srv, nil, "remove", "http://c:3"); err != nil {
		t.Fatal(err)
	}
	if _, err := seeder(t, srv, nil, "watch", "-n", "1"); !errors.Is(err, pick.ErrNoBackends) {
		t.Errorf("watch of an empty list: got %v, want ErrNoBackends", err)
	}
}

func TestRedisDown(t *testing.T) {
	srv := redistest.Start(t)
	srv.Stop()
	for _, args := range [][]string{{"seed"}, {"list"}, {"healthcheck"}} {
		_, err := seeder(t, srv, nil, args...)
		if !errors.Is(err, pick.ErrUnavailable) || exitCode(err) != 1 {
			t.Errorf("seeder %q with Redis down: got %v (exit %d), want ErrUnavailable (exit 1)", args, err, exitCode(err))
		}
	}
}

func TestREADMEListsSettings(t *testing.T) {
	if err := app.CheckREADME("../README.md", "seeder", settings); err != nil {
		t.Error(err)
	}
}

func TestRemoveCountsInWords(t *testing.T) {
	srv := redistest.Start(t)
	if _, err := seeder(t, srv, nil, "seed", "http://a:1", "http://b:2", "http://a:1"); err != nil {
		t.Fatal(err)
	}
	steps := []struct{ url, want string }{
		{"http://a:1", "removed http://a:1 from \"servers\" (2 occurrences; 1 entry left)\n"},
		{"http://b:2", "removed http://b:2 from \"servers\" (1 occurrence; 0 entries left)\n"},
	}
	for _, st := range steps {
		out, err := seeder(t, srv, nil, "remove", st.url)
		if err != nil || out != st.want {
			t.Errorf("remove %s: got (%q, %v), want %q", st.url, out, err, st.want)
		}
	}
}

// help prints one usage line (or more) per command of the table, and
// nothing touches Redis: no REDIS_URL is needed.
func TestHelp(t *testing.T) {
	getenv := func(string) string { return "" }
	for _, arg := range []string{"help", "-h", "--help"} {
		var out bytes.Buffer
		if err := run(context.Background(), []string{arg}, getenv, &out); err != nil {
			t.Fatalf("seeder %s: %v", arg, err)
		}
		if out.String() != usage() {
			t.Errorf("seeder %s: got %q, want the usage text", arg, out.String())
		}
	}
	text := usage()
	for _, c := range commands {
		if !strings.Contains(text, "\n  seeder "+c.name+" ") && !strings.Contains(text, "\n  seeder ["+c.name+"] ") {
			t.Errorf("usage lacks a line for %q:\n%s", c.name, text)
		}
	}
}

// TestDocsShowTheUsage keeps docs/seeder.md's list of commands the same as
// `seeder help`.
func TestDocsShowTheUsage(t *testing.T) {
	doc, err := os.ReadFile("../docs/seeder.md")
	if err != nil {
		t.Fatal(err)
	}
	block := "```\n$ seeder help\n" + usage() + "```\n"
	if !strings.Contains(string(doc), block) {
		t.Errorf("docs/seeder.md lacks the output of seeder help, as a code block:\n%s", block)
	}
}

// TestCheck runs `seeder check`: it prints every setting with the value the
// seeder would use, without connecting (nothing listens at REDIS_URL here),
// and refuses a bad setting, naming it, with exit status 2.
func TestCheck(t *testing.T) {
	env := map[string]string{"REDIS_URL": "redis://127.0.0.1:1/0", "SERVERS": "http://backend:5000*2, http://backend2:5001"}
	getenv := func(k string) string { return env[k] }
	var out bytes.Buffer
	if err := run(context.Background(), []string{"check"}, getenv, &out); err != nil {
		t.Fatalf("check: got %v, want no error", err)
	}
	want := "REDIS_URL=redis://127.0.0.1:1/0\nREDIS_KEY=servers\nREDIS_TLS_CA=\nREDIS_TLS_CERT=\nREDIS_TLS_KEY=\n" +
		"SERVERS=http://backend:5000*2, http://backend2:5001\n"
	if out.String() != want {
		t.Errorf("check printed\n%s\nwant\n%s", out.String(), want)
	}

	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"REDIS_KEY": "two words"}, `REDIS_KEY="two words"`},
		{map[string]string{"REDIS_URL": "redis://redis:6379/zero"}, "REDIS_URL: redis: invalid database number"},
		{map[string]string{"REDIS_TLS_CERT": "/nonexistent.pem"}, "REDIS_TLS_CERT is set and REDIS_TLS_KEY is not"},
		{map[string]string{"SERVERS": "http://ok:5000,ftp://nope:21"}, "SERVERS: "},
		{map[string]string{"SERVERS": "http://ok:5000*0"}, "SERVERS: invalid weight"},
	} {
		out.Reset()
		err := run(context.Background(), []string{"check"}, func(k string) string { return tc.env[k] }, &out)
		if err == nil || !strings.Contains(err.Error(), tc.want) || exitCode(err) != exitUsage {
			t.Errorf("check with %v: got error %v (exit status %d), want one containing %q, exit status %d", tc.env, err, exitCode(err), tc.want, exitUsage)
		}
		if out.Len() > 0 {
			t.Errorf("check with %v printed %q, want nothing", tc.env, out.String())
		}
	}
}

// seed replaces the list and what belongs to the old one (the tally, the
// quarantine, the reconciler's notes of the entries it added) in one step
// that changes the list's version, and keeps the probe addresses, the
// stored strategy and the down set, as docs/seeder.md says.
func TestSeedReplacesTheListAndKeepsTheRest(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	for _, args := range [][]string{
		{"seed", "-probe", "http://a:1=http://backend1:1", "http://a:1", "http://b:2"},
		{"strategy", "random"},
		{"watch", "-n", "2", "-i", "0"},
	} {
		if _, err := seeder(t, srv, nil, args...); err != nil {
			t.Fatalf("seeder %q: %v", args, err)
		}
	}
	c := srv.Client
	c.RPush(ctx, "{servers}:quarantine", "http://long.example/x")
	c.HSet(ctx, "{servers}:joined", "http://b:2", 1)
	c.SAdd(ctx, "{servers}:down", "http://b:2")
	before := keyspace(t, srv)

	if _, err := seeder(t, srv, nil, "seed", "http://c:3"); err != nil {
		t.Fatal(err)
	}
	after := keyspace(t, srv)
	if got := lrange(t, srv); !slices.Equal(got, []string{"http://c:3"}) {
		t.Errorf("LRANGE: got %q, want [http://c:3]", got)
	}
	for _, k := range []string{"{servers}:picks", "{servers}:quarantine", "{servers}:joined"} {
		if _, ok := after[k]; ok {
			t.Errorf("%s is still there after seed, want it gone", k)
		}
	}
	if after["{servers}:version"] == before["{servers}:version"] {
		t.Error("{servers}:version did not change")
	}
	for _, k := range []string{"{servers}:probe", "{servers}:strategy", "{servers}:down"} {
		if after[k] != before[k] || after[k] == "" {
			t.Errorf("%s changed or went away with seed, want it kept", k)
		}
	}
}

// A key of the wrong type (put there by hand) is named in the error: the
// key beside the list that holds it, not the list, which is fine.
func TestWrongTypeNamesTheKey(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		key  string
		args []string
	}{
		{"{servers}:probe", []string{"probe"}},
		{"{servers}:probe", []string{"probe", "http://a:1", "http://b:1"}},
		{"{servers}:probe", []string{"probe", "remove", "http://a:1"}},
		{"{servers}:picks", []string{"watch", "-n", "1"}},
		{"servers", []string{"list"}},
	} {
		srv := redistest.Start(t)
		if _, err := seeder(t, srv, nil, "seed"); err != nil {
			t.Fatal(err)
		}
		if err := srv.Client.Del(ctx, tc.key).Err(); err != nil {
			t.Fatal(err)
		}
		if err := srv.Client.Set(ctx, tc.key, "x", 0).Err(); err != nil {
			t.Fatal(err)
		}
		_, err := seeder(t, srv, nil, tc.args...)
		if err == nil || !errors.Is(err, pick.ErrWrongType) || exitCode(err) != 1 || !strings.Contains(err.Error(), strconv.Quote(tc.key)) {
			t.Errorf("seeder %q with %s a string: got %v (exit status %d), want exit status 1 naming %q", tc.args, tc.key, err, exitCode(err), tc.key)
			continue
		}
		if isList := tc.key == "servers"; strings.Contains(err.Error(), "rotation key") != isList {
			t.Errorf("seeder %q with %s a string: got %q, which blames the rotation list: %v, want %v", tc.args, tc.key, err, !isList, isList)
		}
	}
}
