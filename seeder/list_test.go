package main

import (
	"context"
	"strings"
	"testing"

	"github.com/spreadlb/spread/internal/redistest"
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
