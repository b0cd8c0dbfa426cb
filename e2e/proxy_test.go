package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// TestProxy runs a dispatcher with MODE=proxy on the stack's network. A
// proxy connects to the backends itself, so its list, under a key of its
// own ("proxied", leaving the other tests' "servers" alone), holds their
// addresses inside the network, as compose.yaml's "proxy" profile seeds.
func TestProxy(t *testing.T) {
	s := startStack(t)
	proxied := map[string]string{"REDIS_KEY": "proxied"}
	const b1, b2, b3 = "http://backend1:5000", "http://backend2:5001", "http://backend3:5002"

	// Weights: backend1 twice per round, never twice in a row.
	code, out := s.seederEnv(t, proxied, "seed", b1+"*2", b2, b3)
	if code != 0 {
		t.Fatalf("seeder seed with weights: exit %d\n%s", code, out)
	}
	list, err := s.redis.LRange(t.Context(), "proxied", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{b3, b1, b2, b1}; !slices.Equal(list, want) {
		t.Errorf("LRANGE proxied after seed %s*2 %s %s: got %q, want %q", b1, b2, b3, list, want)
	}
	dc := s.startDispatcher(t, map[string]string{"MODE": "proxy", "REDIS_KEY": "proxied"})
	front, admin := endpoint(t, dc, "80/tcp"), endpoint(t, dc, "8080/tcp")

	t.Run("GET / is answered by the backends in the weighted order", func(t *testing.T) {
		want := []string{"backend1", "backend2", "backend1", "backend3"}
		for i := range 8 {
			resp, err := noFollow.Get(front + "/")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			got := resp.Header.Get("X-Backend")
			if resp.StatusCode != 200 || string(body) != "Hello, World!" || got != want[i%4] {
				t.Errorf("request %d: got %d %q from %q, want 200 %q from %q", i, resp.StatusCode, body, got, "Hello, World!", want[i%4])
			}
		}
	})

	t.Run("method, path, query and body reach the backend", func(t *testing.T) {
		resp, err := noFollow.Post(front+"/whoami?via=proxy", "text/plain", strings.NewReader("payload"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var got struct{ Backend, Method, Path, Query, Body string }
		if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
			t.Fatal(err)
		}
		want := got
		want.Method, want.Path, want.Query, want.Body = "POST", "/whoami", "via=proxy", "payload"
		if resp.StatusCode != 200 || got != want || !slices.Contains([]string{"backend1", "backend2", "backend3"}, got.Backend) {
			t.Errorf("got %d, the backend saw %+v; want 200, %+v", resp.StatusCode, got, want)
		}
		if x := resp.Header.Get("X-Backend"); x != got.Backend {
			t.Errorf("X-Backend %q does not name the backend that answered, %q", x, got.Backend)
		}
	})

	t.Run("a backend that refuses: GET moves on, POST gets 502, both counted", func(t *testing.T) {
		const dead = "http://redis:6390" // a host on the network where nothing listens on that port
		if code, out := s.seederEnv(t, proxied, "seed", b1, dead); code != 0 {
			t.Fatalf("seeder seed: exit %d\n%s", code, out)
		}
		// The rotation serves dead, backend1, dead, ...
		resp, err := noFollow.Get(front + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("X-Backend") != "backend1" {
			t.Errorf("GET: got %d from %q, want 200 from backend1 after the refused connection", resp.StatusCode, resp.Header.Get("X-Backend"))
		}
		resp, err = noFollow.Post(front+"/whoami", "text/plain", strings.NewReader("once"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("POST: got %d, want 502 (not retried)", resp.StatusCode)
		}
		resp, err = http.Get(admin + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		metrics, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, line := range []string{
			`spread_proxy_connect_errors_total{backend="` + dead + `"} 2`,
			`spread_proxy_retries_total 1`,
		} {
			if !strings.Contains(string(metrics), line+"\n") {
				t.Errorf("/metrics lacks the line %q", line)
			}
		}
	})

	// The other tests' list is untouched by all this.
	if got := s.list(t); !slices.Equal(got, s.backends) {
		t.Errorf("LRANGE servers: got %q, want %q", got, s.backends)
	}
}
