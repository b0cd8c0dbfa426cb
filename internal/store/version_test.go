package store_test

import (
	"context"
	"testing"
	"time"
)

// Every write to the list or its down set changes its version; reading,
// stepping the rotation and a round of health checks that finds what the
// last one found do not. A version never comes back, even after FLUSHALL,
// so that a reader holding the old list cannot take a new one for it.
func TestVersionChangesWithEveryChange(t *testing.T) {
	ctx := context.Background()
	s, srv := newStore(t)
	version := func() string {
		t.Helper()
		v, err := s.Version(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	seen := map[string]string{}
	changed := func(what string, change func() error) {
		t.Helper()
		before := version()
		if err := change(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		after := version()
		if after == before {
			t.Errorf("%s: the version stayed %q, want it changed", what, after)
		}
		if prev, ok := seen[after]; ok {
			t.Errorf("%s: the version %q came back, as after %s", what, after, prev)
		}
		seen[after] = what
	}
	same := func(what string, change func() error) {
		t.Helper()
		before := version()
		if err := change(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if after := version(); after != before {
			t.Errorf("%s: the version went from %q to %q, want it unchanged", what, before, after)
		}
	}

	changed("seed", func() error { return s.Replace(ctx, three) })
	same("a rotation step", func() error { _, err := rot(s).Next(ctx); return err })
	same("a read", func() error { _, _, err := s.Read(ctx); return err })
	changed("add", func() error { _, err := s.Add(ctx, "http://127.0.0.1:5003"); return err })
	changed("remove", func() error { _, err := s.Remove(ctx, "http://127.0.0.1:5003"); return err })
	if held, _, err := s.ClaimLease(ctx, "checker", time.Minute); err != nil || !held {
		t.Fatalf("ClaimLease: got (%v, %v)", held, err)
	}
	changed("a backend marked down", func() error { _, err := s.PublishDown(ctx, "checker", time.Minute, three[:1]); return err })
	same("the same down set published again", func() error { _, err := s.PublishDown(ctx, "checker", time.Minute, three[:1]); return err })
	changed("the backend up again", func() error { _, err := s.PublishDown(ctx, "checker", time.Minute, nil); return err })
	changed("a hand-made RPUSH", func() error { return srv.Client.RPush(ctx, "servers", three[0]).Err() })

	changed("FLUSHALL and the same seed", func() error {
		if err := srv.Client.FlushAll(ctx).Err(); err != nil {
			return err
		}
		return s.Replace(ctx, three)
	})
}
