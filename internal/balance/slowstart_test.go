package balance_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spreadlb/spread/internal/balance"
	"github.com/spreadlb/spread/internal/pool"
)

// slowStartCase is a strategy and its settings.
type slowStartCase struct {
	name string
	set  map[string]string
}

// slowStartCases are every strategy, and every setting that changes how it
// picks, as a dispatcher would configure them.
var slowStartCases = []slowStartCase{
	{"round-robin", nil},
	{"round-robin", map[string]string{"ROTATION": "local"}},
	{"random", nil},
	{"hash", map[string]string{"HASH_KEY": "header:X-User"}},
	{"hash", map[string]string{"HASH_KEY": "header:X-User", "HASH_METHOD": "modulo"}},
	{"hash", map[string]string{"HASH_KEY": "header:X-User", "HASH_BALANCE_FACTOR": "1.25"}},
	{"least-conn", nil},
	{"least-conn", map[string]string{"LEAST_CONN_SCOPE": "local"}},
	{"p2c", nil},
	{"least-time", nil},
}

// share is the newcomer's share of picks by p: 100 picks to warm up, then
// 2000 counted, from one client per key (X-User), with inFlight requests
// in flight at a time, one of them, at random, ending before each next
// pick, as requests of equal length do (with 1, each request is over
// before the next is picked: no load at all).
func share(t *testing.T, p balance.Picker, newcomer string, inFlight int) float64 {
	t.Helper()
	ctx := context.Background()
	var out []balance.Backend
	n := 0
	for i := range 2100 {
		if len(out) == inFlight {
			k := rand.IntN(len(out))
			out[k].Done(balance.Result{Latency: 10 * time.Millisecond, Duration: 10 * time.Millisecond, Status: 200})
			out[k] = out[len(out)-1]
			out = out[:len(out)-1]
		}
		r := get()
		r.Header.Set("X-User", "user-"+strconv.Itoa(i))
		b, err := p.Pick(ctx, r)
		if err != nil {
			t.Fatalf("pick %d: %v", i, err)
		}
		out = append(out, b)
		if i >= 100 && b.URL.String() == newcomer {
			n++
		}
	}
	for _, b := range out {
		b.Done(balance.Result{Status: 200})
	}
	return float64(n) / 2000
}

// Slow start: with two backends of equal weight, one of them new, every
// strategy gives the newcomer the share its slow start Factor f makes of
// its weight, f/(1+f): at the start of SLOW_START its floor
// (SLOW_START_MIN, 10%: 9.1% of the picks), half way through 50% (33.3%),
// and at the end all of it (50%), within ±5 percentage points over 2000
// picks. The ramp's start is when the entry joined, in Redis's clock
// ({servers}:since).
func TestSlowStartShares(t *testing.T) {
	testSlowStartShares(t, 50, slowStartCases)
}

// Slow start at low load: one request at a time, so that every backend
// has 0 requests in flight at every pick, the newcomer still gets its
// Factor's share under the strategies that weigh backends by their load.
func TestSlowStartSharesAtLowLoad(t *testing.T) {
	var cases []slowStartCase
	for _, c := range loadCases {
		cases = append(cases, slowStartCase{c.name, c.set})
	}
	testSlowStartShares(t, 1, cases)
}

// testSlowStartShares is TestSlowStartShares for cases, with inFlight
// requests in flight at a time.
func testSlowStartShares(t *testing.T, inFlight int, cases []slowStartCase) {
	for _, name := range balance.Names() {
		if inFlight > 1 && !slices.ContainsFunc(slowStartCases, func(c slowStartCase) bool { return c.name == name }) {
			t.Errorf("strategy %s is not in slowStartCases: add it, with each setting that changes how it picks", name)
		}
	}
	const window = 1000 * time.Second
	old, newcomer := three[0], three[1]
	for _, stage := range []struct {
		name    string
		elapsed time.Duration
		f       float64
	}{
		{"at the start", 0, 0.1},
		{"half way", window / 2, 0.5},
		{"at the end", window, 1},
	} {
		want := stage.f / (1 + stage.f)
		s, srv := newStore(t)
		for _, c := range cases {
			ctx := context.Background()
			srv.Client.FlushAll(ctx) // each case afresh
			if err := s.Replace(ctx, []string{old, newcomer}); err != nil {
				t.Fatal(err)
			}
			now, err := srv.Client.Time(ctx).Result()
			if err != nil {
				t.Fatal(err)
			}
			srv.Client.HSet(ctx, "{servers}:since", old, "0", newcomer, now.Add(-stage.elapsed).UnixMilli())
			pl := pool.New(s, 0, nil)
			pl.SetSlowStart(window, 0.1)
			if err := pl.Refresh(ctx); err != nil {
				t.Fatal(err)
			}
			label := c.name + describeSettings(c.set)
			got := share(t, newStrategy(t, c.name, c.set, env(s, pl, label)), newcomer, inFlight)
			t.Logf("%s, %s, %d in flight: the newcomer got %.1f%% of the picks (want %.1f%%)", label, stage.name, inFlight, 100*got, 100*want)
			if math.Abs(got-want) > 0.05 {
				t.Errorf("%s, %s (Factor %.1f), %d in flight: the newcomer got %.1f%% of 2000 picks, want %.1f%% ± 5", label, stage.name, stage.f, inFlight, 100*got, 100*want)
			}
		}
	}
}

// describeSettings is " K=V ..." for a test's label.
func describeSettings(set map[string]string) string {
	var b strings.Builder
	for k, v := range set {
		if k != "HASH_KEY" {
			fmt.Fprintf(&b, " %s=%s", k, v)
		}
	}
	return b.String()
}
