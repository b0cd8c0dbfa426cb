package store_test

import (
	"strings"
	"testing"

	"github.com/spreadlb/spread/internal/store"
)

// REDIS_KEY must be a key one can type and see.
func TestLoadKey(t *testing.T) {
	for _, tc := range []struct {
		v, want string // want "" for refused
	}{
		{"", "servers"},
		{"servers", "servers"},
		{"{lb}servers", "{lb}servers"},
		{"app:rotation", "app:rotation"},
		{" ", ""},
		{"\t", ""},
		{"my servers", ""},
		{"servers\n", ""},
		{"serv\x00ers", ""},
		{"servers\u00a0", ""},
	} {
		got, err := store.LoadKey(func(k string) string {
			if k == "REDIS_KEY" {
				return tc.v
			}
			return ""
		})
		switch {
		case tc.want == "" && (err == nil || !strings.HasPrefix(err.Error(), "REDIS_KEY=")):
			t.Errorf("REDIS_KEY=%q: got (%q, %v), want an error naming REDIS_KEY", tc.v, got, err)
		case tc.want != "" && (err != nil || got != tc.want):
			t.Errorf("REDIS_KEY=%q: got (%q, %v), want %q", tc.v, got, err, tc.want)
		}
	}
}
