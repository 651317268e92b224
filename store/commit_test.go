package store_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/store"
	"github.com/codat-rotator/codat-rotator/store/storetest"
)

// waitQueued waits until n writes queue behind the commit in flight.
func waitQueued(tb testing.TB, db *store.DB, n int) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for store.Queued(db) < n {
		if time.Now().After(deadline) {
			tb.Fatalf("%d writes queued, want %d", store.Queued(db), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestGroupCommit: writes that queue behind a commit in flight share the
// next commit, each against its own target; a write whose fn fails is
// left out and fails alone; the others land, in one more transaction.
func TestGroupCommit(t *testing.T) {
	db := storetest.MustOpen(t)
	release, entered := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- db.Update("t-first", func(st *store.Target) error {
			close(entered)
			<-release // hold the commit in flight while the others queue
			st.LastResult = "first"
			return nil
		})
	}()
	<-entered

	const n = 12
	errBoom := errors.New("boom")
	var calls [n]atomic.Int32
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = db.Update(fmt.Sprintf("t%02d", i), func(st *store.Target) error {
				calls[i].Add(1)
				if i%4 == 1 { // three of the twelve fail
					st.LastResult = "half-done"
					return fmt.Errorf("target %d: %w", i, errBoom)
				}
				st.LastResult = "done " + strconv.Itoa(i)
				return nil
			})
		})
	}
	waitQueued(t, db, n)
	commitsBefore := db.Commits()
	close(release)
	wg.Wait()
	if err := <-first; err != nil {
		t.Fatalf("first update: %v", err)
	}

	for i := range n {
		name := fmt.Sprintf("t%02d", i)
		st := mustLoad(t, db, name)
		if i%4 == 1 {
			if !errors.Is(errs[i], errBoom) {
				t.Errorf("%s: got %v, want its own fn's error", name, errs[i])
			}
			if st.LastResult != "" {
				t.Errorf("%s: a failed update landed: %q", name, st.LastResult)
			}
			if got := calls[i].Load(); got != 1 {
				t.Errorf("%s: a failed fn ran %d times, want 1", name, got)
			}
			continue
		}
		if errs[i] != nil {
			t.Errorf("%s: failed with another write's error: %v", name, errs[i])
		}
		if want := "done " + strconv.Itoa(i); st.LastResult != want {
			t.Errorf("%s: got %q, want %q", name, st.LastResult, want)
		}
		if got := calls[i].Load(); got != 2 {
			t.Errorf("%s: fn ran %d time(s), want 2: the failures beside it roll it back and it runs again", name, got)
		}
	}
	if got := mustLoad(t, db, "t-first").LastResult; got != "first" {
		t.Errorf("first: got %q", got)
	}
	// The twelve share a transaction, rolled back for the failures, then
	// the nine left commit in one. Alone, they would take nine commits.
	if got := db.Commits() - commitsBefore; got != 2 {
		t.Errorf("commits for the first write and the twelve queued behind it: got %d, want 2", got)
	}
	targets, err := db.Targets()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range targets {
		if strings.HasPrefix(name, "t") && name != "t-first" {
			if i, _ := strconv.Atoi(name[1:]); i%4 == 1 {
				t.Errorf("a failed first update created target %s", name)
			}
		}
	}
}

// TestGroupCommitUnchanged: an update that leaves the state as it was
// commits nothing (no fsync), and one that changes it commits.
func TestGroupCommitUnchanged(t *testing.T) {
	db := storetest.MustOpen(t)
	mustUpdate(t, db, target, set(sampleTarget()))
	before, sum := db.Commits(), fileSum(t, db.Path())
	mustUpdate(t, db, target, func(*store.Target) error { return nil })
	if got := db.Commits() - before; got != 0 {
		t.Errorf("an unchanged update committed %d transaction(s)", got)
	}
	if fileSum(t, db.Path()) != sum {
		t.Error("an unchanged update changed the file")
	}
	mustUpdate(t, db, target, func(st *store.Target) error { st.LastResult = "success"; return nil })
	if got := db.Commits() - before; got != 1 {
		t.Errorf("a change committed %d transaction(s), want 1", got)
	}
}

// TestGroupCommitPanic: a panic in one fn is raised in its own caller
// and fails no other write.
func TestGroupCommitPanic(t *testing.T) {
	db := storetest.MustOpen(t)
	release, entered := make(chan struct{}), make(chan struct{})
	go func() {
		_ = db.Update("hold", func(*store.Target) error { close(entered); <-release; return nil })
	}()
	<-entered
	panicked := make(chan any, 1)
	okErr := make(chan error, 1)
	go func() {
		defer func() { panicked <- recover() }()
		_ = db.Update("bad", func(*store.Target) error { panic("bug") })
	}()
	go func() {
		okErr <- db.Update("good", func(st *store.Target) error { st.LastResult = "ok"; return nil })
	}()
	waitQueued(t, db, 2)
	close(release)
	if p := <-panicked; p != "bug" {
		t.Errorf("the panicking caller got %v, want its own panic", p)
	}
	if err := <-okErr; err != nil {
		t.Errorf("the write beside the panic: %v", err)
	}
	if got := mustLoad(t, db, "good").LastResult; got != "ok" {
		t.Errorf("good: got %q", got)
	}
	// The committer is free again.
	mustUpdate(t, db, "after", func(st *store.Target) error { st.LastResult = "ok"; return nil })
}

const durableEnv = "STORE_TEST_DURABLE_WRITERS"

// TestGroupCommitDurable: a process with 64 concurrent updaters prints
// each update once Update returned and is killed with SIGKILL mid-run;
// every update it reported is in the file opened afterwards. Update
// returns only after the commit that holds it.
func TestGroupCommitDurable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestGroupCommitDurableHelper$")
	cmd.Env = append(os.Environ(), durableEnv+"="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	reported := map[string]int{}
	sc := bufio.NewScanner(out)
	lines := 0
	for sc.Scan() {
		name, seq, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		n, _ := strconv.Atoi(seq)
		reported[name] = max(reported[name], n)
		if lines++; lines == 2000 {
			_ = cmd.Process.Signal(syscall.SIGKILL)
			break
		}
	}
	_ = cmd.Wait()
	if lines < 2000 {
		t.Fatalf("the helper reported %d updates before it ended; want 2000", lines)
	}
	db := storetest.MustOpenPath(t, path)
	for name, seq := range reported {
		st := mustLoad(t, db, name)
		got, _ := strconv.Atoi(st.LastResult)
		if got < seq {
			t.Errorf("%s: update %d was reported done, the file holds %d", name, seq, got)
		}
	}
	if len(reported) != 64 {
		t.Errorf("%d updaters reported, want 64", len(reported))
	}
}

// TestGroupCommitDurableHelper is not a test: TestGroupCommitDurable runs
// it in a process of its own and kills it.
func TestGroupCommitDurableHelper(t *testing.T) {
	path := os.Getenv(durableEnv)
	if path == "" {
		return // run by TestGroupCommitDurable
	}
	db, err := store.Open(path, store.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var mu sync.Mutex
	w := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			name := fmt.Sprintf("w%02d", i)
			for seq := 1; ; seq++ {
				if err := db.Update(name, func(st *store.Target) error { st.LastResult = strconv.Itoa(seq); return nil }); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				mu.Lock()
				fmt.Fprintf(w, "%s %d\n", name, seq)
				w.Flush()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}

// BenchmarkGroupCommit reports the updates and commits a second with 1
// and with 64 goroutines updating targets of their own at once: the
// fleet's journal writes, which share commits.
func BenchmarkGroupCommit(b *testing.B) {
	for _, n := range []int{1, 64} {
		b.Run(fmt.Sprintf("updaters=%d", n), func(b *testing.B) {
			db := storetest.MustOpen(b)
			for i := range n {
				mustUpdate(b, db, fmt.Sprintf("t%02d", i), set(store.Target{Keys: sampleTarget().Keys[:3]}))
			}
			commits0 := db.Commits()
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for i := range n {
				wg.Go(func() {
					name := fmt.Sprintf("t%02d", i)
					for next.Add(1) <= int64(b.N) {
						if err := db.Update(name, func(st *store.Target) error {
							st.LastAttempt = st.LastAttempt.Add(time.Second)
							return nil
						}); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			took := time.Since(start)
			b.StopTimer()
			commits := db.Commits() - commits0
			b.ReportMetric(float64(b.N)/took.Seconds(), "updates/s")
			b.ReportMetric(float64(commits)/took.Seconds(), "commits/s")
			b.ReportMetric(float64(b.N)/float64(max(commits, 1)), "updates/commit")
		})
	}
}
