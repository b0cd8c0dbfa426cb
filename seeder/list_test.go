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
