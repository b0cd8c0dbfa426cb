package balance_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/spreadlb/spread/internal/balance"
)

// HASH_METHOD=modulo, the teaching foil: the same key goes to the same
// backend while the pool is unchanged, but one backend of three going
// down moves most keys, where rendezvous moves only the ones it held.
func TestModuloHashMovesMostKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, srv := seededStore(t)
	pl := readPool(t, s)
	p := newStrategy(t, "hash", map[string]string{"HASH_KEY": "header:X-User", "HASH_METHOD": "modulo"}, env(s, pl, "d1"))
	first := hashPicks(t, p, 3000)
	if again := hashPicks(t, p, 3000); !equalMaps(first, again) {
		t.Error("modulo: the same keys went to other backends the second time")
	}
	for b, n := range perBackend(first) {
		if n < 850 || n > 1150 {
			t.Errorf("modulo: %s got %d of 3000 keys, want 1000 ± 15%%", b, n)
		}
	}
	srv.Client.SAdd(ctx, s.DownKey(), three[1])
	if err := pl.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	after := hashPicks(t, p, 3000)
	moved := 0
	for k, b := range first {
		if after[k] != b {
			moved++
		}
	}
	// The least any method can move is the third that the down backend
	// held; modulo moves about two thirds.
	if moved*2 <= 3000 {
		t.Errorf("modulo: one backend of three going down moved %d of 3000 keys, want more than half", moved)
	}
	t.Logf("modulo: one backend of three going down moved %d of 3000 keys", moved)
	if _, _, err := balance.Configure("hash", settings(map[string]string{"HASH_METHOD": "modulo", "HASH_BALANCE_FACTOR": "1.25"}), balance.Proxy); err == nil {
		t.Error("HASH_METHOD=modulo with HASH_BALANCE_FACTOR: accepted, want refused")
	}
	if _, _, err := balance.Configure("hash", settings(map[string]string{"HASH_METHOD": "ring"}), balance.Proxy); err == nil {
		t.Error("HASH_METHOD=ring: accepted, want refused")
	}
}

// LEAST_CONN_SCOPE=local counts this dispatcher's requests alone, in this
// process: two held send the next to the third backend, ties rotate, and
// no command reaches Redis.
func TestLocalLeastConn(t *testing.T) {
	t.Parallel()
	s, srv := seededStore(t)
	pl := readPool(t, s)
	p := newStrategy(t, "least-conn", map[string]string{"LEAST_CONN_SCOPE": "local"}, env(s, pl, "d1"))
	before := commands(t, srv)
	var got []string
	for range 6 {
		b, err := p.Pick(context.Background(), get())
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, b.URL.String())
		b.Done(balance.Result{Status: http.StatusOK})
	}
	if got[0] == got[1] || got[1] == got[2] || got[0] == got[2] || got[3] != got[0] {
		t.Errorf("idle picks: got %q, want the three backends in turn", got)
	}
	a, _ := p.Pick(context.Background(), get())
	b, _ := p.Pick(context.Background(), get())
	c, _ := p.Pick(context.Background(), get())
	if c.URL == a.URL || c.URL == b.URL || a.URL == b.URL {
		t.Errorf("with two held: got %s, %s, %s; want three different backends", a.URL, b.URL, c.URL)
	}
	if n := commands(t, srv) - before; n != 1 {
		t.Errorf("local least-conn ran %d Redis commands, want none", n-1)
	}
	if _, _, err := balance.Configure("least-conn", settings(map[string]string{"LEAST_CONN_SCOPE": "global"}), balance.Proxy); err == nil {
		t.Error("LEAST_CONN_SCOPE=global: accepted, want refused")
	}
}
