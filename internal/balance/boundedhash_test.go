package balance_test

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/spreadlb/spread/internal/balance"
)

// Bounded loads, against a real Redis: with HASH_BALANCE_FACTOR=1.25 and
// one key carrying 90% of the requests, no backend ever holds more than
// ceil(1.25 × the average) of the requests in flight, the hot key's own
// backend is filled to its bound first; and with the pool idle, the key is
// back on its own backend, the one plain hash gives it.
func TestBoundedHashKeepsEveryBackendUnderTheBound(t *testing.T) {
	t.Parallel()
	s, _ := seededStore(t)
	pl := readPool(t, s)
	set := map[string]string{"HASH_KEY": "header:X-User", "HASH_BALANCE_FACTOR": "1.25"}
	p := newStrategy(t, "hash", set, env(s, pl, "d1"))
	plain := newStrategy(t, "hash", map[string]string{"HASH_KEY": "header:X-User"}, env(s, pl, "d2"))

	ask := func(p balance.Picker, user string) balance.Backend {
		t.Helper()
		r := get()
		r.Header.Set("X-User", user)
		b, err := p.Pick(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	home := ask(plain, "hot").URL.String()

	var held []balance.Backend
	load := map[string]int{}
	hot := map[string]int{}
	for i := range 200 {
		user := "hot"
		if i%10 == 9 {
			user = fmt.Sprint("user-", i)
		}
		b := ask(p, user)
		held = append(held, b)
		load[b.URL.String()]++
		if user == "hot" {
			hot[b.URL.String()]++
		}
		bound := int(math.Ceil(1.25 * float64(len(held)) / 3))
		for u, n := range load {
			if n > bound {
				t.Fatalf("after %d requests held: %s holds %d, over the bound ceil(1.25 × %d / 3) = %d (loads %v)", len(held), u, n, len(held), bound, load)
			}
		}
	}
	if hot[home] < 60 {
		t.Errorf("the hot key's own backend %s took %d of its 180 requests, want it filled to its bound first (%v)", home, hot[home], hot)
	}
	t.Logf("200 held: loads %v; the hot key's %v", load, hot)
	for _, b := range held {
		b.Done(balance.Result{Status: 200})
	}
	for range 10 {
		b := ask(p, "hot")
		if got := b.URL.String(); got != home {
			t.Errorf("idle pool: the hot key went to %s, want its own %s", got, home)
		}
		b.Done(balance.Result{Status: 200})
	}
}

// HASH_BALANCE_FACTOR is refused in redirect mode, and when it is not a
// number of 1 or more.
func TestBalanceFactorSettings(t *testing.T) {
	for _, c := range []struct {
		v    string
		m    balance.Mode
		says string
	}{
		{"1.25", balance.Redirect, "needs MODE=proxy"},
		{"0.9", balance.Proxy, "want a number of 1 or more"},
		{"lots", balance.Proxy, "HASH_BALANCE_FACTOR"},
		{"NaN", balance.Proxy, "HASH_BALANCE_FACTOR"},
	} {
		_, _, err := balance.Configure("hash", settings(map[string]string{"HASH_BALANCE_FACTOR": c.v}), c.m)
		if err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("HASH_BALANCE_FACTOR=%s in %s: got %v, want an error saying %q", c.v, c.m, err, c.says)
		}
	}
	for _, v := range []string{"", "1", "1.25", "2"} {
		if _, plan, err := balance.Configure("hash", settings(map[string]string{"HASH_BALANCE_FACTOR": v}), balance.Proxy); err != nil || (v != "") != (len(plan.Needs) == 1) {
			t.Errorf("HASH_BALANCE_FACTOR=%q: got (%v, %v), want it accepted, needing the in-flight counts when set", v, plan.Needs, err)
		}
	}
}
