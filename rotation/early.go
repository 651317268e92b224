package rotation

import (
	"context"

	"github.com/codat-rotator/codat-rotator/secret"
)

// The early listing (docs/design.md#credential). A plan, a recovery and
// a retire pass read what Vault serves and then list Codat's keys with
// it: two round trips, the second waiting on the first only for the key.
// The engine remembers, in memory only, the raw key it last saw served
// or published for each target, and starts the listing with that key
// beside the Vault read. When Vault serves that same key, the listing is
// the one a listing after the read would have been; when it serves
// another (a secret written by hand, a restart, the first run), the
// early listing is dropped and Codat is listed again with the key Vault
// serves, before anything is decided. A listing changes nothing at
// Codat, so starting one early is no side effect: the ownership check
// and every decision still come after the read.

// early is a listing started before the read that says whether to use it.
type early struct {
	key      secret.Value
	cancel   context.CancelFunc
	done     chan struct{}
	keys     []Key
	err      error
	panicked any
}

// listEarly starts a listing with the key last seen served for t; nil
// when the engine remembers none.
func (e *Engine) listEarly(ctx context.Context, t Target) *early {
	e.mu.Lock()
	key, ok := e.served[t.Name]
	e.mu.Unlock()
	if !ok {
		return nil
	}
	return e.startList(ctx, t, key)
}

// startList starts listing Codat's keys with key, for take or drop.
func (e *Engine) startList(ctx context.Context, t Target, key secret.Value) *early {
	ctx, cancel := context.WithCancel(ctx)
	x := &early{key: key, cancel: cancel, done: make(chan struct{})}
	client := e.Codat(t.Name, key)
	go func() {
		defer close(x.done)
		defer func() {
			// Raised again in the rotation's goroutine by take or drop.
			if p := recover(); p != nil {
				x.panicked = p
			}
		}()
		x.keys, x.err = client.List(ctx)
	}()
	return x
}

// take returns the early listing when it was made with served, the key
// Vault serves now; ok is false otherwise, and the caller lists again.
func (x *early) take(served secret.Value) (keys []Key, ok bool, err error) {
	if x == nil {
		return nil, false, nil
	}
	if x.key != served {
		x.drop()
		return nil, false, nil
	}
	<-x.done
	x.cancel()
	x.raise()
	return x.keys, true, x.err
}

// drop cancels the listing and waits for it; it may be called after take.
func (x *early) drop() {
	if x == nil {
		return
	}
	x.cancel()
	<-x.done
	x.raise()
}

func (x *early) raise() {
	if p := x.panicked; p != nil {
		x.panicked = nil
		panic(p)
	}
}

// remember notes the key Vault serves for target, for the next early
// listing.
func (e *Engine) remember(target string, key secret.Value) {
	if key.Empty() {
		return
	}
	e.mu.Lock()
	if e.served == nil {
		e.served = map[string]secret.Value{}
	}
	e.served[target] = key
	e.mu.Unlock()
}

// list lists Codat's keys with served, the key Vault serves for t: the
// early listing when it used that key, a new one otherwise.
func (e *Engine) list(ctx context.Context, t Target, x *early, served secret.Value) (Codat, []Key, error) {
	client := e.Codat(t.Name, served)
	if keys, ok, err := x.take(served); ok {
		return client, keys, err
	}
	keys, err := client.List(ctx)
	return client, keys, err
}
