package store_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/store"
	"github.com/codat-rotator/codat-rotator/store/storetest"
)

const target = "production"

var t0 = time.Date(2025, 3, 10, 3, 0, 0, 0, time.UTC)

// sampleTarget is a target in the middle of a rotation: a foreign key, a
// retiring key, the active key, a pending key with its journal, and a halt.
func sampleTarget() store.Target {
	return store.Target{
		Keys: []store.Key{
			{ID: "f0000000-0000-4000-8000-000000000001", Name: "portal key", Origin: store.OriginForeign, State: store.KeyForeign, Created: t0.Add(-90 * 24 * time.Hour)},
			{ID: "a0000000-0000-4000-8000-000000000002", Name: "bootstrap", Origin: store.OriginAdopted, State: store.KeyRetiring, Created: t0.Add(-14 * 24 * time.Hour), Published: t0.Add(-14 * 24 * time.Hour), DeleteAfter: t0.Add(24 * time.Hour), RotationID: "r-adopt"},
			{ID: "c0000000-0000-4000-8000-000000000003", Name: "codat-rotator-20250303T030000Z-1a2b3c", Origin: store.OriginCreated, State: store.KeyActive, Created: t0.Add(-7 * 24 * time.Hour), Published: t0.Add(-7*24*time.Hour + time.Second), RotationID: "r-1"},
			{ID: "c0000000-0000-4000-8000-000000000004", Name: "codat-rotator-20250310T030000Z-4d5e6f", Origin: store.OriginCreated, State: store.KeyPending, Created: t0.Add(2 * time.Second), RotationID: "r-2"},
		},
		Journal: &store.Journal{
			RotationID:   "r-2",
			Step:         store.StepPublish,
			Started:      t0,
			Updated:      t0.Add(3*time.Second + 250*time.Millisecond),
			Emergency:    true,
			Revoke:       "f0000000-0000-4000-8000-000000000001",
			Name:         "codat-rotator-20250310T030000Z-4d5e6f",
			NewKeyID:     "c0000000-0000-4000-8000-000000000004",
			PrevKeyID:    "c0000000-0000-4000-8000-000000000003",
			VaultVersion: 7,
			RoomKeyID:    "a0000000-0000-4000-8000-000000000002",
		},
		Halted:              true,
		HaltReason:          "publish to vault: check-and-set mismatch",
		HaltedAt:            t0.Add(5 * time.Minute),
		LastAttempt:         t0,
		LastSuccess:         t0.Add(-7 * 24 * time.Hour),
		LastResult:          "failed",
		LastError:           "publish to vault: check-and-set mismatch",
		ConsecutiveFailures: 3,
	}
}

func sampleRotation(i int) store.Rotation {
	start := t0.Add(time.Duration(i) * 7 * 24 * time.Hour)
	return store.Rotation{
		ID:        fmt.Sprintf("r-%05d", i),
		Started:   start,
		Finished:  start.Add(4*time.Second + 125*time.Millisecond),
		Result:    "success",
		Emergency: i%10 == 0,
		NewKeyID:  fmt.Sprintf("c%07d-0000-4000-8000-000000000000", i),
		Retired:   []string{fmt.Sprintf("c%07d-0000-4000-8000-000000000000", i-1)},
	}
}

func deepEqual[T any](tb testing.TB, what string, got, want T) {
	tb.Helper()
	if !reflect.DeepEqual(got, want) {
		tb.Errorf("%s:\n got %+v\nwant %+v", what, got, want)
	}
}

func mustUpdate(tb testing.TB, db *store.DB, target string, fn func(*store.Target) error) {
	tb.Helper()
	if err := db.Update(target, fn); err != nil {
		tb.Fatalf("update: %v", err)
	}
}

func mustLoad(tb testing.TB, db *store.DB, target string) store.Target {
	tb.Helper()
	t, err := db.Load(target)
	if err != nil {
		tb.Fatalf("load: %v", err)
	}
	return t
}

// set returns an Update fn that stores a copy of t: Update prunes st.Keys
// in place, and t must stay the test's expectation.
func set(t store.Target) func(*store.Target) error {
	return func(st *store.Target) error {
		*st = t
		st.Keys = slices.Clone(t.Keys)
		if t.Journal != nil {
			j := *t.Journal
			st.Journal = &j
		}
		return nil
	}
}

func fileSum(tb testing.TB, path string) [sha256.Size]byte {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatalf("read state file: %v", err)
	}
	return sha256.Sum256(b)
}

func TestOpen(t *testing.T) {
	t.Run("creates the file with buckets and schema", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "state.db")
		db := storetest.MustOpenPath(t, path)
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := fi.Mode().Perm(), os.FileMode(0o600); got != want {
			t.Errorf("mode: got %v, want %v", got, want)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}

		b, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		err = b.View(func(tx *bolt.Tx) error {
			meta := tx.Bucket([]byte("meta"))
			if meta == nil {
				return errors.New("no meta bucket")
			}
			if got, want := string(meta.Get([]byte("schema"))), strconv.Itoa(store.SchemaVersion); got != want {
				t.Errorf("schema: got %q, want %q", got, want)
			}
			if _, err := time.Parse(time.RFC3339, string(meta.Get([]byte("created")))); err != nil {
				t.Errorf("created: %v", err)
			}
			if tx.Bucket([]byte("targets")) == nil {
				t.Error("no targets bucket")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("reopen keeps the data", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "state.db")
		db := storetest.MustOpenPath(t, path)
		want := sampleTarget()
		mustUpdate(t, db, target, set(want))
		if err := db.AddHistory(target, sampleRotation(1)); err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}

		db = storetest.MustOpenPath(t, path)
		deepEqual(t, "target", mustLoad(t, db, target), want)
		targets, err := db.Targets()
		if err != nil {
			t.Fatal(err)
		}
		deepEqual(t, "targets", targets, []string{target})
		h, err := db.History(target, 10)
		if err != nil {
			t.Fatal(err)
		}
		deepEqual(t, "history", h, []store.Rotation{sampleRotation(1)})
	})

	t.Run("reopen writes nothing", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "state.db")
		writeValid(t, path)
		before := fileSum(t, path)
		db := storetest.MustOpenPath(t, path)
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		if fileSum(t, path) != before {
			t.Error("opening and closing an initialised file changed it")
		}
	})

	t.Run("unknown target is the zero target", func(t *testing.T) {
		db := storetest.MustOpen(t)
		mustUpdate(t, db, target, set(sampleTarget()))
		deepEqual(t, "target", mustLoad(t, db, "staging"), store.Target{})
		h, err := db.History("staging", 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(h) != 0 {
			t.Errorf("history of an unknown target: got %d rotations, want none", len(h))
		}
	})

	t.Run("close twice", func(t *testing.T) {
		db := storetest.MustOpen(t)
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Errorf("second close: %v", err)
		}
	})

	t.Run("read-only open of a missing file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "state.db")
		db, err := store.Open(path, store.Options{ReadOnly: true})
		if !errors.Is(err, os.ErrNotExist) {
			t.Errorf("open: got %v, want an error matching os.ErrNotExist", err)
		}
		if db != nil {
			db.Close()
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("stat after the open: got %v, want the file not to exist", err)
		}
	})

	t.Run("read-only open reads and never writes", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "state.db")
		db := storetest.MustOpenPath(t, path)
		want := sampleTarget()
		mustUpdate(t, db, target, set(want))
		db.Close()
		before := fileSum(t, path)

		ro, err := store.Open(path, store.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		deepEqual(t, "target", mustLoad(t, ro, target), want)
		if err := ro.Update(target, set(store.Target{})); err == nil {
			t.Error("update through a read-only open: got no error")
		}
		ro.Close()
		if fileSum(t, path) != before {
			t.Error("a read-only open changed the file")
		}
	})
}

func TestUpdate(t *testing.T) {
	t.Run("round trip", func(t *testing.T) {
		db := storetest.MustOpen(t)
		want := sampleTarget()
		mustUpdate(t, db, target, set(want))
		deepEqual(t, "loaded", mustLoad(t, db, target), want)

		// fn is handed what is stored, and its changes land.
		mustUpdate(t, db, target, func(st *store.Target) error {
			deepEqual(t, "handed to fn", *st, want)
			st.Journal = nil
			st.Halted, st.HaltReason, st.HaltedAt = false, "", time.Time{}
			return nil
		})
		want.Journal = nil
		want.Halted, want.HaltReason, want.HaltedAt = false, "", time.Time{}
		deepEqual(t, "after the second update", mustLoad(t, db, target), want)
	})

	t.Run("an error from fn changes nothing", func(t *testing.T) {
		db := storetest.MustOpen(t)
		want := sampleTarget()
		mustUpdate(t, db, target, set(want))
		before := fileSum(t, db.Path())

		errBoom := errors.New("boom")
		err := db.Update(target, func(st *store.Target) error {
			st.Keys[2].State = store.KeyDeleted
			st.Keys = append(st.Keys, store.Key{ID: "new"})
			st.Journal.Step = store.StepRetire
			st.Halted = false
			return errBoom
		})
		if !errors.Is(err, errBoom) {
			t.Errorf("update: got %v, want %v", err, errBoom)
		}
		// A failing first update of a new target must not create it either.
		if err := db.Update("staging", func(*store.Target) error { return errBoom }); !errors.Is(err, errBoom) {
			t.Errorf("update of a new target: got %v, want %v", err, errBoom)
		}

		deepEqual(t, "after the failed update", mustLoad(t, db, target), want)
		targets, err := db.Targets()
		if err != nil {
			t.Fatal(err)
		}
		deepEqual(t, "targets", targets, []string{target})
		if fileSum(t, db.Path()) != before {
			t.Error("the file changed")
		}
	})

	t.Run("empty target name", func(t *testing.T) {
		db := storetest.MustOpen(t)
		if err := db.Update("", set(sampleTarget())); err == nil {
			t.Error("got no error")
		}
	})
}

func TestPruneDeleted(t *testing.T) {
	// keys interleaves n deleted keys, deleted in a shuffled order, with
	// the other kinds of key.
	keys := func(n int) []store.Key {
		live := sampleTarget().Keys
		var ks []store.Key
		for i, d := range rand.New(rand.NewPCG(1, 2)).Perm(n) {
			if i < len(live) {
				ks = append(ks, live[i])
			}
			ks = append(ks, store.Key{
				ID:      fmt.Sprintf("d%07d-0000-4000-8000-000000000000", d),
				Origin:  store.OriginCreated,
				State:   store.KeyDeleted,
				Created: t0.Add(time.Duration(d) * time.Hour),
				Deleted: t0.Add(time.Duration(d)*time.Hour + time.Minute),
			})
		}
		return ks
	}
	// newest keeps the keys that are not deleted, and the deleted keys
	// whose deletion is among the newest limit, in their order.
	newest := func(ks []store.Key, n, limit int) []store.Key {
		var out []store.Key
		for _, k := range ks {
			if k.State != store.KeyDeleted || !k.Deleted.Before(t0.Add(time.Duration(n-limit)*time.Hour)) {
				out = append(out, k)
			}
		}
		return out
	}

	for _, n := range []int{store.DeletedKeysLimit - 1, store.DeletedKeysLimit, store.DeletedKeysLimit + 1, store.DeletedKeysLimit + 15} {
		t.Run(fmt.Sprintf("%d deleted", n), func(t *testing.T) {
			db := storetest.MustOpen(t)
			in := keys(n)
			mustUpdate(t, db, target, set(store.Target{Keys: in}))
			got := mustLoad(t, db, target).Keys

			want := newest(in, n, min(n, store.DeletedKeysLimit))
			deepEqual(t, "keys", got, want)
			deleted := 0
			for _, k := range got {
				if k.State == store.KeyDeleted {
					deleted++
				}
			}
			if got, want := deleted, min(n, store.DeletedKeysLimit); got != want {
				t.Errorf("deleted keys kept: got %d, want %d", got, want)
			}
			if got, want := len(got)-deleted, len(sampleTarget().Keys); got != want {
				t.Errorf("other keys kept: got %d, want %d", got, want)
			}
		})
	}
}

func TestHistory(t *testing.T) {
	db := storetest.MustOpen(t)
	const n = store.HistoryLimit + 30
	for i := range n {
		if err := db.AddHistory(target, sampleRotation(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.AddHistory("staging", sampleRotation(-1)); err != nil {
		t.Fatal(err)
	}

	t.Run("keeps the newest HistoryLimit, newest first", func(t *testing.T) {
		got, err := db.History(target, 10*n)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != store.HistoryLimit {
			t.Fatalf("rotations: got %d, want %d", len(got), store.HistoryLimit)
		}
		for i, r := range got {
			deepEqual(t, fmt.Sprintf("history[%d]", i), r, sampleRotation(n-1-i))
		}
	})

	t.Run("limit", func(t *testing.T) {
		got, err := db.History(target, 3)
		if err != nil {
			t.Fatal(err)
		}
		deepEqual(t, "history", got, []store.Rotation{sampleRotation(n - 1), sampleRotation(n - 2), sampleRotation(n - 3)})
	})

	t.Run("targets are apart", func(t *testing.T) {
		got, err := db.History("staging", 10)
		if err != nil {
			t.Fatal(err)
		}
		deepEqual(t, "history", got, []store.Rotation{sampleRotation(-1)})
	})
}

// The environment of TestHelperProcess: holdEnv names a state file to
// hold, openEnv ("ro:PATH" or "rw:PATH") one to open once.
const (
	holdEnv = "STORE_TEST_HOLD_STATE_FILE"
	openEnv = "STORE_TEST_OPEN_STATE_FILE"
)

// TestHelperProcess is not a test: other tests run the test binary again
// to hold a state file from another process, as a running daemon does, or
// to open a damaged file where a crash cannot take the test binary down.
func TestHelperProcess(t *testing.T) {
	if path := os.Getenv(holdEnv); path != "" {
		db, err := store.Open(path, store.Options{})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Println("ready")
		_, _ = io.Copy(io.Discard, os.Stdin) // hold until the test lets go
		db.Close()
		os.Exit(0)
	}
	if mode, path, ok := strings.Cut(os.Getenv(openEnv), ":"); ok {
		db, err := store.Open(path, store.Options{ReadOnly: mode == "ro"})
		if db != nil {
			db.Close()
		}
		fmt.Println(sentinel(err))
		fmt.Println(err)
		os.Exit(0)
	}
}

// sentinel names the error of store.Open that err matches.
func sentinel(err error) string {
	for _, s := range []struct {
		name string
		err  error
	}{
		{"ErrCorrupt", store.ErrCorrupt},
		{"ErrForeign", store.ErrForeign},
		{"ErrNewerSchema", store.ErrNewerSchema},
		{"ErrLocked", store.ErrLocked},
		{"os.ErrNotExist", os.ErrNotExist},
	} {
		if errors.Is(err, s.err) {
			return s.name
		}
	}
	if err == nil {
		return "no error"
	}
	return "another error"
}

func TestLocked(t *testing.T) {
	t.Run("same process", func(t *testing.T) {
		db := storetest.MustOpen(t)
		for _, ro := range []bool{false, true} {
			second, err := store.Open(db.Path(), store.Options{ReadOnly: ro, LockTimeout: 100 * time.Millisecond})
			if !errors.Is(err, store.ErrLocked) {
				t.Errorf("second open (read-only %v): got %v, want %v", ro, err, store.ErrLocked)
			}
			if err != nil && !strings.Contains(err.Error(), "is locked") {
				t.Errorf("second open (read-only %v): %q does not say the file is locked", ro, err)
			}
			if second != nil {
				second.Close()
			}
		}
		// The holder is not disturbed by the failed opens.
		mustUpdate(t, db, target, set(sampleTarget()))
		deepEqual(t, "target", mustLoad(t, db, target), sampleTarget())
	})

	t.Run("other process is named by its pid", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "state.db")
		holder := holdInOtherProcess(t, path)

		_, err := store.Open(path, store.Options{LockTimeout: 100 * time.Millisecond})
		if !errors.Is(err, store.ErrLocked) {
			t.Fatalf("open: got %v, want %v", err, store.ErrLocked)
		}
		// Its pid, and its command line, so an operator can tell a
		// daemon from a rotate in progress.
		if want := fmt.Sprintf("(pid %d: %s", holder.Process.Pid, holder.Path); !strings.Contains(err.Error(), want) {
			t.Errorf("open: %q does not name the holder %s", err, want)
		}

		// A daemon that dies leaves no stale lock behind.
		if err := holder.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		_ = holder.Wait()
		db := storetest.MustOpenPath(t, path)
		mustUpdate(t, db, target, set(sampleTarget()))
	})
}

// holdInOtherProcess runs TestHelperProcess on path and returns once it
// holds the file. The process is killed when the test ends.
func holdInOtherProcess(tb testing.TB, path string) *exec.Cmd {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), holdEnv+"="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	s := bufio.NewScanner(stdout)
	for s.Scan() {
		if s.Text() == "ready" {
			return cmd
		}
	}
	_ = cmd.Wait()
	tb.Fatalf("helper process exited before holding %s: %s", path, stderr.Bytes())
	return nil
}

func TestCorruptFiles(t *testing.T) {
	tests := []struct {
		name string
		make func(tb testing.TB, path string)
		want error
	}{
		{"random garbage", writeGarbage, store.ErrCorrupt},
		{"short text file", writeText, store.ErrCorrupt},
		{"inconsistent freelist", writeLostFreelist, store.ErrCorrupt},
		{"foreign bbolt file", writeForeign, store.ErrForeign},
		{"newer schema", setSchema(strconv.Itoa(store.SchemaVersion + 1)), store.ErrNewerSchema},
		{"unreadable schema", setSchema("one"), store.ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			tt.make(t, path)
			before, checking := fileSum(t, path), checkers()
			for _, ro := range []bool{false, true} {
				db, err := store.Open(path, store.Options{ReadOnly: ro})
				if !errors.Is(err, tt.want) {
					t.Errorf("open (read-only %v): got %v, want %v", ro, err, tt.want)
				}
				if err != nil && !strings.Contains(err.Error(), path) {
					t.Errorf("open (read-only %v): %q does not name the file", ro, err)
				}
				if db != nil {
					db.Close()
				}
				if fileSum(t, path) != before {
					t.Fatalf("open (read-only %v) changed the file", ro)
				}
			}
			if n := waitCheckers(checking); n > checking {
				t.Errorf("%d goroutines of bbolt's tx.Check outlive Open: it stopped reading their errors early", n-checking)
			}
		})
	}

	t.Run("directory", func(t *testing.T) {
		dir := t.TempDir()
		for _, ro := range []bool{false, true} {
			db, err := store.Open(dir, store.Options{ReadOnly: ro})
			if err == nil {
				db.Close()
				t.Errorf("open (read-only %v): got no error", ro)
			}
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 0 {
			t.Errorf("open wrote %d entries into the directory", len(entries))
		}
	})
}

// TestTruncatedFiles cuts a state file at every page, at its half and
// one byte short. bbolt maps the file: a page below the meta's high-water
// mark that the file no longer holds is a SIGBUS (or a read past the
// mapping), which no recover catches. Each Open runs in a process of its
// own so that a crash fails one subtest, not the test binary.
func TestTruncatedFiles(t *testing.T) {
	full := filepath.Join(t.TempDir(), "state.db")
	writeValid(t, full)
	data, err := os.ReadFile(full)
	if err != nil {
		t.Fatal(err)
	}
	// bbolt grows the file ahead of use: cutting pages above the
	// high-water mark loses nothing.
	used := highWater(t, full)

	const pageSize = 4096
	sizes := []int{len(data) / 2, len(data) - 1}
	for n := pageSize; n < len(data); n += pageSize {
		if n != len(data)/2 {
			sizes = append(sizes, n)
		}
	}
	for i, n := range sizes {
		name := fmt.Sprintf("%d of %d bytes, %d used", n, len(data), used)
		if i == 0 {
			name = "half, " + name
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "state.db")
			if err := os.WriteFile(path, data[:n], 0o600); err != nil {
				t.Fatal(err)
			}
			want := "ErrCorrupt"
			if n >= used {
				want = "no error"
			}
			before := fileSum(t, path)
			for _, ro := range []bool{true, false} {
				got, msg := openInOtherProcess(t, path, ro)
				if got != want {
					t.Errorf("open (read-only %v): got %s (%s), want %s", ro, got, msg, want)
				}
				if want != "no error" && fileSum(t, path) != before {
					t.Fatalf("open (read-only %v) changed the file", ro)
				}
			}
		})
	}
}

// highWater returns how many bytes of the bbolt file at path hold pages
// in use.
func highWater(tb testing.TB, path string) int {
	tb.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	var n int64
	_ = db.View(func(tx *bolt.Tx) error { n = tx.Size(); return nil })
	return int(n)
}

// openInOtherProcess opens path with store.Open in a process of its own
// and returns the sentinel the error matched and the error's text.
func openInOtherProcess(tb testing.TB, path string, readOnly bool) (sentinel, msg string) {
	tb.Helper()
	mode := "rw"
	if readOnly {
		mode = "ro"
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), openEnv+"="+mode+":"+path)
	if os.Getenv("GORACE") == "" {
		// A -race binary waits a second at exit for late reports.
		cmd.Env = append(cmd.Env, "GORACE=atexit_sleep_ms=0")
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		lines := strings.SplitN(stderr.String(), "\n", 4)
		return "a crash", fmt.Sprintf("%v: %s", err, strings.Join(lines[:min(3, len(lines))], " | "))
	}
	sentinel, msg, _ = strings.Cut(strings.TrimSpace(string(out)), "\n")
	return sentinel, msg
}

// checkers counts the goroutines running bbolt's tx.Check. One whose
// errors are not read to the end blocks for ever, still reading a
// transaction that has ended.
func checkers() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return bytes.Count(buf[:n], []byte("bbolt.(*Tx).Check.func1("))
		}
		buf = make([]byte, 2*len(buf))
	}
}

// waitCheckers gives the checkers a second to come down to want, and
// returns how many are left.
func waitCheckers(want int) int {
	deadline := time.Now().Add(time.Second)
	for {
		n := checkers()
		if n <= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func writeGarbage(tb testing.TB, path string) {
	tb.Helper()
	b := make([]byte, 64<<10)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(b)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		tb.Fatal(err)
	}
}

// writeValid writes a state file that has seen some use.
func writeValid(tb testing.TB, path string) {
	tb.Helper()
	db, err := store.Open(path, store.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	mustUpdate(tb, db, target, set(sampleTarget()))
	for i := range 20 {
		if err := db.AddHistory(target, sampleRotation(i)); err != nil {
			tb.Fatal(err)
		}
	}
}

func writeText(tb testing.TB, path string) {
	tb.Helper()
	if err := os.WriteFile(path, []byte("state_path: /var/lib/codat-rotator/state.db\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
}

// writeLostFreelist writes a state file whose freelist forgot its pages:
// the pages are neither reachable nor free, and bbolt's check reports
// each of them.
func writeLostFreelist(tb testing.TB, path string) {
	tb.Helper()
	writeValid(tb, path)
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	// The page header is id u64, flags u16, count u16, overflow u32; the
	// meta after it: magic, version, page size, flags u32, root bucket
	// (root, sequence u64), freelist, pgid, txid u64.
	const pageSize, header = 4096, 16
	var freelist, txid uint64
	for _, m := range []int{0, pageSize} {
		meta := b[m+header:]
		if id := binary.LittleEndian.Uint64(meta[48:]); id >= txid {
			freelist, txid = binary.LittleEndian.Uint64(meta[32:]), id
		}
	}
	count := b[int(freelist)*pageSize+10:]
	if binary.LittleEndian.Uint16(count) < 2 {
		tb.Fatalf("freelist page %d lists %d pages, want a few", freelist, binary.LittleEndian.Uint16(count))
	}
	binary.LittleEndian.PutUint16(count, 0)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		tb.Fatal(err)
	}
}

func writeForeign(tb testing.TB, path string) {
	tb.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("other"))
		if err != nil {
			return err
		}
		return b.Put([]byte("k"), []byte("v"))
	})
	if err != nil {
		tb.Fatal(err)
	}
}

// setSchema writes a state file whose meta/schema is v.
func setSchema(v string) func(testing.TB, string) {
	return func(tb testing.TB, path string) {
		tb.Helper()
		writeValid(tb, path)
		db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
		if err != nil {
			tb.Fatal(err)
		}
		defer db.Close()
		err = db.Update(func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("meta")).Put([]byte("schema"), []byte(v))
		})
		if err != nil {
			tb.Fatal(err)
		}
	}
}

func TestDecodeTarget(t *testing.T) {
	valid, err := json.Marshal(sampleTarget())
	if err != nil {
		t.Fatal(err)
	}
	got, err := store.DecodeTarget(valid)
	if err != nil {
		t.Fatalf("decode a valid record: %v", err)
	}
	deepEqual(t, "decoded", got, sampleTarget())

	tests := []struct {
		name, in, want string // want: part of the error
	}{
		{"unknown field", `{"keys":[],"api_key":"secret"}`, `unknown field "api_key"`},
		{"unknown key field", `{"keys":[{"id":"k1","state":"active","raw":"secret"}]}`, `unknown field "raw"`},
		{"unknown journal field", `{"keys":[],"journal":{"step":"create","attempt":2}}`, `unknown field "attempt"`},
		{"key without id", `{"keys":[{"id":"k1","state":"active"},{"state":"pending"}]}`, `keys[1] has no id`},
		{"key with empty id", `{"keys":[{"id":"","state":"active"}]}`, `keys[0] has no id`},
		{"trailing data", `{"keys":[]} {"keys":[]}`, `trailing data`},
		{"wrong type", `{"keys":{}}`, `cannot unmarshal`},
		{"empty", ``, `EOF`},
		{"garbage", "\x00\xffbolt", `invalid character`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := store.DecodeTarget([]byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got error %v, want one containing %q", err, tt.want)
			}
			deepEqual(t, "target on error", got, store.Target{})
		})
	}
}

func TestDecodeRotation(t *testing.T) {
	for _, want := range []store.Rotation{sampleRotation(1), sampleRotation(10), {ID: "r-failed", Result: "failed", Error: "create key: 500"}} {
		raw, err := json.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		got, err := store.DecodeRotation(raw)
		if err != nil {
			t.Fatalf("decode %s: %v", raw, err)
		}
		deepEqual(t, "round trip", got, want)
	}
	if _, err := store.DecodeRotation([]byte(`{"id":"r-1","api_key":"secret"}`)); err == nil {
		t.Error("decode with an unknown field: got no error")
	}
}

func TestTargetKey(t *testing.T) {
	st := sampleTarget()
	k := st.Key("c0000000-0000-4000-8000-000000000003")
	if k == nil {
		t.Fatal("Key of a known id: got nil")
	}
	k.State = store.KeyRetiring
	if got, want := st.Keys[2].State, store.KeyRetiring; got != want {
		t.Errorf("Key must point into Keys: state got %q, want %q", got, want)
	}
	if k := st.Key("missing"); k != nil {
		t.Errorf("Key of an unknown id: got %+v, want nil", k)
	}
}

func TestOriginManaged(t *testing.T) {
	for _, tt := range []struct {
		o    store.Origin
		want bool
	}{
		{store.OriginCreated, true},
		{store.OriginAdopted, true},
		{store.OriginForeign, false},
		{"", false},
	} {
		if got := tt.o.Managed(); got != tt.want {
			t.Errorf("%q.Managed(): got %v, want %v", tt.o, got, tt.want)
		}
	}
}

func FuzzDecodeTarget(f *testing.F) {
	valid, err := json.Marshal(sampleTarget())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add([]byte(`{"keys":[{"id":"k1","origin":"created","state":"active","created":"2025-03-10T04:00:00.5+01:00"}],"halted_at":"0001-01-01T01:00:00+01:00"}`))
	f.Add([]byte(`{"keys":[],"api_key":"secret"}`))
	f.Add([]byte(`{"keys":[{"state":"pending"}]}`))
	f.Add([]byte(`{"journal":{}}`))
	f.Add([]byte(`null`))
	f.Add([]byte(``))
	f.Add([]byte("\x00\xffbolt\x00garbage"))

	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := store.DecodeTarget(in)
		if err != nil {
			return
		}
		raw, err := json.Marshal(got)
		if err != nil {
			t.Fatalf("re-encode %+v: %v", got, err)
		}
		again, err := store.DecodeTarget(raw)
		if err != nil {
			t.Fatalf("decode the re-encoded %s: %v", raw, err)
		}
		normalizeTimes(&got)
		normalizeTimes(&again)
		if !reflect.DeepEqual(again, got) {
			t.Errorf("round trip of %q through %s:\n got %+v\nwant %+v", in, raw, again, got)
		}
	})
}

// normalizeTimes puts every time of t in UTC: JSON keeps the instant, not
// the *time.Location, and a zero instant in another zone re-encodes as
// absent (omitzero).
func normalizeTimes(t *store.Target) {
	utc := func(ts ...*time.Time) {
		for _, p := range ts {
			*p = p.UTC()
		}
	}
	for i := range t.Keys {
		k := &t.Keys[i]
		utc(&k.Created, &k.Published, &k.DeleteAfter, &k.Deleted)
	}
	if j := t.Journal; j != nil {
		utc(&j.Started, &j.Updated)
	}
	utc(&t.HaltedAt, &t.LastAttempt, &t.LastSuccess)
}

// rotate does to st what one successful rotation does: a new key becomes
// active, the active one retiring and the retiring one deleted.
func rotate(st *store.Target, n int, now time.Time) {
	for i := range st.Keys {
		switch k := &st.Keys[i]; k.State {
		case store.KeyRetiring:
			k.State, k.Deleted = store.KeyDeleted, now
		case store.KeyActive:
			k.State, k.DeleteAfter = store.KeyRetiring, now.Add(24*time.Hour)
		}
	}
	st.Keys = append(st.Keys, store.Key{
		ID:         fmt.Sprintf("%08x-7d2e-4b8a-9c1f-2e6d5b4a3c21", n),
		Name:       "codat-rotator-" + now.Format(rotation.NameTimeLayout) + "-4d5e6f",
		Origin:     store.OriginCreated,
		State:      store.KeyActive,
		Created:    now,
		Published:  now.Add(3 * time.Second),
		RotationID: fmt.Sprintf("r-%05d", n),
	})
	st.Journal = nil
	st.LastAttempt, st.LastSuccess, st.LastResult = now, now, "success"
}

func TestFileStaysSmall(t *testing.T) {
	db := storetest.MustOpen(t)
	mustUpdate(t, db, target, set(store.Target{Keys: sampleTarget().Keys[:3]}))

	size := func() int64 {
		fi, err := os.Stat(db.Path())
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	// 2,000 rotations prove the bound (history and deleted keys are
	// capped after 100 and 20); `make bench` runs BenchmarkFileSize for
	// 10,000 without the race detector's cost.
	const rotations = 2_000
	var early int64
	start := time.Now()
	for i := range rotations {
		now := t0.Add(time.Duration(i) * 7 * 24 * time.Hour)
		mustUpdate(t, db, target, func(st *store.Target) error { rotate(st, i, now); return nil })
		if err := db.AddHistory(target, sampleRotation(i)); err != nil {
			t.Fatal(err)
		}
		if i == 2*store.HistoryLimit {
			early = size()
		}
	}
	took := time.Since(start)

	t.Logf("%d rotations in %v (%v each); file size %d bytes after %d rotations, %d after %d",
		rotations, took.Round(time.Millisecond), (took / rotations).Round(time.Microsecond), early, 2*store.HistoryLimit+1, size(), rotations)
	if got, limit := size(), int64(1<<20); got > limit {
		t.Errorf("file size after %d rotations: got %d bytes, want at most %d", rotations, got, limit)
	}
	if got, want := len(mustLoad(t, db, target).Keys), 3+store.DeletedKeysLimit; got != want {
		t.Errorf("keys after %d rotations: got %d, want %d", rotations, got, want)
	}
}

func BenchmarkUpdate(b *testing.B) {
	db := storetest.MustOpen(b)
	st := store.Target{Keys: sampleTarget().Keys[:3]}
	for i := range 7 {
		rotate(&st, i, t0.Add(time.Duration(i)*7*24*time.Hour))
	}
	if len(st.Keys) != 10 {
		b.Fatalf("keys: got %d, want 10", len(st.Keys))
	}
	mustUpdate(b, db, target, set(st))
	b.ReportAllocs()
	for b.Loop() {
		mustUpdate(b, db, target, func(t *store.Target) error {
			t.LastAttempt = t.LastAttempt.Add(time.Second)
			return nil
		})
	}
}

// BenchmarkFileSize reports the state file's size after 10,000
// rotations of one target (issue target: at most 1 MiB, history bounded).
func BenchmarkFileSize(b *testing.B) {
	for range b.N {
		db := storetest.MustOpen(b)
		mustUpdate(b, db, target, set(store.Target{Keys: sampleTarget().Keys[:3]}))
		for i := range 10_000 {
			now := t0.Add(time.Duration(i) * 7 * 24 * time.Hour)
			mustUpdate(b, db, target, func(st *store.Target) error { rotate(st, i, now); return nil })
			if err := db.AddHistory(target, sampleRotation(i)); err != nil {
				b.Fatal(err)
			}
		}
		fi, err := os.Stat(db.Path())
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(fi.Size())/(1<<10), "KiB-after-10k-rotations")
	}
}
