package balance_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/spreadlb/spread/internal/backend"
	"github.com/spreadlb/spread/internal/pick"

	"github.com/spreadlb/spread/internal/balance"
	"github.com/spreadlb/spread/internal/pool"
	"github.com/spreadlb/spread/internal/redistest"
)

// commands is how many commands the server has processed so far.
func commands(t *testing.T, srv *redistest.Server) int64 {
	t.Helper()
	var n int64
	info := srv.Client.Info(context.Background(), "stats").Val()
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "total_commands_processed:"); ok {
			fmt.Sscan(v, &n)
		}
	}
	return n
}

func TestRegistry(t *testing.T) {
	if got, want := balance.Names(), []string{"round-robin", "hash", "least-conn", "least-time", "p2c", "random"}; !slices.Equal(got, want) {
		t.Errorf("Names: got %q, want %q", got, want)
	}
	if _, err := balance.Lookup("fastest"); !errors.Is(err, balance.ErrUnknownStrategy) || !strings.Contains(err.Error(), "round-robin, hash") {
		t.Errorf("Lookup(fastest): got %v, want ErrUnknownStrategy listing the names", err)
	}
	for name, proxyOnly := range map[string]bool{"round-robin": false, "random": false, "hash": false, "least-conn": true, "least-time": true, "p2c": true} {
		s, _ := balance.Lookup(name)
		if !s.Supports(balance.Proxy) || s.Supports(balance.Redirect) == proxyOnly {
			t.Errorf("%s: supports redirect %v, proxy %v; want proxy, and redirect %v", name, s.Supports(balance.Redirect), s.Supports(balance.Proxy), !proxyOnly)
		}
	}
}

// random picks uniformly, weights included, and asks Redis nothing.
func TestRandomIsUniformAndLocal(t *testing.T) {
	s, srv := newStore(t)
	list := []string{three[0], three[0], three[1], three[2]} // three[0] has weight 2
	if err := s.Replace(context.Background(), list); err != nil {
		t.Fatal(err)
	}
	p := newStrategy(t, "random", nil, env(s, readPool(t, s), "d1"))
	before := commands(t, srv)
	const n = 8000
	counts := concurrentPicks(t, p, 8, n/8)
	if got := commands(t, srv) - before; got != 1 { // the INFO that counts
		t.Errorf("%d random picks ran %d Redis commands, want none", n, got-1)
	}
	// Expected 4000, 2000, 2000; the bounds are more than 6 standard
	// deviations wide (sd ≈ 45 and 39), so a fair pick fails them about
	// once in a billion runs, and a biased one fails them at once.
	for b, want := range map[string]int{three[0]: 4000, three[1]: 2000, three[2]: 2000} {
		if got := counts[b]; got < want-300 || got > want+300 {
			t.Errorf("%s: got %d of %d picks, want %d ± 300 (all: %v)", b, got, n, want, counts)
		}
	}
}

// hashPicks sends one request per key, with the key in X-User, and returns
// the backend each key went to.
func hashPicks(t *testing.T, p balance.Picker, keys int) map[string]string {
	t.Helper()
	got := map[string]string{}
	for i := range keys {
		r := get()
		r.Header.Set("X-User", fmt.Sprintf("user-%d", i))
		b, err := p.Pick(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		got[r.Header.Get("X-User")] = b.URL.String()
	}
	return got
}

func perBackend(m map[string]string) map[string]int {
	n := map[string]int{}
	for _, b := range m {
		n[b]++
	}
	return n
}

// hash sends a key to the same backend every time, spreads keys evenly,
// and when a backend leaves, only its keys move.
func TestHashIsStickyEvenAndConsistent(t *testing.T) {
	ctx := context.Background()
	s, srv := seededStore(t)
	pl := readPool(t, s)
	p := newStrategy(t, "hash", map[string]string{"HASH_KEY": "header:X-User"}, env(s, pl, "d1"))
	before := commands(t, srv)
	first := hashPicks(t, p, 3000)
	if again := hashPicks(t, p, 3000); !equalMaps(first, again) {
		t.Error("the same keys went to other backends the second time")
	}
	if got := commands(t, srv) - before; got != 1 {
		t.Errorf("6000 hash picks ran %d Redis commands, want none", got-1)
	}
	for b, n := range perBackend(first) {
		if n < 850 || n > 1150 {
			t.Errorf("%s got %d of 3000 keys, want 1000 ± 15%% (all: %v)", b, n, perBackend(first))
		}
	}

	// three[1] goes down: its keys move, no other key does.
	srv.Client.SAdd(ctx, s.DownKey(), three[1])
	if err := pl.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	after := hashPicks(t, p, 3000)
	moved, others := 0, 0
	for k, b := range first {
		if b == three[1] {
			if after[k] == three[1] {
				t.Fatalf("key %s still goes to the down backend", k)
			}
			continue
		}
		others++
		if after[k] != b {
			moved++
		}
	}
	if moved*100 > others*3 {
		t.Errorf("removing one backend moved %d of the other backends' %d keys, want at most 3%%", moved, others)
	}
	t.Logf("removing one backend moved %d of the other backends' %d keys", moved, others)

	// A fourth backend takes about a quarter, all from the others.
	srv.Client.Del(ctx, s.DownKey())
	srv.Client.RPush(ctx, "servers", "http://127.0.0.1:5003")
	if err := pl.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	four := hashPicks(t, p, 3000)
	for k, b := range four {
		if b != first[k] && b != "http://127.0.0.1:5003" {
			t.Fatalf("key %s moved from %s to %s, not to the new backend", k, first[k], b)
		}
	}
	if n := perBackend(four)["http://127.0.0.1:5003"]; n < 600 || n > 900 {
		t.Errorf("a fourth backend took %d of 3000 keys, want about 750", n)
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// hash honours weights, keys its kinds as HASH_KEY says, and a request
// without the key takes a round-robin step, counted.
func TestHashKeysWeightsAndFallback(t *testing.T) {
	s, _ := newStore(t)
	if err := s.Replace(context.Background(), []string{three[0], three[0], three[0], three[1], three[2]}); err != nil {
		t.Fatal(err)
	}
	pl := readPool(t, s)
	h := balance.NewHash(pl, mustKey(t, "header:X-User"))
	if n := perBackend(hashPicks(t, h, 3000))[three[0]]; n < 1600 || n > 2000 {
		t.Errorf("weight 3 of 5: got %d of 3000 keys, want about 1800", n)
	}
	if got := picks(t, h, 5); !slices.Equal(got, []string{three[2], three[1], three[0], three[0], three[0]}) {
		t.Errorf("picks without the key: got %q, want round-robin steps", got)
	}
	if h.Fallbacks() != 5 {
		t.Errorf("Fallbacks: got %d, want 5", h.Fallbacks())
	}

	for _, tc := range []struct {
		key  string
		set  func(r *http.Request, v string)
		none func(r *http.Request)
	}{
		{"ip", func(r *http.Request, v string) { r.RemoteAddr = v + ":1234" }, func(r *http.Request) { r.RemoteAddr = "" }},
		{"cookie:sid", func(r *http.Request, v string) { r.AddCookie(&http.Cookie{Name: "sid", Value: v}) }, func(*http.Request) {}},
		{"query:u", func(r *http.Request, v string) { r.URL.RawQuery = "u=" + v }, func(*http.Request) {}},
	} {
		h := balance.NewHash(pl, mustKey(t, tc.key))
		seen := map[string]bool{}
		for i := range 200 {
			v := fmt.Sprintf("10.0.%d.%d", i/250, i%250)
			a, b := get(), get()
			tc.set(a, v)
			tc.set(b, v)
			pa, _ := h.Pick(context.Background(), a)
			pb, _ := h.Pick(context.Background(), b)
			if pa.URL != pb.URL {
				t.Errorf("%s=%s: two requests went to %s and %s", tc.key, v, pa.URL, pb.URL)
			}
			seen[pa.URL.String()] = true
		}
		if len(seen) != 3 || h.Fallbacks() != 0 {
			t.Errorf("%s: 200 keys reached %d backends with %d fallbacks, want 3 and 0", tc.key, len(seen), h.Fallbacks())
		}
		r := get()
		tc.none(r)
		h.Pick(context.Background(), r)
		if h.Fallbacks() != 1 {
			t.Errorf("%s: a request without the key: got %d fallbacks, want 1", tc.key, h.Fallbacks())
		}
	}
}

func mustKey(t *testing.T, s string) balance.HashKey {
	t.Helper()
	k, err := balance.ParseHashKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestParseHashKey(t *testing.T) {
	for _, good := range []string{"ip", "", "header:X-User", "cookie:session_id", "query:u"} {
		if _, err := balance.ParseHashKey(good); err != nil {
			t.Errorf("ParseHashKey(%q): got %v, want it accepted", good, err)
		}
	}
	for _, bad := range []string{"ip:x", "header", "header:", "header:X User", "cookie:a=b", "body:x", "IP", "query:ü"} {
		if _, err := balance.ParseHashKey(bad); !errors.Is(err, balance.ErrBadHashKey) {
			t.Errorf("ParseHashKey(%q): got %v, want ErrBadHashKey", bad, err)
		}
	}
}

// least-conn through the registry: ties rotate, a held request steers the
// next pick, and Done releases it.
func TestLeastConnPicksTheLeastLoaded(t *testing.T) {
	s, _ := seededStore(t)
	pl := readPool(t, s)
	p := newStrategy(t, "least-conn", nil, env(s, pl, "d1"))
	var order []string
	for range 6 {
		b, err := p.Pick(context.Background(), get())
		if err != nil {
			t.Fatal(err)
		}
		order = append(order, b.URL.String())
		b.Done(balance.Result{})
	}
	if want := []string{three[2], three[1], three[0], three[2], three[1], three[0]}; !slices.Equal(order, want) {
		t.Errorf("idle picks: got %q, want the rotation order %q", order, want)
	}
	a, _ := p.Pick(context.Background(), get())
	b, _ := p.Pick(context.Background(), get())
	c, _ := p.Pick(context.Background(), get())
	if a.URL == b.URL || b.URL == c.URL || a.URL == c.URL {
		t.Errorf("three held picks: got %s %s %s, want three backends", a.URL, b.URL, c.URL)
	}
	b.Done(balance.Result{})
	if d, _ := p.Pick(context.Background(), get()); d.URL != b.URL {
		t.Errorf("after one release: got %s, want the released %s", d.URL, b.URL)
	}
}

// p2c never picks the busier of its two choices: with one backend far
// busier than the others (counted by another dispatcher), it gets nothing.
func TestP2CAvoidsTheBusyBackend(t *testing.T) {
	ctx := context.Background()
	s, _ := seededStore(t)
	pl := readPool(t, s)
	busy := s.NewInflight("busy", true)
	for range 10 {
		if _, err := busy.Pick(ctx, []backend.Weighted{{URL: three[0], Weight: 1}}); err != nil {
			t.Fatal(err)
		}
	}
	in := s.NewInflight("d2", false)
	p := balance.NewP2C(pl, in)
	before := in.Calls()
	counts := map[string]int{}
	if _, err := in.Sync(ctx); err != nil { // what Run does every P2CRefresh
		t.Fatal(err)
	}
	for range 300 {
		b, err := p.Pick(ctx, get())
		if err != nil {
			t.Fatal(err)
		}
		counts[b.URL.String()]++
		b.Done(balance.Result{})
	}
	if counts[three[0]] != 0 || counts[three[1]]+counts[three[2]] != 300 {
		t.Errorf("picks with %s 10 deep elsewhere: got %v, want none there", three[0], counts)
	}
	if calls := in.Calls() - before; calls != 1 {
		t.Errorf("300 p2c picks made %d Redis calls, want only the one Sync", calls)
	}
	// Its own requests in flight count at once, without Redis: with one
	// held on another backend, of the pairs {busy, held}, {busy, idle} and
	// {held, idle} the held one wins only the first, the idle one the
	// other two.
	held, _ := p.Pick(ctx, get())
	idle := three[1]
	if held.URL.String() == idle {
		idle = three[2]
	}
	counts = map[string]int{}
	for range 300 {
		b, _ := p.Pick(ctx, get())
		counts[b.URL.String()]++
		b.Done(balance.Result{})
	}
	if counts[three[0]] != 0 || counts[idle] <= counts[held.URL.String()] {
		t.Errorf("picks with %s busy and one request held on %s: got %v, want most on %s and none on %s",
			three[0], held.URL, counts, idle, three[0])
	}
}

// Every strategy picks only eligible entries: none goes to a down or
// invalid entry.
func TestStrategiesPickOnlyEligibleEntries(t *testing.T) {
	ctx := context.Background()
	s, srv := newStore(t)
	srv.Client.RPush(ctx, "servers", three[0], "javascript:alert(1)", three[1], three[2])
	srv.Client.SAdd(ctx, s.DownKey(), three[1])
	pl := pool.New(s, 0, nil)
	if err := pl.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	for _, name := range balance.Names() {
		p := newStrategy(t, name, nil, env(s, pl, name))
		for i := range 30 {
			r := get()
			r.Header.Set("X-User", fmt.Sprint(i))
			b, err := p.Pick(ctx, r)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if u := b.URL.String(); u != three[0] && u != three[2] {
				t.Errorf("%s picked %q, want only %q or %q", name, u, three[0], three[2])
			}
			b.Done(balance.Result{})
		}
	}
	srv.Client.SAdd(ctx, s.DownKey(), three[0], three[2])
	if err := pl.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	for _, name := range balance.Names() {
		p := newStrategy(t, name, nil, env(s, pl, name))
		if _, err := p.Pick(ctx, get()); !errors.Is(err, pick.ErrAllDown) {
			t.Errorf("%s with every entry down: got %v, want ErrAllDown", name, err)
		}
	}
}
