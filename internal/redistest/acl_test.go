package redistest_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/spreadlb/spread/internal/redistest"
)

// The rules of a documented `ACL SETUSER` line log in with their password
// and allow what they say, and only that.
func TestACLRulesSetUser(t *testing.T) {
	doc := filepath.Join(t.TempDir(), "security.md")
	text := "Create the user:\n\n    ACL SETUSER reader on >secret resetkeys ~k -@all +get \"(~s +sadd)\"\n\nand no other.\n"
	if err := os.WriteFile(doc, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	rules, pass := redistest.ACLRules(t, doc, "reader")
	if want := []string{"on", ">secret", "resetkeys", "~k", "-@all", "+get", "(~s +sadd)"}; !slices.Equal(rules, want) || pass != "secret" {
		t.Fatalf("got rules %q and password %q, want %q and %q", rules, pass, want, "secret")
	}

	srv := redistest.Start(t)
	srv.SetUser(t, "reader", rules...)
	ctx := context.Background()
	if err := srv.Client.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	opt, err := redis.ParseURL(srv.UserURL("reader", pass))
	if err != nil {
		t.Fatal(err)
	}
	reader := redis.NewClient(opt)
	defer reader.Close()
	if got, err := reader.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Errorf("GET k as reader: got %q (err %v), want %q", got, err, "v")
	}
	if err := reader.Set(ctx, "k", "w", 0).Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
		t.Errorf("SET k as reader: got %v, want a NOPERM error", err)
	}
	// The selector: SADD on s only.
	if err := reader.SAdd(ctx, "s", "x").Err(); err != nil {
		t.Errorf("SADD s as reader (the selector): %v", err)
	}
	if err := reader.SAdd(ctx, "k2", "x").Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
		t.Errorf("SADD k2 as reader: got %v, want a NOPERM error", err)
	}
}
