// Package store owns the bbolt state file: per target, the keys the
// daemon knows, the journal of the rotation in flight and a bounded
// history of finished rotations. No raw key or header is ever written.
package store

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// SchemaVersion is the layout this build writes. A file with a newer
// version is refused, never rewritten. Version 2 added the per-target
// key tag, key fingerprints, the fingerprint salt and the incarnations
// (docs/design.md#key-names, #served-by-value, #ownership); a version 1
// file is read as is and marked 2 at its first open for writing, since a
// release that knows only 1 would refuse the new fields.
const SchemaVersion = 2

// IncarnationsKept is how many of the latest processes that opened the
// file for writing it remembers (docs/design.md#ownership).
const IncarnationsKept = 64

// Limits that keep the file small however long the daemon runs.
const (
	// HistoryLimit is the number of finished rotations kept per target.
	HistoryLimit = 100
	// DeletedKeysLimit is the number of deleted keys remembered per target.
	DeletedKeysLimit = 20
)

// Errors of Open and of reading records.
var (
	// ErrLocked means another process holds the file.
	ErrLocked = errors.New("state file is in use by another codat-rotator")
	// ErrCorrupt means the file is not a readable bbolt file, or fails
	// its consistency check. It is left untouched.
	ErrCorrupt = errors.New("state file is corrupt")
	// ErrForeign means the file is a bbolt file of some other program.
	ErrForeign = errors.New("not a codat-rotator state file")
	// ErrNewerSchema means a newer codat-rotator wrote the file.
	ErrNewerSchema = errors.New("state file was written by a newer codat-rotator")
	// ErrReadOnly means a write to a file opened read-only.
	ErrReadOnly = errors.New("state file is open read-only")
)

var (
	bucketMeta    = []byte("meta")
	bucketTargets = []byte("targets")
	bucketHistory = []byte("history")
	// bucketKeyIndex maps a key id to the targets whose state mentions
	// it, so that Claims reads those few states, not every target's.
	bucketKeyIndex = []byte("key-index")
	keySchema      = []byte("schema")
	keyCreated     = []byte("created")
	keyIdentity    = []byte("identity")
	keySalt        = []byte("fingerprint-salt")
	keyIncarn      = []byte("incarnations")
	keyState       = []byte("state")
)

// Options tune Open.
type Options struct {
	// LockTimeout is how long Open waits for another process to release
	// the file (default 500ms). It is never zero: bbolt would wait for ever.
	LockTimeout time.Duration
	// ReadOnly opens without writing (a shared lock), for status and keys.
	ReadOnly bool
}

// DB is an open state file.
type DB struct {
	bolt     *bolt.DB
	path     string
	commits  committer
	readOnly bool
	// incarnation is this process's own, recorded at its first use.
	incarnation     string
	incarnationErr  error
	incarnationOnce sync.Once
}

// Open opens or creates the state file at path. It checks the file before
// any write: a corrupt, foreign or newer file is reported and left as it
// is; a file held by a running daemon gives ErrLocked naming its pid when
// it can be found.
func Open(path string, opts Options) (*DB, error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 500 * time.Millisecond
	}
	fi, err := os.Stat(path)
	switch {
	case err == nil && fi.IsDir():
		return nil, fmt.Errorf("open state file %s: is a directory", path)
	case err == nil && fi.Size() > 0:
		// Look before writing anything: bbolt would initialise an empty
		// file, and a read-write open must not be the first to touch a
		// file that is damaged or not ours.
		if err := verify(path, opts.LockTimeout); err != nil {
			return nil, err
		}
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("open state file: %w", err)
	}
	if opts.ReadOnly && (err != nil || fi.Size() == 0) {
		return nil, fmt.Errorf("open state file %s: %w", path, os.ErrNotExist)
	}
	b, err := openBolt(path, opts.LockTimeout, opts.ReadOnly)
	if err != nil {
		return nil, err
	}
	db := &DB{bolt: b, path: path, readOnly: opts.ReadOnly}
	if !opts.ReadOnly {
		if err := db.init(); err != nil {
			b.Close()
			return nil, err
		}
	}
	return db, nil
}

// openBolt opens the file, turning bbolt's failures into ours.
func openBolt(path string, timeout time.Duration, readOnly bool) (db *bolt.DB, err error) {
	// A page past the end of a truncated file faults (SIGBUS) when read;
	// with this set it panics instead, and the recover below reports it.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		// bbolt can panic on a damaged file.
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("%w: %s: %v (the file was left untouched)", ErrCorrupt, path, r)
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout, ReadOnly: readOnly})
	switch {
	case err == nil:
		return db, nil
	case errors.Is(err, berrors.ErrTimeout):
		holder := ""
		if pid := lockHolder(path); pid > 0 {
			holder = fmt.Sprintf(" (pid %d%s)", pid, commandOf(pid))
		}
		return nil, fmt.Errorf("%w%s: %s is locked", ErrLocked, holder, path)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrVersionMismatch), errors.Is(err, berrors.ErrChecksum),
		strings.HasPrefix(err.Error(), "file size too small"): // bbolt has no sentinel for it
		return nil, fmt.Errorf("%w: %s: %v (the file was left untouched)", ErrCorrupt, path, err)
	}
	return nil, fmt.Errorf("open state file %s: %w", path, err)
}

// verify opens an existing file read-only and checks that it is a
// consistent codat-rotator state file of a schema this build knows.
func verify(path string, timeout time.Duration) (err error) {
	db, err := openBolt(path, timeout, true)
	if err != nil {
		return err
	}
	defer db.Close()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %s: %v (the file was left untouched)", ErrCorrupt, path, r)
		}
	}()
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("open state file: %w", err)
	}
	return db.View(func(tx *bolt.Tx) error {
		// Pages the meta counts but the file lacks fault (SIGBUS) when
		// touched: no recover catches that. Look before Check does.
		if fi.Size() < tx.Size() {
			return fmt.Errorf("%w: %s: truncated: %d bytes, its pages need %d (the file was left untouched)", ErrCorrupt, path, fi.Size(), tx.Size())
		}
		if cerr := firstError(tx.Check()); cerr != nil {
			return fmt.Errorf("%w: %s: consistency check: %v (the file was left untouched)", ErrCorrupt, path, cerr)
		}
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			empty := true
			_ = tx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil })
			if empty {
				return nil // an initialised but unused file: ours to set up
			}
			return fmt.Errorf("%w: %s has no codat-rotator schema (the file was left untouched)", ErrForeign, path)
		}
		v, err := strconv.Atoi(string(meta.Get(keySchema)))
		if err != nil {
			return fmt.Errorf("%w: %s: schema version %q unreadable (the file was left untouched)", ErrCorrupt, path, meta.Get(keySchema))
		}
		if v > SchemaVersion {
			return fmt.Errorf("%w: %s has schema %d, this build knows %d; upgrade codat-rotator (the file was left untouched)", ErrNewerSchema, path, v, SchemaVersion)
		}
		return nil
	})
}

// init creates the top-level buckets and the schema version. An already
// initialised file is not written at all.
func (db *DB) init() error {
	ready := false
	_ = db.bolt.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		ready = meta != nil && string(meta.Get(keySchema)) == strconv.Itoa(SchemaVersion) && meta.Get(keyIdentity) != nil &&
			meta.Get(keySalt) != nil && tx.Bucket(bucketTargets) != nil && tx.Bucket(bucketKeyIndex) != nil
		return nil
	})
	if ready {
		return nil
	}
	return db.bolt.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return fmt.Errorf("init state file: %w", err)
		}
		if meta.Get(keySchema) == nil {
			if err := meta.Put(keyCreated, []byte(time.Now().UTC().Format(time.RFC3339))); err != nil {
				return fmt.Errorf("init state file: %w", err)
			}
		}
		// verify refused a newer schema before this: an older one is
		// upgraded in place (its records read as they are).
		if err := meta.Put(keySchema, []byte(strconv.Itoa(SchemaVersion))); err != nil {
			return fmt.Errorf("init state file: %w", err)
		}
		if meta.Get(keySalt) == nil {
			// The salt of the key fingerprints (docs/design.md#served-by-value):
			// a fingerprint is never comparable across state files.
			var b [32]byte
			if _, err := rand.Read(b[:]); err != nil {
				return fmt.Errorf("init state file: %w", err)
			}
			if err := meta.Put(keySalt, []byte(hex.EncodeToString(b[:]))); err != nil {
				return fmt.Errorf("init state file: %w", err)
			}
		}
		if meta.Get(keyIdentity) == nil {
			// The identity that owns targets in Vault (docs/design.md#ownership);
			// a file from before ownership gets one on its first open.
			var b [8]byte
			if _, err := rand.Read(b[:]); err != nil {
				return fmt.Errorf("init state file: %w", err)
			}
			if err := meta.Put(keyIdentity, []byte(hex.EncodeToString(b[:]))); err != nil {
				return fmt.Errorf("init state file: %w", err)
			}
		}
		if _, err := tx.CreateBucketIfNotExists(bucketTargets); err != nil {
			return fmt.Errorf("init state file: %w", err)
		}
		if tx.Bucket(bucketKeyIndex) == nil {
			if err := buildKeyIndex(tx); err != nil {
				return fmt.Errorf("init state file: index the keys: %w", err)
			}
		}
		return nil
	})
}

// buildKeyIndex indexes every target's keys: a file from before the
// index gets it at its first open for writing.
func buildKeyIndex(tx *bolt.Tx) error {
	if _, err := tx.CreateBucket(bucketKeyIndex); err != nil {
		return err
	}
	root := tx.Bucket(bucketTargets)
	return root.ForEach(func(name, v []byte) error {
		if v != nil {
			return nil
		}
		raw := root.Bucket(name).Get(keyState)
		if raw == nil {
			return nil
		}
		t, err := DecodeTarget(raw)
		if err != nil {
			return fmt.Errorf("state of %q: %w", name, err)
		}
		return reindex(tx, string(name), nil, mentioned(t))
	})
}

// mentioned is the set of key ids a target's state names.
func mentioned(t Target) map[string]bool {
	out := make(map[string]bool, len(t.Keys)+1)
	for _, k := range t.Keys {
		out[k.ID] = true
	}
	if t.SharedKey != "" {
		out[t.SharedKey] = true
	}
	return out
}

// reindex moves target's entries in the key index from the ids before
// to the ids after.
func reindex(tx *bolt.Tx, target string, before, after map[string]bool) error {
	idx := tx.Bucket(bucketKeyIndex)
	if idx == nil {
		return nil // a file opened before the index: built at the next open
	}
	edit := func(id string, add bool) error {
		names := indexed(idx, id)
		i := slices.Index(names, target)
		switch {
		case add && i < 0:
			names = append(names, target)
			sort.Strings(names)
		case !add && i >= 0:
			names = slices.Delete(names, i, i+1)
		default:
			return nil
		}
		if len(names) == 0 {
			return idx.Delete([]byte(id))
		}
		return idx.Put([]byte(id), []byte(strings.Join(names, "\n")))
	}
	for id := range before {
		if !after[id] {
			if err := edit(id, false); err != nil {
				return err
			}
		}
	}
	for id := range after {
		if !before[id] {
			if err := edit(id, true); err != nil {
				return err
			}
		}
	}
	return nil
}

func indexed(idx *bolt.Bucket, id string) []string {
	raw := idx.Get([]byte(id))
	if len(raw) == 0 {
		return nil
	}
	return strings.Split(string(raw), "\n")
}

// Identity returns the state file's identity: the owner it records in
// the secrets it publishes. Empty only in a file opened read-only that
// no release with ownership has opened for writing.
func (db *DB) Identity() (string, error) {
	var id string
	err := db.bolt.View(func(tx *bolt.Tx) error {
		if meta := tx.Bucket(bucketMeta); meta != nil {
			id = string(meta.Get(keyIdentity))
		}
		return nil
	})
	return id, err
}

// incarnate records a new incarnation for this process: each process
// that opens the file for writing is one, and the file remembers the
// latest IncarnationsKept. A copy of the file (a backup restored, a
// volume cloned) remembers only the incarnations before the copy, so a
// process on the original that publishes after the copy was made is
// recognisably not its own past (docs/design.md#ownership).
func (db *DB) incarnate() error {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("init state file: %w", err)
	}
	inc := hex.EncodeToString(b[:])
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		list := incarnations(meta)
		list = append(list, inc)
		if len(list) > IncarnationsKept {
			list = list[len(list)-IncarnationsKept:]
		}
		raw, err := json.Marshal(list)
		if err != nil {
			return err
		}
		return meta.Put(keyIncarn, raw)
	})
	if err != nil {
		return fmt.Errorf("init state file: record this process: %w", err)
	}
	db.incarnation = inc
	return nil
}

func incarnations(meta *bolt.Bucket) []string {
	var list []string
	if raw := meta.Get(keyIncarn); raw != nil {
		_ = json.Unmarshal(raw, &list) // unreadable: as if none were recorded
	}
	return list
}

// Incarnation returns this process's incarnation, recording it in the
// file at the first call (so that opening a file writes nothing): empty
// when the file was opened read-only.
func (db *DB) Incarnation() (string, error) {
	if db.readOnly {
		return "", nil
	}
	db.incarnationOnce.Do(func() { db.incarnationErr = db.incarnate() })
	return db.incarnation, db.incarnationErr
}

// KnownIncarnation reports whether inc is one of the processes this
// file remembers having opened it for writing.
func (db *DB) KnownIncarnation(inc string) bool {
	known := false
	_ = db.bolt.View(func(tx *bolt.Tx) error {
		if meta := tx.Bucket(bucketMeta); meta != nil {
			for _, i := range incarnations(meta) {
				known = known || i == inc
			}
		}
		return nil
	})
	return known
}

// Salt returns the salt of this file's key fingerprints; nil in a file
// opened read-only that no release with fingerprints has written.
func (db *DB) Salt() []byte {
	var salt []byte
	_ = db.bolt.View(func(tx *bolt.Tx) error {
		if meta := tx.Bucket(bucketMeta); meta != nil {
			salt = bytes.Clone(meta.Get(keySalt))
		}
		return nil
	})
	return salt
}

// Claims are what the targets of a state file hold of some keys.
type Claims struct {
	// Own maps a key id to the target that records it as its own (made
	// or adopted, not deleted).
	Own map[string]string
	// Serve maps a key id to a target whose secret serves it: its active
	// key, or the other target's key its secret was found serving
	// (SharedKey).
	Serve map[string]string
	// Keep maps a key id to the target that records it retiring the
	// longest, with when that target may delete it: no other target
	// deletes it sooner (its consumers may hold it until then).
	Keep map[string]Keep
}

// Keep is a target that keeps a key until a time.
type Keep struct {
	Target string
	Until  time.Time
}

// Claims returns what the targets other than except hold of ids: one
// read of every target's state, for the moments a target is about to
// take on a key it did not make or to delete one. A target whose state
// records the Vault location vault (except's own) is except under an
// older name, and left out too.
func (db *DB) Claims(except, vault string, ids []string) (Claims, error) {
	out := Claims{Own: map[string]string{}, Serve: map[string]string{}, Keep: map[string]Keep{}}
	if len(ids) == 0 {
		return out, nil
	}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	err := db.bolt.View(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketTargets)
		if root == nil {
			return nil
		}
		// The targets to read: those the key index names, or, in a file
		// no release with the index has opened for writing, every one.
		var names [][]byte
		if idx := tx.Bucket(bucketKeyIndex); idx != nil {
			seen := map[string]bool{}
			for _, id := range ids {
				for _, n := range indexed(idx, id) {
					if !seen[n] {
						seen[n] = true
						names = append(names, []byte(n))
					}
				}
			}
		} else {
			_ = root.ForEach(func(name, v []byte) error {
				if v == nil {
					names = append(names, bytes.Clone(name))
				}
				return nil
			})
		}
		for _, name := range names {
			if string(name) == except {
				continue
			}
			b := root.Bucket(name)
			if b == nil {
				continue
			}
			raw := b.Get(keyState)
			if raw == nil || !mentions(raw, ids) {
				continue
			}
			t, err := DecodeTarget(raw)
			if err != nil {
				return fmt.Errorf("state of %q: %w", name, err)
			}
			if vault != "" && t.Vault == vault {
				continue
			}
			if want[t.SharedKey] {
				out.Serve[t.SharedKey] = string(name)
			}
			for _, k := range t.Keys {
				if !want[k.ID] || k.State == KeyDeleted {
					continue
				}
				if k.Origin.Managed() {
					out.Own[k.ID] = string(name)
				}
				if k.State == KeyActive {
					out.Serve[k.ID] = string(name)
				}
				if k.State == KeyRetiring && k.Origin.Managed() && k.DeleteAfter.After(out.Keep[k.ID].Until) {
					out.Keep[k.ID] = Keep{Target: string(name), Until: k.DeleteAfter}
				}
			}
		}
		return nil
	})
	return out, err
}

func mentions(raw []byte, ids []string) bool {
	for _, id := range ids {
		if bytes.Contains(raw, []byte(id)) {
			return true
		}
	}
	return false
}

// Path returns the file's path.
func (db *DB) Path() string { return db.path }

// Close closes the file, releasing its lock.
func (db *DB) Close() error { return db.bolt.Close() }

// Load returns the state of a target; the zero Target when it has none.
func (db *DB) Load(target string) (Target, error) {
	var t Target
	err := db.bolt.View(func(tx *bolt.Tx) error {
		b := targetBucket(tx, target)
		if b == nil {
			return nil
		}
		raw := b.Get(keyState)
		if raw == nil {
			return nil
		}
		var err error
		t, err = DecodeTarget(raw) // decoding copies out of the mmap
		return err
	})
	if err != nil {
		return Target{}, fmt.Errorf("load state of %q: %w", target, err)
	}
	return t, nil
}

// Update reads a target's state, lets fn change it and writes it back in
// one transaction: all of fn's change lands, or none. fn's error aborts
// the write and is returned. Update returns once the change is on disk.
// Concurrent updates share commits (commit.go), so fn may be called more
// than once, each time with the state as stored; only the last call's
// change lands, and fn must leave nothing outside it that an earlier
// call's result would make wrong. A change that leaves the state as it
// was writes nothing.
func (db *DB) Update(target string, fn func(*Target) error) error {
	err := db.write(func(tx *bolt.Tx) (bool, error) { return updateTarget(tx, target, fn) })
	if err != nil {
		return fmt.Errorf("update state of %q: %w", target, err)
	}
	return nil
}

// updateTarget applies fn to the target's state in tx; it writes, and
// reports a change, only when the state differs from what is stored.
func updateTarget(tx *bolt.Tx, target string, fn func(*Target) error) (bool, error) {
	b, err := createTargetBucket(tx, target)
	if err != nil {
		return false, err
	}
	var t Target
	old := b.Get(keyState)
	if old != nil {
		if t, err = DecodeTarget(old); err != nil {
			return false, err
		}
	}
	before := mentioned(t)
	if err := fn(&t); err != nil {
		return false, err
	}
	pruneDeleted(&t)
	raw, err := json.Marshal(t)
	if err != nil {
		return false, err
	}
	if bytes.Equal(raw, old) {
		return false, nil
	}
	if err := reindex(tx, target, before, mentioned(t)); err != nil {
		return false, err
	}
	return true, b.Put(keyState, raw)
}

// pruneDeleted forgets the oldest deleted keys beyond DeletedKeysLimit.
func pruneDeleted(t *Target) {
	var deleted []int
	for i, k := range t.Keys {
		if k.State == KeyDeleted {
			deleted = append(deleted, i)
		}
	}
	if len(deleted) <= DeletedKeysLimit {
		return
	}
	sort.Slice(deleted, func(a, b int) bool { return t.Keys[deleted[a]].Deleted.Before(t.Keys[deleted[b]].Deleted) })
	drop := map[int]bool{}
	for _, i := range deleted[:len(deleted)-DeletedKeysLimit] {
		drop[i] = true
	}
	kept := make([]Key, 0, len(t.Keys)-len(drop)) // never reuse a slice the caller may hold
	for i, k := range t.Keys {
		if !drop[i] {
			kept = append(kept, k)
		}
	}
	t.Keys = kept
}

// AddHistory records a finished rotation, keeping the newest HistoryLimit.
func (db *DB) AddHistory(target string, r Rotation) error {
	raw, err := json.Marshal(r)
	if err != nil {
		return err
	}
	err = db.write(func(tx *bolt.Tx) (bool, error) {
		return true, addHistory(tx, target, raw)
	})
	if err != nil {
		return fmt.Errorf("record history of %q: %w", target, err)
	}
	return nil
}

// Finish records a finished rotation: fn's change to the target's
// state and the rotation's history record, in one transaction (one
// fsync where Update and AddHistory would take two).
func (db *DB) Finish(target string, fn func(*Target) error, r Rotation) error {
	raw, err := json.Marshal(r)
	if err != nil {
		return err
	}
	err = db.write(func(tx *bolt.Tx) (bool, error) {
		if _, err := updateTarget(tx, target, fn); err != nil {
			return false, err
		}
		return true, addHistory(tx, target, raw)
	})
	if err != nil {
		return fmt.Errorf("record rotation of %q: %w", target, err)
	}
	return nil
}

// addHistory appends a finished rotation to the target's history and
// drops the oldest beyond HistoryLimit.
func addHistory(tx *bolt.Tx, target string, raw []byte) error {
	b, err := createTargetBucket(tx, target)
	if err != nil {
		return err
	}
	h, err := b.CreateBucketIfNotExists(bucketHistory)
	if err != nil {
		return err
	}
	seq, err := h.NextSequence()
	if err != nil {
		return err
	}
	if err := h.Put(seqKey(seq), raw); err != nil {
		return err
	}
	// Counted, not read from Stats: Stats sees only committed pages, and
	// a shared commit may add several records to one target.
	n := 0
	c := h.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		n++
	}
	for n -= HistoryLimit; n > 0; n-- {
		k, _ := c.First()
		if k == nil {
			break
		}
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

// History returns up to limit finished rotations, newest first.
func (db *DB) History(target string, limit int) ([]Rotation, error) {
	var out []Rotation
	err := db.bolt.View(func(tx *bolt.Tx) error {
		b := targetBucket(tx, target)
		if b == nil {
			return nil
		}
		h := b.Bucket(bucketHistory)
		if h == nil {
			return nil
		}
		c := h.Cursor()
		for k, v := c.Last(); k != nil && len(out) < limit; k, v = c.Prev() {
			r, err := DecodeRotation(v)
			if err != nil {
				return err
			}
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read history of %q: %w", target, err)
	}
	return out, nil
}

// Rename moves the state and history of target from to target to (a
// target renamed in the config, same Vault location), in one
// transaction, the key index with them. to must have no state of its
// own (Target.Fresh); a from with no state moves nothing.
func (db *DB) Rename(from, to string) error {
	if db.readOnly {
		return ErrReadOnly
	}
	err := db.write(func(tx *bolt.Tx) (bool, error) {
		src := targetBucket(tx, from)
		if src == nil || from == to {
			return false, nil
		}
		var st Target
		if raw := src.Get(keyState); raw != nil {
			var err error
			if st, err = DecodeTarget(raw); err != nil {
				return false, fmt.Errorf("state of %q: %w", from, err)
			}
		}
		if dst := targetBucket(tx, to); dst != nil {
			if raw := dst.Get(keyState); raw != nil {
				cur, err := DecodeTarget(raw)
				if err != nil {
					return false, fmt.Errorf("state of %q: %w", to, err)
				}
				if !cur.Fresh() {
					return false, fmt.Errorf("target %q has state of its own", to)
				}
			}
		}
		if _, err := updateTarget(tx, to, func(t *Target) error { *t = st; return nil }); err != nil {
			return false, err
		}
		if h := src.Bucket(bucketHistory); h != nil {
			c := h.Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if err := addHistory(tx, to, bytes.Clone(v)); err != nil {
					return false, err
				}
			}
		}
		if err := reindex(tx, from, mentioned(st), nil); err != nil {
			return false, err
		}
		return true, tx.Bucket(bucketTargets).DeleteBucket([]byte(from))
	})
	if err != nil {
		return fmt.Errorf("move the state of %q to %q: %w", from, to, err)
	}
	return nil
}

// Targets returns the names of the targets with state, sorted.
func (db *DB) Targets() ([]string, error) {
	var out []string
	err := db.bolt.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTargets)
		if b == nil {
			return nil
		}
		return b.ForEachBucket(func(k []byte) error {
			out = append(out, string(k))
			return nil
		})
	})
	return out, err
}

// Check runs bbolt's consistency check over the whole file.
func (db *DB) Check() error {
	return db.bolt.View(func(tx *bolt.Tx) error {
		if err := firstError(tx.Check()); err != nil {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		return nil
	})
}

func targetBucket(tx *bolt.Tx, target string) *bolt.Bucket {
	ts := tx.Bucket(bucketTargets)
	if ts == nil {
		return nil
	}
	return ts.Bucket([]byte(target))
}

func createTargetBucket(tx *bolt.Tx, target string) (*bolt.Bucket, error) {
	if target == "" {
		return nil, errors.New("empty target name")
	}
	ts, err := tx.CreateBucketIfNotExists(bucketTargets)
	if err != nil {
		return nil, err
	}
	return ts.CreateBucketIfNotExists([]byte(target))
}

func seqKey(n uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, n)
	return b
}

// commandOf is ": " and pid's command line, so that an operator can tell
// a daemon from a rotate in progress; empty when it cannot be read.
func commandOf(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return ""
	}
	return ": " + strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}

// lockHolder finds the pid holding a lock on path in /proc/locks, or 0.
func lockHolder(path string) int {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0
	}
	f, err := os.Open("/proc/locks")
	if err != nil {
		return 0
	}
	defer f.Close()
	suffix := ":" + strconv.FormatUint(st.Ino, 10)
	s := bufio.NewScanner(f)
	for s.Scan() {
		// 1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234567 0 EOF
		fields := strings.Fields(s.Text())
		if len(fields) < 6 || fields[1] != "FLOCK" || !strings.HasSuffix(fields[5], suffix) {
			continue
		}
		if pid, err := strconv.Atoi(fields[4]); err == nil && pid != os.Getpid() {
			return pid
		}
	}
	return 0
}

// firstError drains a check: bbolt's checker goroutine keeps reading the
// transaction until the channel is closed, so stopping early races with
// the rollback and leaks the goroutine.
func firstError(errs <-chan error) error {
	var first error
	for err := range errs {
		if first == nil {
			first = err
		}
	}
	return first
}
