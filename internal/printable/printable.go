// Package printable makes text from outside (a Codat key's name, Codat's
// error message) safe to show on a terminal or in a log: control
// characters, which could move the cursor, rewrite a line, set the
// window title or hide text, are shown escaped instead of acted on.
package printable

import (
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Clean returns s with every control character (C0, DEL, C1), every
// bidirectional formatting character and every invalid UTF-8 byte
// written as a Go escape (\x1b, \u202e), so that what a terminal shows
// is what the text holds. Text without them is returned as it is.
func Clean(s string) string {
	if !needsCleaning(s, false) {
		return s
	}
	return clean(s, false)
}

// Writer returns a writer that passes what is written to w through
// Clean, but for line feeds and tabs: for a report printed to a
// terminal, whose lines hold text from outside.
func Writer(w io.Writer) io.Writer { return &writer{w: w} }

type writer struct{ w io.Writer }

func (w *writer) Write(p []byte) (int, error) {
	s := string(p)
	if !needsCleaning(s, true) {
		return w.w.Write(p)
	}
	if _, err := io.WriteString(w.w, clean(s, true)); err != nil {
		return 0, err
	}
	return len(p), nil
}

func unsafe(r rune, layout bool) bool {
	if layout && (r == '\n' || r == '\t') {
		return false
	}
	return unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) || r == '\u2028' || r == '\u2029'
}

func needsCleaning(s string, layout bool) bool {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, n := utf8.DecodeRuneInString(s[i:]); n <= 1 {
				return true
			}
		}
		if unsafe(r, layout) {
			return true
		}
	}
	return false
}

func clean(s string, layout bool) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unsafe(r, layout) && r < 0x100:
			fmt.Fprintf(&b, `\x%02x`, r)
		case unsafe(r, layout):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}
