package main

import (
	"context"
	"strings"
	"testing"
)

// TestCheck runs `dispatcher check` as main does, through run (for the
// settings loadConfig refuses) and checkConfig (for REDIS_URL and what it
// prints): an accepted environment prints every setting with the value the
// dispatcher would use; a refused one is an error naming the variable.
func TestCheck(t *testing.T) {
	good := map[string]string{"PORT": "8000", "MODE": "proxy", "STRATEGY": "least-conn",
		"REDIS_URL": "redis+sentinel://redis-0.redis:26379/0?master_name=mymaster&addr=redis-1.redis:26379"}
	cfg, err := loadConfig(func(k string) string { return good[k] })
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := checkConfig(cfg, func(k string) string { return good[k] }, &out); err != nil {
		t.Fatalf("check: got %v, want no error", err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != len(settings) {
		t.Errorf("check printed %d lines, want one per setting, %d:\n%s", len(lines), len(settings), out.String())
	}
	for _, want := range []string{"PORT=8000", "ADMIN_PORT=8080", "MODE=proxy", "STRATEGY=least-conn", "REDIS_KEY=servers",
		"REDIS_URL=redis+sentinel://redis-0.redis:26379/0?master_name=mymaster&addr=redis-1.redis:26379"} {
		if !strings.Contains("\n"+out.String(), "\n"+want+"\n") {
			t.Errorf("check printed\n%s\nwant the line %q", out.String(), want)
		}
	}

	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"ADMIN_PORT": "80"}, "PORT and ADMIN_PORT are both 80"},
		{map[string]string{"STRATEGY": "least-conn"}, "least-conn needs MODE=proxy"},
		{map[string]string{"HEALTH_INTERVAL": "often"}, `HEALTH_INTERVAL="often"`},
		{map[string]string{"REDIS_URL": "redis+sentinel://redis:26379/0"}, "REDIS_URL: a redis+sentinel:// URL needs ?master_name=NAME"},
		{map[string]string{"REDIS_URL": "http://redis:6379"}, "REDIS_URL: redis: invalid URL scheme: http"},
	} {
		err := run(context.Background(), []string{"check"}, func(k string) string { return tc.env[k] }, &out)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("check with %v: got error %v, want one containing %q", tc.env, err, tc.want)
		}
	}
}
