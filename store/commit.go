package store

import (
	"errors"
	"sync"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
)

// Group commit. bbolt runs one write transaction at a time and each
// commit ends with an fsync, so a fleet of concurrent rotations would
// queue behind one another's fsyncs. Instead, while one commit runs,
// later writes queue, and the next commit applies all of them in one
// transaction: one fsync for the lot. A writer that finds no commit
// running commits at once, in its own goroutine, so a lone rotation
// waits for nothing (bbolt's Batch would hold it up to MaxBatchDelay).
//
// Every write still returns only after the commit that holds it is on
// disk, so each step of a rotation stays durable before its side effect
// (docs/design.md#step-table).
//
// A write whose op fails is left out: the shared transaction is rolled
// back and the others are applied again in a new one, so one write's
// error never lands half of it, nor fails another's. An op may therefore
// run more than once, each time against the state as stored; only its
// last run's change lands.

// write is one queued change: op applies it inside a transaction.
type write struct {
	op  func(tx *bolt.Tx) (changed bool, err error)
	err error
	// panicked holds what op panicked with, raised again in the
	// writer's own goroutine.
	panicked any
	// wake is signalled once: true hands this writer the next commit,
	// false says its write is done (err set).
	wake chan bool
}

// committer queues writes while a commit runs.
type committer struct {
	mu      sync.Mutex
	running bool
	queue   []*write
	// commits counts the transactions committed, for Stats.
	commits atomic.Int64
}

// errNoChange rolls back a transaction that changed nothing: no commit,
// so no fsync, for a write whose state is already on disk.
var errNoChange = errors.New("nothing changed")

// errRetry rolls back a transaction in which an op failed.
var errRetry = errors.New("a write failed; the others run again")

// write applies op in a transaction of its own or shared with writes
// queued beside it, and returns once that transaction is committed (or
// op failed). op reports whether it changed anything.
func (db *DB) write(op func(tx *bolt.Tx) (bool, error)) error {
	w := &write{op: op, wake: make(chan bool, 1)}
	c := &db.commits
	c.mu.Lock()
	c.queue = append(c.queue, w)
	if c.running {
		c.mu.Unlock()
		if lead := <-w.wake; !lead {
			return w.result()
		}
		c.mu.Lock()
	}
	c.running = true
	batch := c.queue
	c.queue = nil
	c.mu.Unlock()

	db.commit(batch)

	c.mu.Lock()
	if len(c.queue) > 0 {
		// Hand the next commit to the first writer that queued during
		// this one; it takes everything queued by then.
		c.queue[0].wake <- true
	} else {
		c.running = false
	}
	c.mu.Unlock()
	for _, o := range batch {
		if o != w {
			o.wake <- false
		}
	}
	return w.result()
}

func (w *write) result() error {
	if w.panicked != nil {
		panic(w.panicked)
	}
	return w.err
}

// apply runs w's op, turning a panic into a failure of w alone.
func (w *write) apply(tx *bolt.Tx) (changed bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			w.panicked = r
			changed, err = false, errors.New("state write panicked")
		}
	}()
	return w.op(tx)
}

// commit applies the batch in as few transactions as its failures
// allow: every op runs; if any failed, the transaction is rolled back
// and the others run again in a new one. It sets every write's err.
func (db *DB) commit(batch []*write) {
	for len(batch) > 0 {
		var failed map[*write]bool
		err := db.bolt.Update(func(tx *bolt.Tx) error {
			changed := false
			for _, w := range batch {
				c, err := w.apply(tx)
				if err != nil {
					if failed == nil {
						failed = map[*write]bool{}
					}
					failed[w], w.err = true, err
					continue
				}
				changed = changed || c
			}
			switch {
			case failed != nil:
				return errRetry
			case !changed:
				return errNoChange
			}
			return nil
		})
		if failed != nil {
			rest := batch[:0:0]
			for _, w := range batch {
				if !failed[w] {
					rest = append(rest, w)
				}
			}
			batch = rest
			continue
		}
		switch {
		case errors.Is(err, errNoChange):
			err = nil
		case err == nil:
			db.commits.commits.Add(1)
		}
		for _, w := range batch {
			w.err = err // nil, or the commit's own failure: nothing landed
		}
		return
	}
}

// Commits returns how many write transactions this DB has committed
// (each one fsync): concurrent writes share them.
func (db *DB) Commits() int64 { return db.commits.commits.Load() }

// queued returns how many writes wait for the commit in flight.
func (db *DB) queued() int {
	db.commits.mu.Lock()
	defer db.commits.mu.Unlock()
	return len(db.commits.queue)
}
