// Command seeder fills and manages the Redis list of backend URLs that the
// dispatcher rotates. `seeder help` prints its commands; docs/seeder.md
// describes them.
//
// Every URL is validated before Redis is asked anything: one bad URL is
// named on stderr, the exit status is 2 and Redis is left untouched.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spreadlb/spread/internal/balance"
	"github.com/spreadlb/spread/internal/redisconn"

	"github.com/spreadlb/spread/internal/pick"

	"github.com/spreadlb/spread/internal/app"
	"github.com/spreadlb/spread/internal/backend"
	"github.com/spreadlb/spread/internal/health"
	"github.com/spreadlb/spread/internal/store"
)

// The seeder's settings; the README's configuration table lists the same.
var (
	serversSetting = app.Setting{Name: "SERVERS", Default: "",
		Usage: "comma-separated URLs for a bare `seeder seed`; empty means the tutorial's three"}
	settings = []app.Setting{redisconn.RedisURL, store.RedisKey, redisconn.RedisTLSCA, redisconn.RedisTLSCert, redisconn.RedisTLSKey, serversSetting}
)

// tutorialServers is what `seeder seed` writes when given no URL and no SERVERS.
var tutorialServers = []string{"http://127.0.0.1:5000", "http://127.0.0.1:5001", "http://127.0.0.1:5002"}

// Exit statuses.
const (
	exitFailure = 1 // Redis failed, or the command could not be done
	exitUsage   = 2 // bad arguments or an invalid URL; nothing was written
)

// errUsage marks errors in what the user typed.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { <-ctx.Done(); stop() }() // after the first signal, a second one kills at once
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "seeder:", err)
		os.Exit(exitCode(err))
	}
}

// exitCode is 2 for what the user typed wrong (nothing was written) and 1
// for anything else.
func exitCode(err error) int {
	if errors.Is(err, errUsage) || errors.Is(err, backend.ErrInvalidURL) || errors.Is(err, backend.ErrInvalidWeight) {
		return exitUsage
	}
	return exitFailure
}

// A command is one subcommand of the seeder.
type command struct {
	name string
	// usage is its lines of `seeder help`, each "seeder NAME ..." with its
	// explanation from column 30 on.
	usage string
	// parse checks the arguments, before Redis is touched, and returns what
	// to do; a mistake is an errUsage error.
	parse func(args []string, getenv func(string) string) (action, error)
	// long is set for a command that runs until it is done or interrupted,
	// not one quick exchange with Redis.
	long bool
	// ops is what it does with Redis: before it sends anything, the Redis
	// user's permissions for these are checked (store.CheckAccess), so that
	// a missing one stops it before its first write, naming every command
	// missing. seed checks its own, which depend on its flags.
	ops []store.Op
}

// An action is what a command does, once its arguments are checked.
type action func(ctx context.Context, st *store.Store, stdout io.Writer) error

// commands are the seeder's subcommands, in the order `seeder help` lists them.
var commands = []command{
	{name: "seed", parse: parseSeed, usage: `
seeder [seed] [URL...]      replace the list with these URLs (default: $SERVERS, else the tutorial's three);
                            URL*N (N from 1 to 100) serves URL N times per round, spread out
seeder seed -probe ORIGIN=PROBE_ORIGIN ... [URL...]
                            the same, and replace the probe addresses with these`},
	{name: "list", parse: noArgs("list", printList), ops: []store.Op{store.OpList}, usage: `
seeder list                 print the list; the next pick is the last line; "down" marks
                            entries the health checks take out of the rotation, "ejected" those
                            a dispatcher took out for failing requests, "registered" those
                            that announce themselves (REGISTER=1), with when each was last heard;
                            then the entries quarantined for their length, if any`},
	{name: "probe", parse: parseProbe, ops: []store.Op{store.OpProbes}, usage: `
seeder probe ORIGIN PROBE_ORIGIN
                            the dispatchers probe ORIGIN (scheme://host:port) at
                            PROBE_ORIGIN/healthz, the address they reach it by
seeder probe [list]         print the probe addresses: ORIGIN PROBE_ORIGIN
seeder probe remove ORIGIN  probe ORIGIN at its own address again`},
	{name: "add", parse: parseAdd, ops: []store.Op{store.OpAdd}, usage: `
seeder add URL              append URL; it becomes the next pick`},
	{name: "remove", parse: parseRemove, ops: []store.Op{store.OpRemove}, usage: `
seeder remove URL           remove every occurrence of URL`},
	{name: "watch", parse: parseWatch, long: true, ops: []store.Op{store.OpWatch}, usage: `
seeder watch [-n N] [-i D]  rotate N times (default: until interrupted), one every D (default 1s),
                            printing each address and the tally of steps per entry, from every dispatcher`},
	{name: "strategy", parse: parseStrategy, usage: `
seeder strategy             print the strategy stored for every dispatcher on the list, if any
seeder strategy NAME [KEY=VALUE...]
                            make every dispatcher on the list run NAME, with these of its settings
                            (the others: each dispatcher's environment); within a second
seeder strategy --clear     remove it: each dispatcher runs its own STRATEGY again`},
	{name: "healthcheck", parse: noArgs("healthcheck", ping), ops: []store.Op{store.OpPing}, usage: `
seeder healthcheck          exit 0 if Redis answers`},
	{name: "check", parse: parseCheck, usage: `
seeder check                read the settings as every command does and print them as NAME=value;
                            a bad one is an error naming it. Sends nothing to Redis`},
}

// usage is the text of `seeder help`, made from the command table.
func usage() string {
	var b strings.Builder
	b.WriteString("usage:\n")
	for _, c := range commands {
		for line := range strings.Lines(strings.TrimPrefix(c.usage, "\n")) {
			b.WriteString("  " + strings.TrimSuffix(line, "\n") + "\n")
		}
	}
	b.WriteString("  seeder help                 print this\n")
	return b.String()
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	name := "seed" // a bare `seeder`, or one followed by URLs
	if len(args) > 0 && !strings.Contains(args[0], ":") {
		name, args = args[0], args[1:]
	}
	if name == "help" || name == "-h" || name == "--help" {
		fmt.Fprint(stdout, usage())
		return nil
	}
	i := slices.IndexFunc(commands, func(c command) bool { return c.name == name })
	if i < 0 {
		return fmt.Errorf("%w: unknown command %q\n%s", errUsage, name, usage())
	}
	cmd := commands[i]
	act, err := cmd.parse(args, getenv)
	if err != nil {
		return err
	}

	// The error returned says what went wrong; go-redis's own retry
	// messages would only repeat it.
	redisconn.LogTo(slog.New(slog.DiscardHandler))
	key, err := store.LoadKey(getenv)
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	tc, err := redisconn.LoadTLS(getenv)
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	rdb, err := redisconn.ConnectTLS(redisconn.RedisURL.Get(getenv), "seeder", tc)
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	defer rdb.Close()
	st := store.NewStore(rdb, key, nil)

	if cmd.ops != nil {
		checkCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := st.CheckAccess(checkCtx, cmd.ops...)
		cancel()
		if err != nil {
			return err
		}
	}
	if !cmd.long {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	return act(ctx, st, stdout)
}

// noArgs is the parse of a command that takes no arguments and does act.
func noArgs(name string, act action) func([]string, func(string) string) (action, error) {
	return func(args []string, _ func(string) string) (action, error) {
		if len(args) > 0 {
			return nil, fmt.Errorf("%w: seeder %s takes no arguments", errUsage, name)
		}
		return act, nil
	}
}

func ping(ctx context.Context, st *store.Store, _ io.Writer) error { return st.Ping(ctx) }

// parseCheck reads `check`. run then loads REDIS_KEY, REDIS_TLS_* and
// REDIS_URL as for every command (redisconn.ConnectTLS parses the URL without
// connecting); SERVERS, which only a bare seed reads, is checked here as seed
// would check it: weights, then each URL. The action prints the settings
// (app.PrintSettings) and sends nothing.
func parseCheck(args []string, getenv func(string) string) (action, error) {
	if len(args) > 0 {
		return nil, fmt.Errorf("%w: seeder check takes no arguments", errUsage)
	}
	for _, item := range splitServers(serversSetting.Get(getenv)) {
		w, err := backend.ParseWeighted(item)
		if err == nil {
			_, err = backend.Parse(w.URL)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", serversSetting.Name, err)
		}
	}
	return func(_ context.Context, _ *store.Store, stdout io.Writer) error {
		return app.PrintSettings(stdout, settings, getenv)
	}, nil
}

// parseSeed reads `seed [-probe ORIGIN=PROBE_ORIGIN]... [URL...]`; without
// URLs, SERVERS, else the tutorial's three. Every URL and origin is
// validated here, before Redis is asked anything, so that a bad one is
// named whether Redis answers or not (the store validates them again).
func parseSeed(args []string, getenv func(string) string) (action, error) {
	var probes probeFlags
	fs := flag.NewFlagSet("seed", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Var(&probes, "probe", "ORIGIN=PROBE_ORIGIN")
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("%w: seeder seed [-probe ORIGIN=PROBE_ORIGIN]... [URL...]: %v", errUsage, err)
	}
	urls := fs.Args()
	if len(urls) == 0 {
		urls = splitServers(serversSetting.Get(getenv))
	}
	if len(urls) == 0 {
		urls = tutorialServers
	}
	var weights *weighted // set when a URL has a weight, URL*N
	if hasWeights(urls) {
		w, err := weigh(urls) // normalizes each URL
		if err != nil {
			return nil, err
		}
		weights, urls = &w, w.list
	} else {
		urls = slices.Clone(urls)
		for i, u := range urls {
			urls[i] = normalize(u)
		}
	}
	for _, u := range urls {
		if _, err := backend.Parse(u); err != nil {
			return nil, err
		}
	}
	ops := []store.Op{store.OpSeed, store.OpList}
	if probes.m != nil {
		ops = append(ops, store.OpSeedProbes)
	}
	return func(ctx context.Context, st *store.Store, stdout io.Writer) error {
		if err := st.CheckAccess(ctx, ops...); err != nil {
			return err
		}
		if err := st.ReplaceWithProbes(ctx, urls, probes.m); err != nil {
			return err
		}
		if weights != nil {
			fmt.Fprintln(stdout, weights.describe(st.Key()))
		} else {
			fmt.Fprintf(stdout, "seeded %q with %s\n", st.Key(), count(len(urls), "URL", "URLs"))
		}
		if probes.m != nil {
			fmt.Fprintf(stdout, "probe addresses in %q: %d\n", st.ProbeKey(), len(probes.m))
		}
		return printList(ctx, st, stdout)
	}, nil
}

func parseAdd(args []string, _ func(string) string) (action, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("%w: seeder add URL (exactly one URL)", errUsage)
	}
	u := args[0]
	if backend.HasWeight(u) {
		// Appending N copies would put them side by side; spreading them
		// means ordering the whole list again.
		return nil, fmt.Errorf("%w: seeder add %q: add takes a URL without a weight; to weigh URLs, seed the whole list: seeder seed URL*N URL ...", errUsage, u)
	}
	u, err := backend.Normalize(u)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, st *store.Store, stdout io.Writer) error {
		n, err := st.Add(ctx, u)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "added %s to %q (%s)\n", u, st.Key(), count(int(n), "entry", "entries"))
		return nil
	}, nil
}

func parseRemove(args []string, _ func(string) string) (action, error) {
	if len(args) != 1 || args[0] == "" {
		return nil, fmt.Errorf("%w: seeder remove URL (exactly one URL)", errUsage)
	}
	typed := args[0]
	u := normalize(typed)
	return func(ctx context.Context, st *store.Store, stdout io.Writer) error {
		n, err := st.Remove(ctx, u)
		if typed != u && (err == nil || errors.Is(err, store.ErrNotInList)) {
			// An entry stored as typed, before the seeder normalized
			// entries, or by hand: the same backend, removed too.
			m, err2 := st.Remove(ctx, typed)
			switch {
			case err2 == nil:
				n, err = n+m, nil
			case !errors.Is(err2, store.ErrNotInList):
				return err2
			}
		}
		if err != nil {
			return err
		}
		left, err := st.Len(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "removed %s from %q (%s; %s left)\n", u, st.Key(),
			count(int(n), "occurrence", "occurrences"), count(int(left), "entry", "entries"))
		return nil
	}, nil
}

func parseWatch(args []string, _ func(string) string) (action, error) {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	n := fs.Int("n", 0, "rotations (0: until interrupted)")
	every := fs.Duration("i", time.Second, "pause between rotations")
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("%w: seeder watch [-n N] [-i DURATION]: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%w: seeder watch [-n N] [-i DURATION]: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if *n < 0 || *every < 0 {
		return nil, fmt.Errorf("%w: seeder watch [-n N] [-i DURATION]: N and DURATION must not be negative", errUsage)
	}
	return func(ctx context.Context, st *store.Store, stdout io.Writer) error {
		return watch(ctx, st, *n, *every, stdout)
	}, nil
}

// parseProbe reads `probe ORIGIN PROBE_ORIGIN`, `probe [list]` or
// `probe remove ORIGIN`.
func parseProbe(args []string, _ func(string) string) (action, error) {
	switch {
	case len(args) == 0 || len(args) == 1 && args[0] == "list":
		return listProbes, nil
	case len(args) == 2 && args[0] == "remove":
		// The probe hash names origins as ParseOrigin writes them, scheme
		// and host in lower case (as Normalize writes entries); an
		// invalid one, written by hand, is removed as typed.
		o, err := backend.ParseOrigin(args[1])
		if err != nil {
			o = args[1]
		}
		return func(ctx context.Context, st *store.Store, w io.Writer) error {
			if err := st.RemoveProbe(ctx, o); err != nil {
				return err
			}
			fmt.Fprintf(w, "%s is probed at its own address again\n", o)
			return nil
		}, nil
	case len(args) == 2 && strings.Contains(args[0], ":"):
		o, err := backend.ParseOrigin(args[0])
		if err != nil {
			return nil, err
		}
		p, err := backend.ParseOrigin(args[1])
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context, st *store.Store, w io.Writer) error {
			if err := st.SetProbe(ctx, o, p); err != nil {
				return err
			}
			fmt.Fprintf(w, "%s is probed at %s%s\n", o, p, health.Path)
			return nil
		}, nil
	}
	return nil, fmt.Errorf("%w: seeder probe ORIGIN PROBE_ORIGIN, seeder probe [list] or seeder probe remove ORIGIN", errUsage)
}

// normalize is u as the list stores it, scheme and host in lower case
// (backend.Normalize), so that two spellings of one backend are one entry;
// a URL that backend.Parse refuses is returned as typed, for seed to
// refuse naming it or for remove to find a hand-made entry.
func normalize(u string) string {
	if n, err := backend.Normalize(u); err == nil {
		return n
	}
	return u
}

// count is "1 entry", "2 entries", "0 entries".
func count(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// splitServers splits SERVERS at commas, trimming spaces and dropping empty items.
func splitServers(s string) []string {
	var urls []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			urls = append(urls, item)
		}
	}
	return urls
}

// printList prints the list, one entry a line, each followed by its marks,
// tab-separated: "down" for the entries the health checks have marked
// down, "ejected for 24.6s more (2nd time)" for those a dispatcher has ejected,
// "registered, heard 0.8s ago" for those a backend registered (REGISTER=1)
// and the reconciler put there ("registration gone: leaving" once it
// stopped). Then the registrations not in the list yet; the entries the
// rotation quarantined for their length, if any (the first few, cut as
// invalid entries are); and, if least-conn or p2c dispatchers count
// requests in flight, each entry's count. An entry that backend.Parse
// refuses, which every pick skips, is printed quoted and cut to its first
// bytes (backend.Truncate), with "\tinvalid: " and the reason, so that a
// hostile megabyte or a control character cannot flood or garble the
// terminal.
func printList(ctx context.Context, st *store.Store, w io.Writer) error {
	entries, err := st.Entries(ctx)
	if err != nil {
		return err
	}
	down, err := st.Down(ctx)
	if err != nil && !errors.Is(err, pick.ErrWrongType) {
		return err
	}
	regs, err := st.Members(ctx)
	if err != nil && !errors.Is(err, pick.ErrWrongType) {
		return err
	}
	now, ejections, err := st.Ejections(ctx)
	if err != nil && !errors.Is(err, pick.ErrWrongType) {
		return err
	}
	members := map[string]store.Member{}
	for _, m := range regs {
		members[m.URL] = m
	}
	for _, e := range entries {
		if _, err := backend.Parse(e); err != nil {
			reason := err.Error()
			if i := strings.LastIndex(reason, `": `); i >= 0 {
				reason = reason[i+3:]
			}
			fmt.Fprintf(w, "%q\tinvalid: %s\n", backend.Truncate(e), reason)
			continue
		}
		marks := []string{e}
		if _, isDown := slices.BinarySearch(down, e); isDown {
			marks = append(marks, "down")
		}
		if x := ejections[e]; !x.Until.IsZero() {
			marks = append(marks, fmt.Sprintf("ejected for %s more (%s time)", seconds(x.Until.Sub(now)), ordinal(x.Times)))
		}
		if m, ok := members[e]; ok {
			marks = append(marks, registration(m))
			delete(members, e)
		}
		fmt.Fprintln(w, strings.Join(marks, "\t"))
	}
	// Registrations the reconciler has not put in the list (yet).
	for _, m := range slices.SortedFunc(maps.Values(members), func(a, b store.Member) int { return strings.Compare(a.URL, b.URL) }) {
		if m.Alive {
			fmt.Fprintf(w, "(not in the list yet)\t%s\t%s\n", backend.Truncate(m.URL), registration(m))
		}
	}
	// The entries the rotation moved out of the list for their length,
	// when there are any.
	const shown = 5
	if n, first, err := st.Quarantine(ctx, shown); err == nil && n > 0 {
		fmt.Fprintf(w, "quarantined (longer than %d bytes, moved out of the list by the rotation; in %q):\n", backend.MaxLen, st.QuarantineKey())
		for _, e := range first {
			fmt.Fprintf(w, "%q\n", backend.Truncate(e))
		}
		if n > shown {
			fmt.Fprintf(w, "... and %d more\n", n-shown)
		}
	}
	// The requests in flight that least-conn and p2c dispatchers count in
	// Redis, when there are any.
	inflight, err := st.InFlight(ctx)
	if err != nil || len(inflight) == 0 {
		return nil
	}
	fmt.Fprintln(w, "in flight (every dispatcher):")
	for _, e := range slices.Sorted(maps.Keys(inflight)) {
		fmt.Fprintf(w, "%s\t%d\n", e, inflight[e])
	}
	return nil
}

// registration says how a registered entry stands: "registered, heard
// 0.8s ago", or "registration gone: leaving" once it stopped.
func registration(m store.Member) string {
	if !m.Alive {
		return "registration gone: leaving the list"
	}
	return fmt.Sprintf("registered, heard %s ago", seconds(m.LastHeard))
}

// seconds writes d as `seeder list` shows times, in seconds with one
// decimal: "0.4s", "24.6s", "150.0s" (time.Duration's own "400ms" and
// "2m30s" would change units from one line to the next).
func seconds(d time.Duration) string {
	return fmt.Sprintf("%.1fs", d.Seconds())
}

// ordinal is "1st", "2nd", "3rd", "4th", ...
func ordinal(n int) string {
	suffix := "th"
	if n%100 < 11 || n%100 > 13 {
		switch n % 10 {
		case 1:
			suffix = "st"
		case 2:
			suffix = "nd"
		case 3:
			suffix = "rd"
		}
	}
	return strconv.Itoa(n) + suffix
}

// listProbes prints the probe addresses, "ORIGIN PROBE_ORIGIN" a line.
func listProbes(ctx context.Context, st *store.Store, w io.Writer) error {
	probes, err := st.Probes(ctx)
	if err != nil {
		return err
	}
	for _, o := range slices.Sorted(maps.Keys(probes)) {
		fmt.Fprintf(w, "%s %s\n", o, probes[o])
	}
	return nil
}

// probeFlags collects -probe ORIGIN=PROBE_ORIGIN flags, both origins
// validated and written as the probe hash holds them
// (backend.ParseOrigin), so that two spellings of one origin are one, and
// one origin given two probe addresses is refused; nil until one is given.
type probeFlags struct{ m map[string]string }

func (p *probeFlags) String() string { return fmt.Sprint(p.m) }

func (p *probeFlags) Set(v string) error {
	o, probe, ok := strings.Cut(v, "=")
	if !ok || o == "" || probe == "" {
		return fmt.Errorf("want ORIGIN=PROBE_ORIGIN, got %q", v)
	}
	o, err := backend.ParseOrigin(o)
	if err != nil {
		return err
	}
	if probe, err = backend.ParseOrigin(probe); err != nil {
		return err
	}
	if had, ok := p.m[o]; ok && had != probe {
		return fmt.Errorf("%s given two probe addresses, %s and %s", o, had, probe)
	}
	if p.m == nil {
		p.m = map[string]string{}
	}
	p.m[o] = probe
	return nil
}

// watch is the tutorial's loop: take a rotation step, print the address
// and the tally of steps per entry that Redis keeps for every dispatcher,
// pause, again. Each step is a real step of the shared rotation.
func watch(ctx context.Context, st *store.Store, n int, every time.Duration, w io.Writer) error {
	rot := store.NewRotation(st)
	for i := 0; n == 0 || i < n; i++ {
		if i > 0 && every > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(every):
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		stepCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		u, err := rot.Next(stepCtx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil // interrupted
			}
			return err
		}
		tallyCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		tally, err := st.Tally(tallyCtx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		fmt.Fprintf(w, "%s  tally:%s\n", u, formatTally(tally))
	}
	return nil
}

// formatTally is " entry=count" for each entry of the tally, sorted.
func formatTally(tally map[string]int64) string {
	var b strings.Builder
	for _, e := range slices.Sorted(maps.Keys(tally)) {
		fmt.Fprintf(&b, " %s=%d", e, tally[e])
	}
	return b.String()
}

// parseStrategy reads `strategy`, `strategy --clear` or `strategy NAME
// [KEY=VALUE...]`. A strategy is checked as a proxying dispatcher would
// (the most any mode runs): its name, and each setting, which must be its
// own and must parse. A dispatcher in MODE=redirect refuses one that needs
// MODE=proxy, and says so in /readyz.
func parseStrategy(args []string, getenv func(string) string) (action, error) {
	switch {
	case len(args) == 0:
		return func(ctx context.Context, st *store.Store, w io.Writer) error {
			if err := st.CheckAccess(ctx, store.OpStrategy); err != nil {
				return err
			}
			return printStrategy(ctx, st, w)
		}, nil
	case args[0] == "--clear" || args[0] == "-clear":
		if len(args) > 1 {
			return nil, fmt.Errorf("%w: seeder strategy --clear takes no other argument", errUsage)
		}
		return func(ctx context.Context, st *store.Store, w io.Writer) error {
			if err := st.CheckAccess(ctx, store.OpSetStrategy); err != nil {
				return err
			}
			had, err := st.ClearStrategy(ctx)
			if err != nil {
				return err
			}
			if !had {
				fmt.Fprintln(w, "no strategy was stored; each dispatcher runs its own STRATEGY")
				return nil
			}
			fmt.Fprintln(w, "cleared: each dispatcher runs its own STRATEGY again, within a second")
			return nil
		}, nil
	}
	name, settings := args[0], map[string]string{}
	for _, kv := range args[1:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%w: %q: want KEY=VALUE, a setting of %s (seeder strategy NAME [KEY=VALUE...])", errUsage, kv, name)
		}
		settings[k] = v
	}
	s, _, err := balance.ConfigureWith(name, settings, func(string) string { return "" }, balance.Proxy)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	stored := store.StoredStrategy{Name: name, By: "seeder", At: time.Now().UTC()}
	if len(settings) > 0 {
		stored.Settings = settings
	}
	return func(ctx context.Context, st *store.Store, w io.Writer) error {
		if err := st.CheckAccess(ctx, store.OpSetStrategy); err != nil {
			return err
		}
		if err := st.SetStrategy(ctx, stored); err != nil {
			return err
		}
		fmt.Fprintf(w, "stored: every dispatcher on %q runs %s within a second", st.Key(), describe(stored))
		if !s.Supports(balance.Redirect) {
			fmt.Fprint(w, " (dispatchers in MODE=redirect refuse it, and say so in /readyz)")
		}
		fmt.Fprintln(w)
		return nil
	}, nil
}

// printStrategy prints the stored strategy: NAME [KEY=VALUE...], then who
// stored it and when; or that none is stored.
func printStrategy(ctx context.Context, st *store.Store, w io.Writer) error {
	stored, raw, ok, err := st.Strategy(ctx)
	switch {
	case errors.Is(err, store.ErrBadStoredStrategy):
		fmt.Fprintf(w, "%q holds something that is not a strategy (%.80q); dispatchers refuse it: seeder strategy --clear removes it\n", st.StrategyKey(), raw)
		return nil
	case err != nil:
		return err
	case !ok:
		fmt.Fprintln(w, "none stored: each dispatcher runs its own STRATEGY")
		return nil
	}
	fmt.Fprintln(w, describe(stored))
	fmt.Fprintf(w, "stored by %s at %s\n", stored.By, stored.At.Format(time.RFC3339))
	return nil
}

// describe writes a stored strategy as the command line that stores it:
// NAME [KEY=VALUE...].
func describe(s store.StoredStrategy) string {
	out := s.Name
	for _, k := range slices.Sorted(maps.Keys(s.Settings)) {
		out += " " + k + "=" + s.Settings[k]
	}
	return out
}
