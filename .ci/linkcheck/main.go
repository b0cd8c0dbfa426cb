// Command linkcheck checks the relative links of the repository's
// Markdown: every link in README.md, CONTRIBUTING.md and docs/*.md must
// name a file or directory that exists, and every #anchor a heading of the
// page it points to, as GitHub derives anchors from headings.
//
// Usage:
//
//	linkcheck [ROOT]    ROOT is the repository (default: the current directory)
//
// It prints one line per broken link, FILE:LINE: TARGET: REASON, and exits 1
// if there is any. Links with a scheme (https:, mailto:) are not followed,
// and neither are links inside code.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"unicode"
)

func main() {
	root := "."
	if len(os.Args) > 1 {
		root = os.Args[1]
	}
	if err := run(root, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "linkcheck:", err)
		os.Exit(1)
	}
}

// errBroken says that at least one link is broken; run has printed them.
var errBroken = errors.New("broken links")

// pages returns the Markdown files that are checked, relative to root.
func pages(root string) ([]string, error) {
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		return nil, err
	}
	files := []string{"README.md", "CONTRIBUTING.md"}
	for _, d := range docs {
		files = append(files, filepath.Join("docs", filepath.Base(d)))
	}
	return files, nil
}

// run checks every page under root and prints each broken link to w.
func run(root string, w io.Writer) error {
	files, err := pages(root)
	if err != nil {
		return err
	}
	anchors := map[string][]string{} // page, relative to root -> its anchors
	broken := 0
	for _, f := range files {
		text, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			return err // README.md and CONTRIBUTING.md must exist
		}
		for _, l := range links(string(text)) {
			if reason := check(root, f, l.target, anchors); reason != "" {
				fmt.Fprintf(w, "%s:%d: %s: %s\n", f, l.line, l.target, reason)
				broken++
			}
		}
	}
	if broken > 0 {
		return fmt.Errorf("%w: %d", errBroken, broken)
	}
	return nil
}

// check returns why the link target in page (relative to root) is broken,
// or "" if it is not. anchors caches the anchors of the pages read so far.
func check(root, page, target string, anchors map[string][]string) string {
	path, anchor, _ := strings.Cut(target, "#")
	dest := page
	if path != "" {
		if strings.HasPrefix(path, "/") {
			return "absolute path; make it relative to " + page
		}
		dest = filepath.Join(filepath.Dir(page), filepath.FromSlash(path))
		if rel, err := filepath.Rel(".", dest); err != nil || strings.HasPrefix(rel, "..") {
			return "outside the repository"
		}
		if _, err := os.Stat(filepath.Join(root, dest)); err != nil {
			return "no such file"
		}
	}
	if anchor == "" || !strings.HasSuffix(dest, ".md") {
		return ""
	}
	as, ok := anchors[dest]
	if !ok {
		text, err := os.ReadFile(filepath.Join(root, dest))
		if err != nil {
			return err.Error()
		}
		as = headingAnchors(string(text))
		anchors[dest] = as
	}
	if !slices.Contains(as, anchor) {
		return "no heading with this anchor in " + filepath.ToSlash(dest)
	}
	return ""
}

// link is one link target and the line it is on.
type link struct {
	line   int
	target string
}

var (
	codeSpan   = regexp.MustCompile("`+[^`]*`+")
	linkTarget = regexp.MustCompile(`\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)`)
	hasScheme  = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*:`)
)

// links returns the relative link targets of a Markdown text: inline links
// and images, outside fenced code blocks and code spans.
func links(text string) []link {
	var out []link
	for i, line := range outsideFences(text) {
		if line == "" {
			continue
		}
		line = codeSpan.ReplaceAllString(line, "code")
		for _, m := range linkTarget.FindAllStringSubmatch(line, -1) {
			if t := m[1]; t != "" && !hasScheme.MatchString(t) {
				out = append(out, link{i + 1, t})
			}
		}
	}
	return out
}

// outsideFences returns the lines of text, with those inside fenced code
// blocks (and the fences) blanked, so that line numbers stay true.
func outsideFences(text string) []string {
	lines := strings.Split(text, "\n")
	fence := ""
	for i, l := range lines {
		t := strings.TrimLeft(l, " ")
		switch {
		case fence == "" && (strings.HasPrefix(t, "```") || strings.HasPrefix(t, "~~~")):
			fence = t[:3]
			lines[i] = ""
		case fence != "":
			if strings.HasPrefix(t, fence) {
				fence = ""
			}
			lines[i] = ""
		}
	}
	return lines
}

var atxHeading = regexp.MustCompile(`^ {0,3}#{1,6}[ \t]+(.*?)[ \t#]*$`)

// headingAnchors returns the anchors GitHub gives the ATX headings of a
// Markdown text, in order: a heading repeated gets -1, -2, ... appended.
func headingAnchors(text string) []string {
	var out []string
	seen := map[string]int{}
	for _, l := range outsideFences(text) {
		m := atxHeading.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		a := slug(m[1])
		if n := seen[a]; n > 0 {
			seen[a]++
			a = fmt.Sprintf("%s-%d", a, n)
		} else {
			seen[a] = 1
		}
		out = append(out, a)
	}
	return out
}

// slug is GitHub's anchor for a heading: the text of the heading (Markdown
// markup and link targets removed), lower-cased, keeping letters, marks,
// digits, '_', '-' and spaces, with each space turned into '-'.
func slug(heading string) string {
	heading = regexp.MustCompile(`\]\([^)]*\)`).ReplaceAllString(heading, "]")
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsMark(r) || unicode.IsDigit(r) || unicode.Is(unicode.Nl, r) || unicode.Is(unicode.No, r):
			b.WriteRune(r)
		}
	}
	return b.String()
}
