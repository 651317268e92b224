package printable

import (
	"strings"
	"testing"
)

func TestClean(t *testing.T) {
	for in, want := range map[string]string{
		"codat-rotator-20261204T0300Z-abc123": "codat-rotator-20261204T0300Z-abc123",
		"café – ünïcode 名前":                   "café – ünïcode 名前",
		"\x1b]0;pwned\x07title":               `\x1b]0;pwned\x07title`,
		"\x1b[2K\rall good":                   `\x1b[2K\x0dall good`,
		"two\nlines\ttab":                     `two\x0alines\x09tab`,
		"del\x7f c1\u009b":                    `del\x7f c1\x9b`,
		"bidi \u202eevil\u202c":               `bidi \u202eevil\u202c`,
		"bad \xff utf8":                       `bad \xff utf8`,
	} {
		if got := Clean(in); got != want {
			t.Errorf("Clean(%q): got %q, want %q", in, got, want)
		}
	}
}

func TestWriterKeepsLayout(t *testing.T) {
	var b strings.Builder
	w := Writer(&b)
	if _, err := w.Write([]byte("prod\n  key\tname \x1b[31mred\x1b[0m\n")); err != nil {
		t.Fatal(err)
	}
	if got, want := b.String(), "prod\n  key\tname \\x1b[31mred\\x1b[0m\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
