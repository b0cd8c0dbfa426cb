package e2e

import (
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
)

// aclRules returns the rules of docs/security.md's `ACL SETUSER user ...`
// line, as the docs give them to copy, and the password they set.
func aclRules(t *testing.T, user string) (rules []string, password string) {
	t.Helper()
	doc, err := os.ReadFile("../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(doc), "\n") {
		f := strings.Fields(line)
		if len(f) > 3 && f[0] == "ACL" && f[1] == "SETUSER" && f[2] == user {
			for _, r := range f[3:] {
				if p, ok := strings.CutPrefix(r, ">"); ok {
					password = p
				}
			}
			return f[3:], password
		}
	}
	t.Fatalf("docs/security.md has no `ACL SETUSER %s` line", user)
	return nil, ""
}

// The least-privilege users of docs/security.md, in the real stack: the
// seeder fills and lists the list as spread-seeder, and a dispatcher
// running as spread-dispatcher serves an exact rotation with its health
// checks on, while Redis refuses nothing (ACL LOG stays empty). A user
// without SCARD gets 503s naming it, /readyz names it, and the dispatcher
// does not pretend Redis is down.
func TestACLUsers(t *testing.T) {
	dRules, dPass := aclRules(t, "spread-dispatcher")
	sRules, sPass := aclRules(t, "spread-seeder")
	// The same user without SCARD, which the rotation step needs.
	noScard := append(append([]string{}, dRules...), "-scard")
	cmd := []string{"redis-server"}
	for _, u := range []struct {
		name  string
		rules []string
	}{{"spread-dispatcher", dRules}, {"spread-seeder", sRules}, {"spread-noscard", noScard}} {
		// redis-server reads `--user NAME RULE...` as the config line
		// `user NAME RULE...`: one argument each, as ACL SETUSER takes them.
		cmd = append(append(cmd, "--user", u.name), u.rules...)
	}
	s := startStackWith(t, stackOptions{redisCmd: cmd})
	s.redis.Do(t.Context(), "ACL", "LOG", "RESET")

	seeder := map[string]string{"REDIS_URL": "redis://spread-seeder:" + sPass + "@redis:6379/0"}
	if code, out := s.seederEnv(t, seeder, append(append([]string{"seed"}, s.probes...), s.backends...)...); code != 0 {
		t.Fatalf("seeder seed as spread-seeder: exit %d\n%s", code, out)
	}
	if code, out := s.seederEnv(t, seeder, "list"); code != 0 || !strings.Contains(out, s.backends[0]) {
		t.Errorf("seeder list as spread-seeder: exit %d\n%s", code, out)
	}

	asDispatcher := map[string]string{"REDIS_URL": "redis://spread-dispatcher:" + dPass + "@redis:6379/0"}
	dc := s.startDispatcher(t, asDispatcher)
	url, admin := endpoint(t, dc, "80/tcp"), endpoint(t, dc, "8080/tcp")
	waitReady(t, admin, "ready")
	counts, failed := spread(t, url, 10, 30)
	for _, b := range s.backends {
		if counts[b] != 100 || failed != 0 {
			t.Errorf("as spread-dispatcher, %s: got %d of 300 redirects (%d failed), want 100", b, counts[b], failed)
		}
	}

	// Nothing the documented users did was refused.
	if entries, _ := s.redis.Do(t.Context(), "ACL", "LOG").Val().([]any); len(entries) > 0 {
		t.Errorf("ACL LOG holds %d refusals of the documented users' own work, first: %s", len(entries), anyString(entries[0]))
	}

	bad := s.startDispatcher(t, map[string]string{"REDIS_URL": "redis://spread-noscard:" + dPass + "@redis:6379/0"})
	badURL, badAdmin := endpoint(t, bad, "80/tcp"), endpoint(t, bad, "8080/tcp")
	waitFor(t, "/readyz names the missing command", func() bool {
		code, body := readyz(t, badAdmin)
		return code == http.StatusServiceUnavailable && strings.Contains(strings.ToUpper(body), "SCARD")
	})
	status, loc, body := get(t, badURL+"/")
	if status != http.StatusServiceUnavailable || loc != "" || !strings.Contains(body, "SCARD") {
		t.Errorf("a request through a dispatcher whose user lacks SCARD: got %d %q %q, want 503 naming SCARD and no redirect", status, loc, body)
	}
	resp, err := http.Get(badAdmin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(metrics), "\nspread_degraded 1") {
		t.Error("a permission error put the dispatcher in degraded mode: Redis is up, the user is misconfigured")
	}
}

// anyString flattens an ACL LOG entry for a search.
func anyString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []any:
		var b strings.Builder
		for _, e := range x {
			b.WriteString(anyString(e) + " ")
		}
		return b.String()
	case map[any]any:
		var b strings.Builder
		for k, e := range x {
			b.WriteString(anyString(k) + "=" + anyString(e) + " ")
		}
		return b.String()
	}
	return ""
}
