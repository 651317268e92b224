package rotation

import (
	"crypto/rand"
	"regexp"
	"strings"
	"time"
)

// MaxNameLen is Codat's limit on a key name.
const MaxNameLen = 50

// NameTimeLayout is the UTC timestamp in the names of keys and rotation
// ids: compact, sortable, and free of characters Codat might refuse.
const NameTimeLayout = "20060102T150405Z"

// NameSuffixLen is what the daemon appends to the prefix: a UTC
// timestamp (20261126T070000Z), a dash and six random characters.
const NameSuffixLen = len(NameTimeLayout) + 1 + 6

// MaxPrefixLen is the longest prefix that leaves room for the suffix.
const MaxPrefixLen = MaxNameLen - NameSuffixLen

const nameAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

// NewKeyName returns a key name: prefix, UTC timestamp, random suffix.
// The random part keeps names unique when two rotations share a second.
func NewKeyName(prefix string, now time.Time) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	for i := range b {
		b[i] = nameAlphabet[int(b[i])%len(nameAlphabet)]
	}
	return prefix + now.UTC().Format(NameTimeLayout) + "-" + string(b[:])
}

var suffixPattern = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}Z-[a-z0-9]{6}$`)

// OwnName reports whether name has the exact shape of a name the daemon
// makes with prefix. Only such keys are treated as orphans of a crash:
// a person's key that merely starts with the prefix is left alone (I6).
func OwnName(prefix, name string) bool {
	rest, ok := strings.CutPrefix(name, prefix)
	return ok && suffixPattern.MatchString(rest)
}
