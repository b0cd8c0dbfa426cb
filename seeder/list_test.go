package main

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spreadlb/spread/internal/redistest"
	"github.com/spreadlb/spread/internal/store"
)

// list marks the entries every pick skips as invalid, quoted and cut to
// their first 200 bytes, so that a 1 MB entry prints as one short line.
func TestListMarksInvalidEntries(t *testing.T) {
	srv := redistest.Start(t)
	long := "http://a.example/" + strings.Repeat("x", 1<<20)
	if err := srv.Client.RPush(context.Background(), "servers", "http://a:1", long, "javascript:alert(1)", "http://b:2\r\nX: y").Err(); err != nil {
		t.Fatal(err)
	}
	out, err := seeder(t, srv, nil, "list")
	want := "http://a:1\n" +
		`"` + long[:200] + `…(1048593 bytes)"` + "\tinvalid: longer than 2048 bytes\n" +
		`"javascript:alert(1)"` + "\tinvalid: scheme must be http or https\n" +
		`"http://b:2\r\nX: y"` + "\tinvalid: contains a space, control or invisible character\n"
	if err != nil || out != want {
		t.Errorf("list: got (%.600q, %v), want %.600q", out, err, want)
	}
}

// seed and add refuse an entry longer than 2 KiB, say so in a short error,
// and leave the list as it was.
func TestLongURLsAreRefused(t *testing.T) {
	srv := redistest.Start(t)
	if _, err := seeder(t, srv, nil, "seed", "http://a:1"); err != nil {
		t.Fatal(err)
	}
	long := "http://a.example/" + strings.Repeat("x", 4096)
	for _, args := range [][]string{{"seed", "http://b:2", long}, {"add", long}} {
		_, err := seeder(t, srv, nil, args...)
		if err == nil || !strings.Contains(err.Error(), "longer than 2048 bytes") || len(err.Error()) > 500 {
			t.Errorf("seeder %s <%d bytes>: got %.300v, want a short error saying longer than 2048 bytes", args[0], len(long), err)
		}
		if got := lrange(t, srv); len(got) != 1 || got[0] != "http://a:1" {
			t.Errorf("seeder %s <%d bytes> changed the list: got %.100q", args[0], len(long), got)
		}
	}
}

// list reports the entries the rotation moved to the quarantine for their
// length, cut as invalid entries are, after the list.
func TestListReportsTheQuarantine(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	long := "http://a.example/" + strings.Repeat("x", 1<<20)
	if err := srv.Client.RPush(ctx, "servers", "http://a:1", long).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := seeder(t, srv, nil, "watch", "-n", "1", "-i", "0"); err != nil {
		t.Fatal(err)
	}
	out, err := seeder(t, srv, nil, "list")
	want := "http://a:1\n" +
		"quarantined (longer than 2048 bytes, moved out of the list by the rotation; in \"{servers}:quarantine\"):\n" +
		`"` + long[:200] + `…(1048593 bytes)"` + "\n"
	if err != nil || out != want {
		t.Errorf("list: got (%.600q, %v), want %.600q", out, err, want)
	}
}

// list writes how long ago a registration was heard and how long an
// ejection lasts in seconds with one decimal, as docs/seeder.md shows them
// ("registered, heard 0.4s ago", "ejected for 24.6s more (1st time)"),
// under a second too: not "heard 400ms ago".
func TestListWritesSecondsAsTheDocsShow(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	if _, err := seeder(t, srv, nil, "seed", "http://a:1", "http://b:2", "http://c:3"); err != nil {
		t.Fatal(err)
	}
	st := store.NewStore(srv.Client, "servers", nil)
	if e, err := st.Eject(ctx, "http://a:1", store.EjectPolicy{Base: 30 * time.Second, MaxPercent: 100}); err != nil || !e.Ejected {
		t.Fatalf("eject: got %+v, %v", e, err)
	}
	// Registrations heard a few hundred milliseconds ago: the value is
	// the TTL they were given, the TTL left is what it is now.
	for _, u := range []string{"http://b:2", "http://d:4"} {
		if err := srv.Client.Set(ctx, st.MemberKey(u), 6000, 5700*time.Millisecond).Err(); err != nil {
			t.Fatal(err)
		}
		if err := srv.Client.SAdd(ctx, st.MembersKey(), u).Err(); err != nil {
			t.Fatal(err)
		}
	}
	out, err := seeder(t, srv, nil, "list")
	if err != nil {
		t.Fatal(err)
	}
	want := regexp.MustCompile(`^http://a:1\tejected for \d+\.\ds more \(1st time\)\n` +
		`http://b:2\tregistered, heard \d+\.\ds ago\n` +
		`http://c:3\n` +
		`\(not in the list yet\)\thttp://d:4\tregistered, heard \d+\.\ds ago\n$`)
	if !want.MatchString(out) {
		t.Errorf("list: got %q, want it to match %q", out, want)
	}
}
