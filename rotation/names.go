package rotation

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"regexp"
	"strings"
	"time"
)

// MaxNameLen is Codat's limit on a key name.
const MaxNameLen = 50

// NameTimeLayout is the UTC timestamp in the names of keys and rotation
// ids: compact, sortable, and free of characters Codat might refuse.
const NameTimeLayout = "20060102T150405Z"

// tagLen is the length of a target's tag in its keys' names.
const tagLen = 6

// NameSuffixLen is what the daemon appends to the prefix: the target's
// tag, a dash, a UTC timestamp (20261126T070000Z), a dash and six random
// characters.
const NameSuffixLen = tagLen + 1 + len(NameTimeLayout) + 1 + 6

// MaxPrefixLen is the longest prefix that leaves room for the suffix.
const MaxPrefixLen = MaxNameLen - NameSuffixLen

const nameAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

// Names is how one target names its keys:
// <prefix><tag>-<timestamp>-<random>. The tag is derived from the
// target's name, so targets that share a Codat client, and so see each
// other's keys, each recognise only their own (docs/design.md#key-names).
type Names struct {
	Prefix string
	Tag    string
}

// NamesOf returns the naming of t's keys.
func NamesOf(t Target) Names { return Names{Prefix: t.Prefix, Tag: NameTag(t.Name)} }

// NameTag is the short tag of a target in its keys' names: six
// characters of a hash of the target's name.
func NameTag(target string) string {
	sum := sha256.Sum256([]byte(target))
	return strings.ToLower(base32.StdEncoding.EncodeToString(sum[:5]))[:tagLen]
}

// New returns a new key name. The random part keeps names unique when
// two rotations share a second.
func (n Names) New(now time.Time) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	for i := range b {
		b[i] = nameAlphabet[int(b[i])%len(nameAlphabet)]
	}
	return n.Prefix + n.Tag + "-" + now.UTC().Format(NameTimeLayout) + "-" + string(b[:])
}

// Example shows the shape of a name made at now.
func (n Names) Example(now time.Time) string {
	return n.Prefix + n.Tag + "-" + now.UTC().Format(NameTimeLayout) + "-xxxxxx"
}

var suffixPattern = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}Z-[a-z0-9]{6}$`)

// Own reports whether name has the exact shape of a name this target
// makes. Only such keys can be the target's crash orphans: a person's key
// that merely starts with the prefix, another target's key and a key in
// the shape of older releases (prefix, timestamp, random, no tag) are
// not (I6); the state and Vault's history vouch for those.
func (n Names) Own(name string) bool {
	rest, ok := strings.CutPrefix(name, n.Prefix+n.Tag+"-")
	return ok && suffixPattern.MatchString(rest)
}
