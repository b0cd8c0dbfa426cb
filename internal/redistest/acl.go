package redistest

import (
	"context"
	"os"
	"strings"
	"testing"
)

// ACLRules returns the rules that the document at docPath (docs/security.md)
// gives user in its `ACL SETUSER user ...` line, as the docs give them to
// copy (split as redis-cli splits them: "(...)" is one rule), and the password they set (the rule ">PASSWORD"). It fails the test
// when the document has no such line or the line sets no password, so tests
// run as the users that the docs document.
func ACLRules(t testing.TB, docPath, user string) (rules []string, password string) {
	t.Helper()
	doc, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(doc)) {
		f := cliFields(line)
		if len(f) < 4 || f[0] != "ACL" || f[1] != "SETUSER" || f[2] != user {
			continue
		}
		rules = f[3:]
		for _, r := range rules {
			if p, ok := strings.CutPrefix(r, ">"); ok {
				password = p
			}
		}
		if password == "" {
			t.Fatalf("%s: `ACL SETUSER %s` sets no password", docPath, user)
		}
		return rules, password
	}
	t.Fatalf("%s has no `ACL SETUSER %s` line", docPath, user)
	return nil, ""
}

// cliFields splits line into arguments as redis-cli does: at spaces,
// except inside double quotes, which it removes ("(+sadd ~key)" is one
// argument, an ACL selector).
func cliFields(line string) []string {
	var out []string
	var cur strings.Builder
	quoted, in := false, false
	for _, r := range line {
		switch {
		case r == '"':
			quoted, in = !quoted, true
		case !quoted && (r == ' ' || r == '\t' || r == '\n' || r == '\r'):
			if in {
				out = append(out, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if in {
		out = append(out, cur.String())
	}
	return out
}

// SetUser creates or changes the ACL user on the server with rules, as
// `redis-cli ACL SETUSER user rules...` would; it fails the test if Redis
// refuses them.
func (s *Server) SetUser(t testing.TB, user string, rules ...string) {
	t.Helper()
	args := []any{"ACL", "SETUSER", user}
	for _, r := range rules {
		args = append(args, r)
	}
	if err := s.Client.Do(context.Background(), args...).Err(); err != nil {
		t.Fatalf("ACL SETUSER %s %s: %v", user, strings.Join(rules, " "), err)
	}
}
