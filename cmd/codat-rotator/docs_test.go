package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// docFiles are the operator's documents: the README and docs/.
func docFiles(tb testing.TB) []string {
	tb.Helper()
	files, err := filepath.Glob(repoRoot + "/docs/*.md")
	if err != nil || len(files) == 0 {
		tb.Fatalf("docs/*.md: %v", err)
	}
	return append([]string{readmeFile}, files...)
}

// snippet is code a document shows: a line of a fenced block, or an
// inline code span.
type snippet struct {
	file string
	line int
	text string
}

// codeSnippets returns the code of a Markdown document: each line of its
// fenced blocks (a line ending in a backslash joined with the next), and
// each inline code span, which may cross a line break.
func codeSnippets(file, doc string) []snippet {
	var out []snippet
	lines := strings.Split(doc, "\n")
	fence := false
	var para []string
	paraLine := 0
	flush := func() {
		text := strings.Join(para, " ")
		for _, m := range inlineCode.FindAllStringSubmatch(text, -1) {
			out = append(out, snippet{file, paraLine, m[1]})
		}
		para = nil
	}
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			flush()
			fence = !fence
			continue
		}
		if fence {
			start := i
			for strings.HasSuffix(l, "\\") && i+1 < len(lines) {
				i++
				l = strings.TrimSuffix(l, "\\") + " " + strings.TrimSpace(lines[i])
			}
			out = append(out, snippet{file, start + 1, l})
			continue
		}
		if strings.TrimSpace(l) == "" || strings.HasPrefix(l, "|") {
			flush()
			if strings.HasPrefix(l, "|") {
				para, paraLine = []string{l}, i+1
				flush()
			}
			continue
		}
		if len(para) == 0 {
			paraLine = i + 1
		}
		para = append(para, strings.TrimSpace(l))
	}
	flush()
	return out
}

var (
	inlineCode = regexp.MustCompile("`([^`]+)`")
	// An invocation of the binary: codat-rotator (or a path to it) and
	// what follows, up to the end of the shell command.
	invocation = regexp.MustCompile(`(?:^|[\s'"(])(?:\S*/)?codat-rotator\s+([^;|&)'"#]*)`)
	// Words before "codat-rotator" that make it a name, not the command:
	// a namespace, a unit, a Vault policy.
	notTheCommand = []string{"-n", "-u", "namespace", "write", "restart", "stop", "start", "status", "reload", "enable", "disable", "edit", "--now"}
	// Placeholders the documents give typed flags.
	placeholders = map[string]string{"N": "4", "L": "info", "F": "json", "…": "a-value-left-out"}
)

// docInvocations finds every invocation of codat-rotator in the code of
// the README and docs/: the command and its arguments, placeholders
// made values and optional brackets dropped.
func docInvocations(tb testing.TB) []struct {
	snippet
	args []string
} {
	tb.Helper()
	var out []struct {
		snippet
		args []string
	}
	for _, f := range docFiles(tb) {
		for _, s := range codeSnippets(f, mustRead(tb, f)) {
			for _, loc := range invocation.FindAllStringSubmatchIndex(s.text, -1) {
				before := strings.Fields(s.text[:loc[0]+1])
				if len(before) > 0 && slices.Contains(notTheCommand, before[len(before)-1]) {
					continue
				}
				words := strings.Fields(s.text[loc[2]:loc[3]])
				if len(words) == 0 || !regexp.MustCompile(`^[a-z][a-z-]*$`).MatchString(words[0]) {
					continue // a placeholder command (codat-rotator …), or output (codat-rotator rotate: …)
				}
				var args []string
				for _, w := range words {
					w = strings.Trim(w, "[]")
					if w == "" || w == "flags" {
						continue // an optional group's brackets, [flags]
					}
					if v, ok := placeholders[w]; ok {
						w = v
					}
					args = append(args, w)
				}
				out = append(out, struct {
					snippet
					args []string
				}{s, args})
			}
		}
	}
	return out
}

// TestDocCommandLines (issue 24): every codat-rotator command line the
// README and docs/ show, in code blocks and inline, parses with the
// binary's own flag parser: a command that does not exist, a flag a
// command does not take, or a value of the wrong type fails it. So does
// a row of a command table.
func TestDocCommandLines(t *testing.T) {
	parse := func(args []string) error {
		for _, c := range commands {
			if c.name == args[0] {
				return c.make(io.Discard, io.Discard).ParseFlags(args[1:])
			}
		}
		return fmt.Errorf("no command %q", args[0])
	}
	found := 0
	for _, inv := range docInvocations(t) {
		found++
		if err := parse(inv.args); err != nil {
			t.Errorf("%s:%d: codat-rotator %s: %v\n\tin: %s", inv.file, inv.line, strings.Join(inv.args, " "), err, inv.text)
		}
	}
	// The command tables: | `rotate [--target T] …` | what it does |.
	for _, f := range docFiles(t) {
		doc := mustRead(t, f)
		inTable := false
		for i, l := range strings.Split(doc, "\n") {
			switch {
			case strings.HasPrefix(l, "| command |"):
				inTable = true
				continue
			case !strings.HasPrefix(l, "|"):
				inTable = false
			}
			cells := strings.Split(l, "|")
			if !inTable || len(cells) < 3 || strings.HasPrefix(cells[1], "---") {
				continue
			}
			for _, m := range inlineCode.FindAllStringSubmatch(cells[1], -1) {
				var args []string
				for _, w := range strings.Fields(m[1]) {
					if w = strings.Trim(w, "[]"); w != "" {
						if v, ok := placeholders[w]; ok {
							w = v
						}
						args = append(args, w)
					}
				}
				found++
				if err := parse(args); err != nil {
					t.Errorf("%s:%d: the command table's codat-rotator %s: %v", f, i+1, m[1], err)
				}
			}
		}
	}
	if found < 40 {
		t.Errorf("found %d command lines in README.md and docs/; want the 40 or more they hold (is the extraction broken?)", found)
	}
	t.Logf("%d command lines parsed", found)
}

// TestDocConfigs: every config the README and docs/ write out in full
// (a heredoc into a .yaml file) is one the daemon accepts: no unknown
// or misspelt field, every value valid.
func TestDocConfigs(t *testing.T) {
	heredoc := regexp.MustCompile(`(?s)cat > \S+\.yaml <<'EOF'\n(.*?)\nEOF\n`)
	n := 0
	for _, f := range docFiles(t) {
		for _, m := range heredoc.FindAllStringSubmatch(mustRead(t, f), -1) {
			n++
			if _, err := ParseConfig(strings.NewReader(m[1]), func(string) string { return "set" }); err != nil {
				t.Errorf("%s: a config the daemon refuses:\n%s\n%v", f, m[1], err)
			}
		}
	}
	if n == 0 {
		t.Error("no config written out in README.md or docs/: the quick start's is gone?")
	}
}

// TestDocLinks: every relative link of the README and docs/ names a file
// that exists and, for a Markdown file, an anchor it has (a heading's
// GitHub slug, or an <a id>): moving a section must not leave a link, or
// an alert's runbook, pointing at nothing.
func TestDocLinks(t *testing.T) {
	link := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	anchorsOf := map[string]map[string]bool{}
	anchors := func(path string) map[string]bool {
		if a, ok := anchorsOf[path]; ok {
			return a
		}
		a := map[string]bool{}
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		fence := false
		seen := map[string]int{}
		for _, l := range strings.Split(string(raw), "\n") {
			if strings.HasPrefix(l, "```") {
				fence = !fence
			}
			if fence || !strings.HasPrefix(l, "#") {
				continue
			}
			s := slug(strings.TrimLeft(l, "#"))
			if n := seen[s]; n > 0 {
				a[fmt.Sprintf("%s-%d", s, n)] = true
			} else {
				a[s] = true
			}
			seen[s]++
		}
		for _, m := range regexp.MustCompile(`<a id="([^"]+)"></a>`).FindAllSubmatch(raw, -1) {
			a[string(m[1])] = true
		}
		anchorsOf[path] = a
		return a
	}
	for _, f := range docFiles(t) {
		for _, m := range link.FindAllStringSubmatch(mustRead(t, f), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			path, frag, _ := strings.Cut(target, "#")
			full := f
			if path != "" {
				full = filepath.Join(filepath.Dir(f), path)
			}
			if _, err := os.Stat(full); err != nil {
				t.Errorf("%s: link %s: %v", f, target, err)
				continue
			}
			if frag != "" && strings.HasSuffix(full, ".md") && !anchors(full)[frag] {
				t.Errorf("%s: link %s: %s has no anchor %q", f, target, full, frag)
			}
		}
	}
}

// slug is GitHub's anchor for a heading: lower case, punctuation but
// hyphens and underscores dropped, spaces made hyphens.
func slug(heading string) string {
	var b bytes.Buffer
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 127:
			b.WriteRune(r)
		}
	}
	return b.String()
}
