// Package store owns the bbolt state file: per target, the keys the
// daemon knows, the journal of the rotation in flight and a bounded
// history of finished rotations. No raw key or header is ever written.
package store

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// SchemaVersion is the layout this build writes. A file with a newer
// version is refused, never rewritten.
const SchemaVersion = 1

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
)

var (
	bucketMeta    = []byte("meta")
	bucketTargets = []byte("targets")
	bucketHistory = []byte("history")
	keySchema     = []byte("schema")
	keyCreated    = []byte("created")
	keyIdentity   = []byte("identity")
	keyState      = []byte("state")
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
	bolt *bolt.DB
	path string
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
	db := &DB{bolt: b, path: path}
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
		ready = meta != nil && meta.Get(keySchema) != nil && meta.Get(keyIdentity) != nil && tx.Bucket(bucketTargets) != nil
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
			if err := meta.Put(keySchema, []byte(strconv.Itoa(SchemaVersion))); err != nil {
				return fmt.Errorf("init state file: %w", err)
			}
			if err := meta.Put(keyCreated, []byte(time.Now().UTC().Format(time.RFC3339))); err != nil {
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
		return nil
	})
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
// the write and is returned.
func (db *DB) Update(target string, fn func(*Target) error) error {
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		b, err := createTargetBucket(tx, target)
		if err != nil {
			return err
		}
		var t Target
		if raw := b.Get(keyState); raw != nil {
			if t, err = DecodeTarget(raw); err != nil {
				return err
			}
		}
		if err := fn(&t); err != nil {
			return err
		}
		pruneDeleted(&t)
		raw, err := json.Marshal(t)
		if err != nil {
			return err
		}
		return b.Put(keyState, raw)
	})
	if err != nil {
		return fmt.Errorf("update state of %q: %w", target, err)
	}
	return nil
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
	err = db.bolt.Update(func(tx *bolt.Tx) error {
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
		// Drop the oldest beyond the limit.
		c := h.Cursor()
		for n := h.Stats().KeyN + 1 - HistoryLimit; n > 0; n-- {
			k, _ := c.First()
			if k == nil {
				break
			}
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record history of %q: %w", target, err)
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
