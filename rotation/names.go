package rotation

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
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
// <prefix><tag>-<timestamp>-<random>. The tag is random, made once per
// target in a state file (store.Target.Tag) and kept in the secret's
// custom metadata, so that no other target, of this daemon or of
// another one with a target of the same name, makes keys of the same
// shape: each recognises only its own (docs/design.md#key-names).
type Names struct {
	Prefix string
	Tag    string
	// Also is another tag the target's keys carry: the one the secret's
	// metadata records when it differs from the state's (the state file
	// of an earlier owner of this path taken back, after the target made
	// keys under a new tag elsewhere). New names never use it.
	Also string
}

// withMetadata returns n recognising also the tag the secret's custom
// metadata records: the last publisher of this path named its keys so,
// and only this target publishes there (ownership moves by takeover).
func (n Names) withMetadata(md map[string]string) Names {
	if tag := md[MetadataKeyTag]; ValidTag(tag) && tag != n.Tag {
		n.Also = tag
	}
	return n
}

// NamesOf returns the naming of t's keys under tag, the target's tag in
// its state. With no tag yet (a target that never rotated), no name is
// its own.
func NamesOf(t Target, tag string) Names { return Names{Prefix: t.Prefix, Tag: tag} }

// NewTag returns the tag a target named name gets in a state file
// with fingerprint salt salt: six characters of an HMAC of the name
// under the state file's random salt. Unpredictable, and different in
// every state file (so two deployments' targets of one name differ),
// yet the same each time this state file asks (so a dry run shows the
// name the run will make).
func NewTag(salt []byte, name string) string {
	m := hmac.New(sha256.New, salt)
	m.Write([]byte("key-name-tag\x00" + name))
	sum := m.Sum(nil)
	var b [tagLen]byte
	for i := range b {
		b[i] = nameAlphabet[int(sum[i])%len(nameAlphabet)]
	}
	return string(b[:])
}

// ValidTag reports whether tag has the shape NewTag makes: a tag read
// from a secret's metadata is taken only then.
func ValidTag(tag string) bool {
	return len(tag) == tagLen && strings.Trim(tag, nameAlphabet) == ""
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
	for _, tag := range []string{n.Tag, n.Also} {
		if tag == "" {
			continue
		}
		if rest, ok := strings.CutPrefix(name, n.Prefix+tag+"-"); ok && suffixPattern.MatchString(rest) {
			return true
		}
	}
	return false
}
