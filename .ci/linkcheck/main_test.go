package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestSlug(t *testing.T) {
	for _, tc := range []struct{ heading, want string }{
		{"Run it", "run-it"},
		{"What happens when...", "what-happens-when"},
		{"Redis: the keys, Sentinel and Cluster", "redis-the-keys-sentinel-and-cluster"},
		{"The `seeder` command", "the-seeder-command"},
		{"Speed: one step per request, not one round trip", "speed-one-step-per-request-not-one-round-trip"},
		{"p99 ≤ 2 × local", "p99--2--local"},
		{"snake_case and kebab-case", "snake_case-and-kebab-case"},
		{"A [link](x.md) in it", "a-link-in-it"},
		{"Ünïcode Straße", "ünïcode-straße"},
	} {
		if got := slug(tc.heading); got != tc.want {
			t.Errorf("slug(%q): got %q, want %q", tc.heading, got, tc.want)
		}
	}
}

func TestHeadingAnchors(t *testing.T) {
	text := "# Title\n\n## Usage\n\n```sh\n# not a heading\n```\n\n## Usage\n### Usage ##\n#nospace\n"
	got := headingAnchors(text)
	want := []string{"title", "usage", "usage-1", "usage-2"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestLinks(t *testing.T) {
	text := strings.Join([]string{
		"See [the docs](docs/a.md#usage) and ![shot](docs/shot.png).",  // 1
		"| [`backend/`](backend/main.go) | x |",                        // 2
		"Not a link: `[x](nowhere.md)`; a site: [go](https://go.dev).", // 3
		"```",                      // 4
		"[in a fence](nowhere.md)", // 5
		"```",                      // 6
		"[same page](#top) [t](<spaced.md> \"title\")", // 7
	}, "\n")
	got := links(text)
	want := []link{{1, "docs/a.md#usage"}, {1, "docs/shot.png"}, {2, "backend/main.go"}, {7, "#top"}, {7, "spaced.md"}}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

// write creates the files under root, with their parent directories.
func write(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, text := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRunReportsEachBrokenLink(t *testing.T) {
	root := t.TempDir()
	write(t, root, map[string]string{
		"README.md": "# Top\n\n[a](docs/a.md) [b](docs/a.md#usage) [c](#top) [code](seeder/main.go) [dir](seeder/)\n" +
			"[gone](docs/gone.md) [bad anchor](docs/a.md#nope) [self](#nope) [up](../x.md)\n",
		"CONTRIBUTING.md": "# Contributing\n\n[readme](README.md#top) [line](seeder/main.go#L3)\n",
		"docs/a.md":       "# A\n\n## Usage\n\n[back](../README.md#top) [sibling](b.md) [root](/README.md)\n",
		"seeder/main.go":  "package main\n",
	})
	var out bytes.Buffer
	err := run(root, &out)
	if !errors.Is(err, errBroken) {
		t.Fatalf("run: got error %v, want %v", err, errBroken)
	}
	want := []string{
		"README.md:4: docs/gone.md: no such file",
		"README.md:4: docs/a.md#nope: no heading with this anchor in docs/a.md",
		"README.md:4: #nope: no heading with this anchor in README.md",
		"README.md:4: ../x.md: outside the repository",
		"docs/a.md:5: b.md: no such file",
		"docs/a.md:5: /README.md: absolute path; make it relative to docs/a.md",
	}
	if got := strings.Split(strings.TrimSpace(out.String()), "\n"); !slices.Equal(got, want) {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestRunPassesGoodLinks(t *testing.T) {
	root := t.TempDir()
	write(t, root, map[string]string{
		"README.md":       "# Top\n\n[a](docs/a.md#usage) [c](CONTRIBUTING.md)\n",
		"CONTRIBUTING.md": "# Contributing\n\n[back](README.md#top)\n",
		"docs/a.md":       "# A\n\n## Usage\n\n[back](../README.md)\n",
	})
	var out bytes.Buffer
	if err := run(root, &out); err != nil || out.Len() > 0 {
		t.Errorf("got error %v and output %q, want neither", err, out.String())
	}
}

// TestRepository checks the repository's own pages, so `go test` in this
// module fails when a link breaks.
func TestRepository(t *testing.T) {
	var out bytes.Buffer
	if err := run("../..", &out); err != nil {
		t.Errorf("%v\n%s", err, out.String())
	}
}
