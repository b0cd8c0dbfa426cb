package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// The churn scenario: when a backend joins or leaves the list, how many
// users does STRATEGY=hash send to another backend? LAB_CHURN_USERS users
// are each asked for once on a list of three backends, once more on the
// same list, once more after a fourth is added, and once more after the
// first is removed, through one
// dispatcher per hash variant: HASH_METHOD=modulo, rendezvous, and
// rendezvous with bounded loads. The least any method can move is the
// share the changed backend holds: 1/N, N the larger of the two lists.
var churnBatch = batch{name: "churn",
	what:   "hash churn: the users whose backend changes when a backend is added, then one removed",
	files:  [][2]string{{"moved.svg", "the users each hash method moved at each event, beside 1/N"}},
	run:    runChurn,
	charts: redraw(writeChurnCharts)}

// churnVariants are the hash methods compared, in order.
var churnVariants = []variant{
	{"modulo", map[string]string{"STRATEGY": "hash", "HASH_METHOD": "modulo"}},
	{"rendezvous", map[string]string{"STRATEGY": "hash", "HASH_METHOD": "rendezvous"}},
	{"rendezvous-bounded", map[string]string{"STRATEGY": "hash", "HASH_METHOD": "rendezvous", "HASH_BALANCE_FACTOR": "1.25"}},
}

// churnBackends is how many backends churn starts: the list holds the
// first three, then all four, then the last three.
const churnBackends = 4

// churnWorkers is how many requests churn has in flight at once: enough
// that bounded loads has loads to bound.
const churnWorkers = 8

type churnReport struct {
	Scenario churnScenario `json:"scenario"`
	Results  []churnRow    `json:"results"`
}

type churnScenario struct {
	common
	Users       int          `json:"users"`
	Backends    []string     `json:"backends"`
	ListAtStart []string     `json:"list_at_start"`
	Events      []churnEvent `json:"events"`
	HashKey     string       `json:"hash_key"`
	Share       string       `json:"share"`
}

// churnEvent is one change of the list, and the least share of users any
// method must move: the share of the backend that joins or leaves.
type churnEvent struct {
	Name    string  `json:"name"` // the key of each row's moved_fraction
	What    string  `json:"what"`
	Before  int     `json:"backends_before"`
	After   int     `json:"backends_after"`
	Minimum float64 `json:"minimum_moved_fraction"` // 1 / max(before, after)
}

type churnRow struct {
	row
	// MovedFraction is, by event name, the share of the users answered
	// both before and after the event whose backend changed.
	MovedFraction map[string]float64 `json:"moved_fraction"`
}

func churnEvents() []churnEvent {
	return []churnEvent{
		{Name: "unchanged", What: "list unchanged", Before: 3, After: 3, Minimum: 0},
		{Name: "add", What: "backend4 added", Before: 3, After: 4, Minimum: 0.25},
		{Name: "remove", What: "backend1 removed", Before: 4, After: 3, Minimum: 0.25},
	}
}

func runChurn(ctx context.Context, lr labRun) ([]string, error) {
	cfg, stdout := lr.cfg, lr.stdout
	var specs []backendSpec
	for i := range churnBackends {
		// Fast and unbounded: churn is about where users go, not queues.
		specs = append(specs, newBackendSpec(fmt.Sprintf("backend%d", i+1), time.Millisecond, 0, 0))
	}
	st, err := startStack(ctx, lr.dir, lr.bins, specs, false)
	defer st.stop()
	if err != nil {
		return nil, err
	}
	rep := churnReport{Scenario: churnScenario{
		common: newCommon("churn", "When a backend joins or leaves, how many users lose their backend, by hash method?"),
		Users:  cfg.churnUsers, Backends: st.names(), ListAtStart: st.names()[:3], Events: churnEvents(),
		HashKey: hashKey,
		Share:   "fraction of the answers (all three rounds) that came from each backend, by X-Backend"}}
	users := make([]string, cfg.churnUsers)
	for i := range users {
		users[i] = "user-" + strconv.Itoa(i)
	}
	fmt.Fprintf(stdout, "%d users, each asked for once per round; list %v, again, then + backend4, then - backend1\n", len(users), rep.Scenario.ListAtStart)
	for _, v := range churnVariants {
		rep.Scenario.Variants[v.name] = v.settings
		r, err := churnVariant(ctx, st, v.name, v.settings, users)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", v.name, err)
		}
		fmt.Fprintf(stdout, "%-19s moved: unchanged %5.1f%%, add %5.1f%%, remove %5.1f%% (least possible 0, 25%%, 25%%); %d requests, %d errors\n",
			v.name, 100*r.MovedFraction["unchanged"], 100*r.MovedFraction["add"], 100*r.MovedFraction["remove"], r.Requests, r.Errors)
		noteLoad(stdout, rep.Scenario.LoadAverage, v.name)
		rep.Results = append(rep.Results, r)
	}
	if err := writeReportJSON(lr.out, rep); err != nil {
		return nil, err
	}
	return writeChurnCharts(lr.out, rep)
}

// churnVariant runs one hash variant through the three rounds.
func churnVariant(ctx context.Context, st *stack, name string, settings map[string]string, users []string) (churnRow, error) {
	b := st.backends
	if err := st.seederOn(ctx, "servers", "seed", b[0].url, b[1].url, b[2].url); err != nil {
		return churnRow{}, err
	}
	d, err := st.startProxy(ctx, "dispatcher-"+name, append([]string{"HEALTH_INTERVAL=0"}, settingsEnv(settings)...))
	if d != nil {
		defer d.proc.Stop()
	}
	if err != nil {
		return churnRow{}, err
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: churnWorkers}}
	defer client.CloseIdleConnections()
	all := newOutcome()
	before := askEach(ctx, client, d.url, users, &all)
	moved := map[string]float64{}
	for _, ev := range []struct {
		event string
		args  []string
		// seen: the dispatcher reads the new list, as a probe shows
		seen func(user, backend string, was map[string]string) bool
	}{
		// A round on the same list: what moves without any change.
		{"unchanged", nil, nil},
		{"add", []string{"add", b[3].url}, func(_, backend string, _ map[string]string) bool { return backend == b[3].Name }},
		{"remove", []string{"remove", b[0].url}, func(user, backend string, was map[string]string) bool {
			return was[user] == b[0].Name && backend != b[0].Name
		}},
	} {
		if ev.args != nil {
			if err := st.seederOn(ctx, "servers", ev.args...); err != nil {
				return churnRow{}, err
			}
			if err := waitForList(ctx, client, d.url, users, before, ev.seen); err != nil {
				return churnRow{}, fmt.Errorf("after seeder %v: %w", ev.args, err)
			}
		}
		after := askEach(ctx, client, d.url, users, &all)
		moved[ev.event] = round(movedFraction(before, after), 4)
		before = after
	}
	if err := ctx.Err(); err != nil {
		return churnRow{}, err
	}
	sent := map[string]int64{}
	for k, v := range all.answered {
		sent[k] = int64(v)
	}
	return churnRow{row: newRow(name, st.names(), all, sent), MovedFraction: moved}, nil
}

// waitForList asks for users in turn until seen says an answer came from
// the list after the change (up to 5 s): then every later request is
// picked from it.
func waitForList(ctx context.Context, client *http.Client, url string, users []string, was map[string]string,
	seen func(user, backend string, was map[string]string) bool) error {
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		u := users[i%len(users)]
		if backend, _, err := askOne(ctx, client, url, u); err == nil && seen(u, backend, was) {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return fmt.Errorf("the dispatcher did not pick from the new list within 5 s")
}

// askEach asks for every user once, churnWorkers at a time, and returns
// the backend that answered each (users with an error are left out);
// every request is added to o.
func askEach(ctx context.Context, client *http.Client, url string, users []string, o *outcome) map[string]string {
	out := make(map[string]string, len(users))
	var mu sync.Mutex
	var wg sync.WaitGroup
	next := make(chan string)
	for range churnWorkers {
		wg.Go(func() {
			for u := range next {
				backend, took, err := askOne(ctx, client, url, u)
				mu.Lock()
				o.requests++
				o.latencies = append(o.latencies, took)
				if err != nil {
					o.errors++
					o.errorKinds[err.Error()]++
				} else {
					out[u] = backend
					o.answered[backend]++
				}
				mu.Unlock()
			}
		})
	}
	for _, u := range users {
		if ctx.Err() != nil {
			break
		}
		next <- u
	}
	close(next)
	wg.Wait()
	return out
}

// askOne sends GET / as user and returns the X-Backend of a 200 answer.
func askOne(ctx context.Context, client *http.Client, url, user string) (string, time.Duration, error) {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", 0, err
	}
	req.Header.Set(userHeader, user)
	resp, err := client.Do(req)
	if err != nil {
		return "", time.Since(start), err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	if resp.StatusCode != http.StatusOK {
		return "", took, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return resp.Header.Get("X-Backend"), took, nil
}

// movedFraction is the share of the users answered in both rounds whose
// backend differs; 0 if none was answered in both.
func movedFraction(before, after map[string]string) float64 {
	var both, moved int
	for u, b := range before {
		a, ok := after[u]
		if !ok {
			continue
		}
		both++
		if a != b {
			moved++
		}
	}
	if both == 0 {
		return 0
	}
	return float64(moved) / float64(both)
}

// writeChurnCharts draws moved.svg: for each event, the share of users
// each hash method moved, beside the least possible, 1/N.
func writeChurnCharts(dir string, r churnReport) ([]string, error) {
	var groups []string
	least := barGroup{name: "least possible: 1/N\n(0 if unchanged)", color: guideColor}
	for _, ev := range r.Scenario.Events {
		groups = append(groups, fmt.Sprintf("%s\n(%d → %d backends)", ev.What, ev.Before, ev.After))
		least.values = append(least.values, 100*ev.Minimum)
	}
	bars := []barGroup{least}
	for _, res := range r.Results {
		b := barGroup{name: churnLegend(r.Scenario.Variants[res.Variant])}
		for _, ev := range r.Scenario.Events {
			b.values = append(b.values, 100*res.MovedFraction[ev.Name])
		}
		bars = append(bars, b)
	}
	p := newFreePlot("Users whose backend changed",
		fmt.Sprintf("STRATEGY=hash on %s, %d users", r.Scenario.HashKey, r.Scenario.Users),
		"", "share of users moved")
	p.Y.Min, p.Y.Max = 0, 100
	p.Y.Tick.Marker = percentTicks{}
	p, l, err := groupedBars(p, groups, bars, pct)
	path, err := saveChart(dir, "moved.svg", p, l, err)
	if err != nil {
		return nil, err
	}
	return []string{path}, nil
}

// churnLegend names a hash variant by its knobs: "HASH_METHOD=modulo".
func churnLegend(settings map[string]string) string {
	s := "HASH_METHOD=" + settings["HASH_METHOD"]
	if f := settings["HASH_BALANCE_FACTOR"]; f != "" {
		s += ",\nHASH_BALANCE_FACTOR=" + f
	}
	return s
}
