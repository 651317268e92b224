// Package storetest opens state files for tests and checks, when the test
// ends, that what the test left behind is a consistent state file.
package storetest

import (
	"path/filepath"
	"testing"

	"github.com/codat-rotator/codat-rotator/store"
)

// MustOpen opens a fresh state file under tb.TempDir() with the default
// options. When the test ends the file is closed, opened again read-only
// and checked for consistency; a failed check fails the test.
func MustOpen(tb testing.TB) *store.DB {
	tb.Helper()
	return MustOpenPath(tb, filepath.Join(tb.TempDir(), "state.db"))
}

// MustOpenPath is MustOpen for a state file at path, which may exist. The
// test may close the DB itself: closing twice is harmless.
func MustOpenPath(tb testing.TB, path string) *store.DB {
	tb.Helper()
	db, err := store.Open(path, store.Options{})
	if err != nil {
		tb.Fatalf("open state file: %v", err)
	}
	tb.Cleanup(func() {
		if err := db.Close(); err != nil {
			tb.Errorf("close state file: %v", err)
			return
		}
		check(tb, path)
	})
	return db
}

// check re-opens path read-only, as `status` would, and runs bbolt's
// consistency check over it.
func check(tb testing.TB, path string) {
	tb.Helper()
	db, err := store.Open(path, store.Options{ReadOnly: true})
	if err != nil {
		tb.Errorf("re-open state file read-only after the test: %v", err)
		return
	}
	defer db.Close()
	if err := db.Check(); err != nil {
		tb.Errorf("state file left inconsistent by the test: %v", err)
	}
}
