package codatauth_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/codat/emulator"
	"github.com/codat-rotator/codat-rotator/codatauth"
	"github.com/codat-rotator/codat-rotator/secret"
)

// world is Codat (the project's emulator over real HTTP) and a directory
// for credential files.
type world struct {
	emu *emulator.Server
	url string
	dir string
}

func newWorld(tb testing.TB) *world {
	tb.Helper()
	emu, err := emulator.New(emulator.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	srv := httptest.NewServer(emu)
	tb.Cleanup(srv.Close)
	tb.Cleanup(emu.Close)
	return &world{emu: emu, url: srv.URL, dir: tb.TempDir()}
}

// initial returns the id and raw value of the key the client started with.
func (w *world) initial(tb testing.TB) (id, raw string) {
	tb.Helper()
	for _, k := range w.emu.Keys() {
		if k.Origin == emulator.OriginInitial {
			return k.ID, w.emu.InitialKey()
		}
	}
	tb.Fatal("no initial key")
	return "", ""
}

// newKey makes a key, as codat-rotator's create would.
func (w *world) newKey(tb testing.TB) (id, raw string) {
	tb.Helper()
	id, raw, err := w.emu.AddPortalKey("")
	if err != nil {
		tb.Fatal(err)
	}
	return id, raw
}

// deleteKey deletes a key at Codat, as a retirement or an emergency does.
func (w *world) deleteKey(tb testing.TB, id string) {
	tb.Helper()
	if err := w.emu.DeletePortalKey(id); err != nil {
		tb.Fatal(err)
	}
}

func header(raw string) string { return secret.AuthorizationHeader(secret.Value(raw)).Reveal() }

// companyEvents returns the emulator's record of the requests to
// /companies since seq (1-based; 0 for all).
func (w *world) companyEvents(since int) []emulator.Event {
	var out []emulator.Event
	for _, e := range w.emu.Events(since) {
		if e.Op == emulator.OpListCompanies || e.Op == emulator.OpCreateCompany {
			out = append(out, e)
		}
	}
	return out
}

// lastSeq is the sequence number of the emulator's last event.
func (w *world) lastSeq() int {
	ev := w.emu.Events(0)
	if len(ev) == 0 {
		return 0
	}
	return ev[len(ev)-1].Seq
}

// writeAtomic replaces path by renaming a new file over it, as Vault
// Agent does.
func writeAtomic(tb testing.TB, path, content string) {
	tb.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		tb.Fatal(err)
	}
}

// events collects what OnRefresh reports.
type events struct {
	mu  sync.Mutex
	all []codatauth.Refresh
}

func (e *events) add(r codatauth.Refresh) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.all = append(e.all, r)
}

func (e *events) list() []codatauth.Refresh {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]codatauth.Refresh(nil), e.all...)
}

// newTransport starts a Transport on a file source at path, for the
// world's Codat, and closes it when the test ends.
func (w *world) newTransport(tb testing.TB, path string, interval time.Duration, ev *events) *codatauth.Transport {
	tb.Helper()
	cfg := codatauth.Config{Source: codatauth.NewFileSource(path), BaseURL: w.url, Interval: interval}
	if ev != nil {
		cfg.OnRefresh = ev.add
	}
	tr, err := codatauth.New(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() { _ = tr.Close() })
	return tr
}

// call sends method /companies through c and returns the status.
func (w *world) call(tb testing.TB, c *http.Client, method, body string) int {
	tb.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, w.url+"/companies", rd)
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		tb.Fatalf("%s /companies: %v", method, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func filePath(w *world, name string) string { return filepath.Join(w.dir, name) }
