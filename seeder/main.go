// Command seeder fills and manages the Redis list of backend URLs that the
// dispatcher rotates.
//
// Usage:
//
//	seeder [seed] [URL...]        replace the list with these URLs, in one step;
//	                              URL*N (1 ≤ N ≤ 100) gives a URL N turns per round
//	seeder seed -probe ORIGIN=PROBE_ORIGIN ... URL...
//	                              the same, and the probe addresses (below)
//	seeder list                   print the list (the next pick is the last line),
//	                              marking entries the health checks took out
//	seeder probe ORIGIN PROBE_ORIGIN
//	                              probe ORIGIN's health at PROBE_ORIGIN instead
//	seeder probe [list]           print the probe addresses
//	seeder probe remove ORIGIN    probe ORIGIN at its own address again
//	seeder add URL                append URL (it becomes the next pick)
//	seeder remove URL             remove every occurrence of URL
//	seeder watch [-n N] [-i D]    rotate N times (default: until interrupted)
//	                              and print each address, like the tutorial's loop
//	seeder healthcheck            exit 0 if Redis answers
//
// Every URL is validated before anything is written: one bad URL is named on
// stderr, the exit status is 2 and Redis is left untouched.
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
	"strings"
	"syscall"
	"time"

	"github.com/spreadlb/spread/internal/app"
	"github.com/spreadlb/spread/internal/backend"
	"github.com/spreadlb/spread/internal/health"
	"github.com/spreadlb/spread/internal/store"
)

// The seeder's settings; the README's configuration table lists the same.
var (
	serversSetting = app.Setting{Name: "SERVERS", Default: "",
		Usage: "comma-separated URLs for a bare `seeder seed`; empty means the tutorial's three"}
	settings = []app.Setting{store.RedisURL, store.RedisKey, serversSetting}
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

const usage = `usage:
  seeder [seed] [URL...]      replace the list with these URLs (default: $SERVERS, else the tutorial's three);
                              URL*N (N from 1 to 100) serves URL N times per round, spread out
  seeder seed -probe ORIGIN=PROBE_ORIGIN ... [URL...]
                              the same, and replace the probe addresses with these
  seeder list                 print the list; the next pick is the last line; "down" marks
                              entries the health checks take out of the rotation
  seeder probe ORIGIN PROBE_ORIGIN
                              the dispatchers probe ORIGIN (scheme://host:port) at
                              PROBE_ORIGIN/healthz, the address they reach it by
  seeder probe [list]         print the probe addresses: ORIGIN PROBE_ORIGIN
  seeder probe remove ORIGIN  probe ORIGIN at its own address again
  seeder add URL              append URL; it becomes the next pick
  seeder remove URL           remove every occurrence of URL
  seeder watch [-n N] [-i D]  rotate N times (default: until interrupted), printing each address
                              and the tally of steps per entry, from every dispatcher
  seeder healthcheck          exit 0 if Redis answers
`

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

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	cmd := "seed"
	if len(args) > 0 && !strings.Contains(args[0], ":") {
		cmd, args = args[0], args[1:]
	}
	if cmd == "help" || cmd == "-h" || cmd == "--help" {
		fmt.Fprint(stdout, usage)
		return nil
	}

	// Check what the user typed before touching Redis. The URLs themselves
	// are validated by the store, before it sends any command.
	var urls []string
	var probes probeFlags
	var weights *weighted // set when a URL has a weight, URL*N
	var watchN int
	var watchEvery time.Duration
	switch cmd {
	case "seed":
		fs := flag.NewFlagSet("seed", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		fs.Var(&probes, "probe", "ORIGIN=PROBE_ORIGIN")
		if err := fs.Parse(args); err != nil {
			return fmt.Errorf("%w: seeder seed [-probe ORIGIN=PROBE_ORIGIN]... [URL...]: %v", errUsage, err)
		}
		urls = fs.Args()
		if len(urls) == 0 {
			urls = splitServers(serversSetting.Get(getenv))
		}
		if len(urls) == 0 {
			urls = tutorialServers
		}
		if hasWeights(urls) {
			w, err := weigh(urls)
			if err != nil {
				return err
			}
			weights, urls = &w, w.list
		}
	case "add":
		if len(args) != 1 {
			return fmt.Errorf("%w: seeder add URL (exactly one URL)", errUsage)
		}
		if backend.HasWeight(args[0]) {
			// Appending N copies would put them side by side; spreading
			// them means ordering the whole list again.
			return fmt.Errorf("%w: seeder add %q: add takes a URL without a weight; to weigh URLs, seed the whole list: seeder seed URL*N URL ...", errUsage, args[0])
		}
	case "remove":
		if len(args) != 1 || args[0] == "" {
			return fmt.Errorf("%w: seeder remove URL (exactly one URL)", errUsage)
		}
	case "watch":
		fs := flag.NewFlagSet("watch", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		fs.IntVar(&watchN, "n", 0, "rotations (0: until interrupted)")
		fs.DurationVar(&watchEvery, "i", time.Second, "pause between rotations")
		if err := fs.Parse(args); err != nil {
			return fmt.Errorf("%w: seeder watch [-n N] [-i DURATION]: %v", errUsage, err)
		}
		if fs.NArg() > 0 || watchN < 0 || watchEvery < 0 {
			return fmt.Errorf("%w: seeder watch [-n N] [-i DURATION]: N and DURATION must not be negative", errUsage)
		}
	case "probe":
		switch {
		case len(args) == 0 || len(args) == 1 && args[0] == "list":
			args = []string{"list"}
		case len(args) == 2 && args[0] == "remove":
		case len(args) == 2 && strings.Contains(args[0], ":"):
		default:
			return fmt.Errorf("%w: seeder probe ORIGIN PROBE_ORIGIN, seeder probe [list] or seeder probe remove ORIGIN", errUsage)
		}
	case "list", "healthcheck":
		if len(args) > 0 {
			return fmt.Errorf("%w: seeder %s takes no arguments", errUsage, cmd)
		}
	default:
		return fmt.Errorf("%w: unknown command %q\n%s", errUsage, cmd, usage)
	}

	// The error returned says what went wrong; go-redis's own retry
	// messages would only repeat it.
	store.LogTo(slog.New(slog.DiscardHandler))
	rdb, err := store.Connect(store.RedisURL.Get(getenv), "seeder")
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	defer rdb.Close()
	st := store.NewStore(rdb, store.RedisKey.Get(getenv), nil)

	// Each command but watch is one quick exchange with Redis.
	opCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	switch cmd {
	case "seed":
		if err := st.ReplaceWithProbes(opCtx, urls, probes.m); err != nil {
			return err
		}
		if weights != nil {
			fmt.Fprintln(stdout, weights.describe(st.Key()))
		} else {
			fmt.Fprintf(stdout, "seeded %q with %d URLs\n", st.Key(), len(urls))
		}
		if probes.m != nil {
			fmt.Fprintf(stdout, "probe addresses in %q: %d\n", st.ProbeKey(), len(probes.m))
		}
		return printList(opCtx, st, stdout)
	case "probe":
		return probe(opCtx, st, args, stdout)
	case "list":
		return printList(opCtx, st, stdout)
	case "add":
		n, err := st.Add(opCtx, args[0])
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "added %s to %q (%d entries)\n", args[0], st.Key(), n)
		return nil
	case "remove":
		n, err := st.Remove(opCtx, args[0])
		if err != nil {
			return err
		}
		left, err := st.Len(opCtx)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "removed %s from %q (%d occurrences; %d entries left)\n", args[0], st.Key(), n, left)
		return nil
	case "healthcheck":
		return st.Ping(opCtx)
	default: // watch
		return watch(ctx, st, watchN, watchEvery, stdout)
	}
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

// printList prints the list, one entry a line, and "\tdown" after the
// entries the health checks have marked down; then, if least-conn or p2c
// dispatchers count requests in flight, each entry's count. An entry that
// backend.Parse refuses, which every pick skips, is printed quoted and cut
// to its first bytes (backend.Truncate), with "\tinvalid: " and the reason,
// so that a hostile megabyte or a control character cannot flood or garble
// the terminal.
func printList(ctx context.Context, st *store.Store, w io.Writer) error {
	entries, err := st.Entries(ctx)
	if err != nil {
		return err
	}
	down, err := st.Down(ctx)
	if err != nil && !errors.Is(err, store.ErrWrongType) {
		return err
	}
	for _, e := range entries {
		if _, err := backend.Parse(e); err != nil {
			reason := err.Error()
			if i := strings.LastIndex(reason, `": `); i >= 0 {
				reason = reason[i+3:]
			}
			fmt.Fprintf(w, "%q\tinvalid: %s\n", backend.Truncate(e), reason)
		} else if _, isDown := slices.BinarySearch(down, e); isDown {
			fmt.Fprintf(w, "%s\tdown\n", e)
		} else {
			fmt.Fprintln(w, e)
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

// probe sets, lists or removes probe addresses; args is what follows
// "probe", checked by run.
func probe(ctx context.Context, st *store.Store, args []string, w io.Writer) error {
	switch args[0] {
	case "list":
		probes, err := st.Probes(ctx)
		if err != nil {
			return err
		}
		for _, o := range slices.Sorted(maps.Keys(probes)) {
			fmt.Fprintf(w, "%s %s\n", o, probes[o])
		}
		return nil
	case "remove":
		if err := st.RemoveProbe(ctx, args[1]); err != nil {
			return err
		}
		fmt.Fprintf(w, "%s is probed at its own address again\n", args[1])
		return nil
	}
	if err := st.SetProbe(ctx, args[0], args[1]); err != nil {
		return err
	}
	o, _ := backend.ParseOrigin(args[0])
	p, _ := backend.ParseOrigin(args[1])
	fmt.Fprintf(w, "%s is probed at %s%s\n", o, p, health.Path)
	return nil
}

// probeFlags collects -probe ORIGIN=PROBE_ORIGIN flags; nil until one is
// given.
type probeFlags struct{ m map[string]string }

func (p *probeFlags) String() string { return fmt.Sprint(p.m) }

func (p *probeFlags) Set(v string) error {
	o, probe, ok := strings.Cut(v, "=")
	if !ok || o == "" || probe == "" {
		return fmt.Errorf("want ORIGIN=PROBE_ORIGIN, got %q", v)
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
		u, err := st.Next(stepCtx)
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
