package store_test

import (
	"bytes"
	"context"
	"log/slog"
	"maps"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/spreadlb/spread/internal/backend"
	"github.com/spreadlb/spread/internal/redistest"
	"github.com/spreadlb/spread/internal/store"
)

// netOutput is how many bytes the Redis server has sent its clients so far
// (INFO stats total_net_output_bytes).
func netOutput(t *testing.T, rdb *redis.Client) int64 {
	t.Helper()
	info, err := rdb.Info(context.Background(), "stats").Result()
	if err != nil {
		t.Fatal(err)
	}
	_, after, found := strings.Cut(info, "total_net_output_bytes:")
	if !found {
		t.Fatalf("INFO stats has no total_net_output_bytes: %q", info)
	}
	v, _, _ := strings.Cut(after, "\r\n")
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Entries longer than backend.MaxLen are stepped over inside the rotation
// step, by their length: Redis never sends one to the dispatcher, so 300
// picks over a list holding two 1 MB entries cost a few kilobytes on the
// wire, not the 2 MB per turn of the list they cost when each came back to
// be refused by backend.Parse. Nothing logged carries them either, and
// they never enter the tally.
func TestLongEntriesNeverLeaveRedis(t *testing.T) {
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

	before := netOutput(t, srv.Client)
	counts := concurrentPicks(t, rot(s), 10, 30)
	sent := netOutput(t, srv.Client) - before

	if want := map[string]int{three[0]: 100, three[1]: 100, three[2]: 100}; !maps.Equal(counts, want) {
		t.Errorf("300 picks: got %v, want %v", counts, want)
	}
	if n := rot(s).Skipped(); n != 300 {
		t.Errorf("Skipped: got %d, want 300 (3 long entries, 100 turns)", n)
	}
	// 300 picks of a 21-byte entry each, in batches, plus one INFO reply.
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

	// A list of long entries only: no backend, and still nothing sent.
	srv.Client.Del(ctx, "servers")
	srv.Client.RPush(ctx, "servers", long)
	before = netOutput(t, srv.Client)
	if _, err := rot(s).Next(ctx); err == nil || !strings.Contains(err.Error(), "no valid backend") {
		t.Errorf("only long entries: got %v, want pick.ErrNoValidBackend", err)
	}
	if sent := netOutput(t, srv.Client) - before; sent > 16<<10 {
		t.Errorf("Redis sent %d bytes for one failed pick, want under 16 KiB", sent)
	}
}
