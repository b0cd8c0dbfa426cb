package balance_test

import (
	"context"
	"net/http"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spreadlb/spread/internal/balance"
)

// fixed always picks u, hears every Done, and counts the runs of its
// background work.
type fixed struct {
	u       *url.URL
	done    atomic.Int64
	running atomic.Int64
}

func (f *fixed) Pick(context.Context, *http.Request) (balance.Backend, error) {
	return balance.NewBackend(f.u, f.u.String(), f), nil
}
func (f *fixed) Done(balance.Backend, balance.Result) { f.done.Add(1) }
func (f *fixed) Run(ctx context.Context) {
	f.running.Add(1)
	<-ctx.Done()
	f.running.Add(-1)
}

func planOf(p balance.Picker) balance.Plan {
	return balance.Plan{New: func(balance.Env) (balance.Picker, error) { return p, nil }}
}

// A Switch sends new picks to the strategy it uses now and each Done to the
// strategy that picked; only the current strategy's background work runs.
func TestSwitch(t *testing.T) {
	a := &fixed{u: &url.URL{Scheme: "http", Host: "a:1"}}
	b := &fixed{u: &url.URL{Scheme: "http", Host: "b:1"}}
	sw, err := balance.NewSwitch(balance.Env{}, "a", nil, planOf(a))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { sw.Run(ctx); close(stopped) }()
	waitFor(t, "a's background work", func() bool { return a.running.Load() == 1 })

	held, _ := sw.Pick(context.Background(), nil)
	rb, err := sw.Build("b", map[string]string{"K": "v"}, planOf(b))
	if err != nil {
		t.Fatal(err)
	}
	if old := sw.Use(rb); old.Name != "a" {
		t.Errorf("Use: got the old strategy %q, want a", old.Name)
	}
	waitFor(t, "b's background work, and a's to stop", func() bool { return b.running.Load() == 1 && a.running.Load() == 0 })
	next, _ := sw.Pick(context.Background(), nil)
	if next.URL != b.u || held.URL != a.u {
		t.Errorf("picks: got %v then %v, want a's then b's", held.URL, next.URL)
	}
	held.Done(balance.Result{})
	next.Done(balance.Result{})
	if a.done.Load() != 1 || b.done.Load() != 1 {
		t.Errorf("Done: a heard %d, b %d; want each its own one", a.done.Load(), b.done.Load())
	}
	if cur := sw.Current(); cur.Name != "b" || cur.Settings["K"] != "v" {
		t.Errorf("Current: got %q %v, want b with K=v", cur.Name, cur.Settings)
	}
	if p, ok := balance.As[*fixed](sw); !ok || p != b {
		t.Errorf("As through the Switch: got %v, want b", p)
	}
	cancel()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if b.running.Load() != 0 {
		t.Error("b's background work still runs after Run returned")
	}
}

// waitFor waits until cond holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10 s for %s", what)
		}
	}
}
