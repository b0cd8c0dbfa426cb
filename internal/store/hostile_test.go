package store_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"maps"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/spreadlb/spread/internal/backend"
	"github.com/spreadlb/spread/internal/pick"
	"github.com/spreadlb/spread/internal/redistest"
	"github.com/spreadlb/spread/internal/store"
)

// netOutput is how many bytes the Redis server has sent its clients so far
// (INFO stats total_net_output_bytes).
func netOutput(t *testing.T, rdb *redis.Client) int64 {
	t.Helper()
	return infoStat(t, rdb, "total_net_output_bytes")
}

// infoStat is the number that INFO stats gives for name.
func infoStat(t *testing.T, rdb *redis.Client, name string) int64 {
	t.Helper()
	n, err := redistest.Stat(context.Background(), rdb, name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Entries longer than backend.MaxLen get out of the rotation's way: the
// first step that meets one moves it to the quarantine list, so Redis never
// sends one to the dispatcher and copies it on one LMOVE only, not on every
// turn of the list. 300 picks over a list holding three of them cost a few
// kilobytes on the wire, the valid entries keep their exact rotation, and
// the list's version changes so that every copy of the list is read again.
// Nothing logged carries them either, and they never enter the tally.
func TestLongEntriesAreQuarantined(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	var logs bytes.Buffer
	s := store.NewStore(srv.Client, "servers", slog.New(slog.NewTextHandler(&logs, nil)))
	long := []string{
		"http://a.example/" + strings.Repeat("x", 1<<20),          // looks like a URL
		strings.Repeat("\xff\r\n", 1<<18),                         // garbage
		"http://a.example/" + strings.Repeat("y", backend.MaxLen), // just over backend.MaxLen
	}
	list := []string{three[0], long[0], three[1], long[1], long[2], three[2]}
	if err := srv.Client.RPush(ctx, "servers", list).Err(); err != nil {
		t.Fatal(err)
	}
	version := func() string { v, _ := srv.Client.Get(ctx, s.VersionKey()).Result(); return v }
	v0 := version()

	before := netOutput(t, srv.Client)
	counts := concurrentPicks(t, rot(s), 10, 30)
	sent := netOutput(t, srv.Client) - before

	if want := map[string]int{three[0]: 100, three[1]: 100, three[2]: 100}; !maps.Equal(counts, want) {
		t.Errorf("300 picks: got %v, want %v", counts, want)
	}
	if n := rot(s).Skipped(); n != 3 {
		t.Errorf("Skipped: got %d, want 3 (each long entry once, then it is out of the list)", n)
	}
	n, first, err := s.Quarantine(ctx, 5)
	if err != nil || n != 3 || len(first) != 3 {
		t.Fatalf("Quarantine: got (%d, %d entries, %v), want the 3 long entries", n, len(first), err)
	}
	// long[0] is met first: the rotation takes the list from its right.
	for i, want := range []string{long[2], long[1], long[0]} {
		if first[i] != want {
			t.Errorf("quarantine entry %d: got %.40q (%d bytes), want %.40q (%d bytes)", i, first[i], len(first[i]), want, len(want))
		}
	}
	if entries, _ := s.Entries(ctx); len(entries) != 3 {
		t.Errorf("the list after the picks: got %d entries, want the 3 valid ones", len(entries))
	}
	if v := version(); v == v0 {
		t.Errorf("the list's version stayed %q after entries were quarantined, want it changed", v)
	}
	// The valid entries kept their exact rotation: a list rotated by 300
	// steps, 3 entries long, is where it started.
	expectPicks(t, s, []string{three[2], three[1], three[0]})
	// 300 picks of a 21-byte entry each, in batches, plus the INFO replies.
	if sent > 64<<10 {
		t.Errorf("Redis sent %d bytes for 300 picks, want under 64 KiB: a long entry left Redis", sent)
	}
	if logs.Len() > 0 {
		for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
			if len(line) > 1000 {
				t.Errorf("a log line of %d bytes (%.80q...), want at most 1000", len(line), line)
			}
		}
	}
	tally, err := s.Tally(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(tally) != 3 {
		t.Errorf("the tally counts %d entries, want the 3 valid ones", len(tally))
	}

	// A list of long entries only: the pick that empties it says why, the
	// next finds it empty, and still nothing long is sent.
	srv.Client.Del(ctx, "servers")
	srv.Client.RPush(ctx, "servers", long)
	before = netOutput(t, srv.Client)
	if _, err := rot(s).Next(ctx); !errors.Is(err, pick.ErrNoValidBackend) {
		t.Errorf("only long entries: got %v, want pick.ErrNoValidBackend", err)
	}
	if _, err := rot(s).Next(ctx); !errors.Is(err, pick.ErrNoBackends) {
		t.Errorf("after they were quarantined: got %v, want pick.ErrNoBackends", err)
	}
	if sent := netOutput(t, srv.Client) - before; sent > 16<<10 {
		t.Errorf("Redis sent %d bytes for two failed picks, want under 16 KiB", sent)
	}
	if n, _, _ := s.Quarantine(ctx, 0); n != 6 {
		t.Errorf("quarantine: got %d entries, want 6", n)
	}
	// Seeding anew empties it.
	if err := s.Replace(ctx, three); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := s.Quarantine(ctx, 0); n != 0 {
		t.Errorf("quarantine after a seed: got %d entries, want 0", n)
	}
}
