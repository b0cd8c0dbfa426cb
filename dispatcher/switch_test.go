package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spreadlb/spread/internal/store"
)

// strategyInfo is the strategy spread_strategy_info names, "" if none.
func (s *served) strategyInfo(t *testing.T) string {
	t.Helper()
	fam := scrape(t, s.adm+"/metrics")["spread_strategy_info"]
	if fam == nil || len(fam.GetMetric()) != 1 {
		return ""
	}
	for _, l := range fam.GetMetric()[0].GetLabel() {
		if l.GetName() == "strategy" {
			return l.GetValue()
		}
	}
	return ""
}

// do sends an admin request with a JSON body and returns its status and
// decoded answer.
func (s *served) do(t *testing.T, method, path, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, s.adm+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: answer %q is not JSON: %v", method, path, raw, err)
	}
	return resp.StatusCode, out
}

// A strategy stored beside the list replaces STRATEGY while requests flow:
// requests held by the old strategy finish under it, and the in-flight
// counts stay right across the change; clearing it brings STRATEGY back.
func TestStoredStrategySwitchesWhileRequestsFlow(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hs := []*holder{newHolder(), newHolder(), newHolder()}
	bs := []*upstream{newBackend(t, "b1", hs[0]), newBackend(t, "b2", hs[1]), newBackend(t, "b3", hs[2])}
	s := startServe(t, ctx, proxyEnv("STRATEGY", "p2c"), bs[0].srv.URL, bs[1].srv.URL, bs[2].srv.URL)
	waitFor(t, "the snapshot is read", func() bool { code, _ := s.readyz(t); return code == 200 })
	if got := s.strategyInfo(t); got != "p2c" {
		t.Fatalf("at start: spread_strategy_info names %q, want p2c", got)
	}

	// Two requests held by p2c.
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			resp, err := http.Get(s.main + "/hold")
			if err != nil {
				t.Error(err)
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || string(body) != "released" {
				t.Errorf("a request held across the change: got %d %q, want 200 released", resp.StatusCode, body)
			}
		})
	}
	waitFor(t, "two requests are held", func() bool { return hs[0].count()+hs[1].count()+hs[2].count() == 2 })

	st := store.NewStore(s.redis.Client, "servers", nil)
	if err := st.SetStrategy(ctx, store.StoredStrategy{Name: "least-conn", By: "seeder", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "spread_strategy_info to name least-conn", func() bool { return s.strategyInfo(t) == "least-conn" })
	if !strings.Contains(s.logs.String(), `msg="strategy changed" from=p2c to=least-conn settings="" by=seeder`) {
		t.Errorf("the log does not say who changed the strategy from what to what:\n%s", s.logs)
	}

	// least-conn sees p2c's two requests: the next one goes to the idle
	// backend, every time.
	expectTheIdleOne(t, s, hs, bs, "least-conn with two requests held by p2c")
	for _, h := range hs {
		close(h.release)
	}
	wg.Wait()
	waitFor(t, "no request in flight", func() bool {
		sum := 0.0
		for _, b := range bs {
			n, _ := sample(scrape(t, s.adm+"/metrics"), "spread_inflight", map[string]string{"backend": b.srv.URL})
			sum += n
		}
		return sum == 0
	})
	in, err := st.InFlight(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the shared counts to empty", func() bool { in, err = st.InFlight(ctx); return err == nil && len(in) == 0 })

	// Cleared: back to STRATEGY.
	if _, err := st.ClearStrategy(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "spread_strategy_info to name p2c again", func() bool { return s.strategyInfo(t) == "p2c" })
}

// A stored strategy this dispatcher cannot run is refused: it keeps its
// strategy, logs why, and /readyz and the dashboard say so; answers go on.
func TestStoredStrategyThisDispatcherCannotRunIsRefused(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := startServe(t, ctx, nil, three...)
	waitFor(t, "the snapshot is read", func() bool { code, _ := s.readyz(t); return code == 200 })
	st := store.NewStore(s.redis.Client, "servers", nil)
	for _, c := range []struct {
		stored store.StoredStrategy
		says   string
	}{
		{store.StoredStrategy{Name: "least-conn", By: "seeder"}, "needs MODE=proxy"},
		{store.StoredStrategy{Name: "hash", Settings: map[string]string{"HASH_KEY": "body:x"}, By: "seeder"}, "HASH_KEY"},
		{store.StoredStrategy{Name: "random", Settings: map[string]string{"HASH_KEY": "ip"}, By: "seeder"}, "HASH_KEY: not a setting of the strategy random"},
		{store.StoredStrategy{Name: "fastest", By: "seeder"}, "unknown strategy"},
	} {
		if err := st.SetStrategy(ctx, c.stored); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "/readyz to say "+c.says, func() bool {
			code, body := s.readyz(t)
			return code == 200 && strings.Contains(body, "stored strategy "+c.stored.Name+" refused") && strings.Contains(body, c.says)
		})
		if got := s.strategyInfo(t); got != "round-robin" {
			t.Errorf("%s refused: spread_strategy_info names %q, want round-robin still", c.stored.Name, got)
		}
		if code, _ := s.getOK(t, "/"); code != http.StatusFound {
			t.Errorf("%s refused: a request got %d, want 302", c.stored.Name, code)
		}
		if !strings.Contains(s.logs.String(), "the stored strategy cannot run here") {
			t.Errorf("%s refused: the log does not say why", c.stored.Name)
		}
	}
	events := openEvents(t, s.adm+"/events")
	got, ok := events.next(t)
	if !ok || got.Strategy != "round-robin" || !strings.Contains(got.StrategyNote, "stored strategy fastest refused") {
		t.Errorf("the dashboard: got strategy %q, note %q; want round-robin and why fastest is refused", got.Strategy, got.StrategyNote)
	}
	// A good one ends the refusal.
	if err := st.SetStrategy(ctx, store.StoredStrategy{Name: "random", By: "seeder"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "spread_strategy_info to name random", func() bool { return s.strategyInfo(t) == "random" })
	if _, body := s.readyz(t); strings.Contains(body, "refused") {
		t.Errorf("/readyz after a good strategy: got %q, want no refusal", body)
	}
}

// POST /strategy stores a strategy for every dispatcher, only with
// ADMIN_WRITE=1; a bad one gets 400 naming the field, and nothing is stored.
func TestAdminStrategyWrites(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ro := startServe(t, ctx, proxyEnv(), three...)
	if code, out := ro.do(t, http.MethodPost, "/strategy", `{"name":"least-conn"}`); code != http.StatusForbidden || !strings.Contains(out["error"].(string), "ADMIN_WRITE=1") {
		t.Errorf("POST without ADMIN_WRITE: got %d %v, want 403 naming ADMIN_WRITE=1", code, out)
	}
	if code, _ := ro.do(t, http.MethodDelete, "/strategy", ""); code != http.StatusForbidden {
		t.Errorf("DELETE without ADMIN_WRITE: got %d, want 403", code)
	}

	s := startServe(t, ctx, proxyEnv("ADMIN_WRITE", "1"), three...)
	st := store.NewStore(s.redis.Client, "servers", nil)
	for _, c := range []struct{ body, field string }{
		{`{"name":"fastest"}`, "name"},
		{`{"name":""}`, "name"},
		{`{"name":"hash","settings":{"HASH_KEY":"body:x"}}`, "settings.HASH_KEY"},
		{`{"name":"hash","settings":{"ROTATION":"local"}}`, "settings.ROTATION"},
		{`{"name":"hash","weight":3}`, "body"},
		{`not json`, "body"},
	} {
		code, out := s.do(t, http.MethodPost, "/strategy", c.body)
		if code != http.StatusBadRequest || out["field"] != c.field {
			t.Errorf("POST %s: got %d %v, want 400 naming %s", c.body, code, out, c.field)
		}
		if _, _, ok, _ := st.Strategy(ctx); ok {
			t.Fatalf("POST %s stored a strategy, want nothing stored", c.body)
		}
	}
	code, out := s.do(t, http.MethodPost, "/strategy", `{"name":"hash","settings":{"HASH_KEY":"header:X-User"}}`)
	if code != http.StatusOK || out["name"] != "hash" || !strings.HasPrefix(out["by"].(string), "admin") {
		t.Fatalf("POST hash: got %d %v, want 200 and the stored strategy, by admin", code, out)
	}
	waitFor(t, "spread_strategy_info to name hash", func() bool { return s.strategyInfo(t) == "hash" })
	code, out = s.do(t, http.MethodGet, "/strategy", "")
	if set, _ := out["settings"].(map[string]any); code != http.StatusOK || out["name"] != "hash" || set["HASH_KEY"] != "header:X-User" || out["stored"] == nil {
		t.Errorf("GET /strategy: got %d %v, want hash with HASH_KEY=header:X-User, stored", code, out)
	}
	if code, out := s.do(t, http.MethodDelete, "/strategy", ""); code != http.StatusOK || out["cleared"] != true {
		t.Errorf("DELETE: got %d %v, want 200 cleared", code, out)
	}
	waitFor(t, "spread_strategy_info to name round-robin", func() bool { return s.strategyInfo(t) == "round-robin" })
}
