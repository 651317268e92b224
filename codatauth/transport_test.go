package codatauth_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/codatauth"
)

// TestHeaderOnlyForCodat: requests to Codat carry the header, and the
// caller's request is left as it was; requests to any other host or port
// go out without it.
func TestHeaderOnlyForCodat(t *testing.T) {
	w := newWorld(t)
	id, raw := w.initial(t)
	path := filePath(w, "codat")
	writeAtomic(t, path, header(raw))
	c := w.newTransport(t, path, time.Hour, nil).Client()

	req, err := http.NewRequest(http.MethodGet, w.url+"/companies", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /companies: got %d, want 200", resp.StatusCode)
	}
	if got := w.companyEvents(0); len(got) != 1 || got[0].KeyID != id {
		t.Errorf("emulator saw %+v, want one request with key %s", got, id)
	}
	if _, ok := req.Header["Authorization"]; ok {
		t.Error("the caller's request was given the header")
	}

	var seen atomic.Value
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.Header.Values("Authorization"))
	}))
	defer other.Close()
	if _, err := c.Get(other.URL + "/companies"); err != nil {
		t.Fatal(err)
	}
	if got := seen.Load().([]string); len(got) != 0 {
		t.Errorf("another host:port got an Authorization header (%d values)", len(got))
	}
}

// TestUnauthorizedRetriesOnceWithTheNewHeader: after the key in use is
// deleted and the source holds a new one, a request meets one 401, the
// transport reads the source once and sends the request again with the
// new header; the caller sees only the success. A POST's body is sent
// again whole (GetBody).
func TestUnauthorizedRetriesOnceWithTheNewHeader(t *testing.T) {
	for _, tc := range []struct{ method, body string }{
		{http.MethodGet, ""},
		{http.MethodPost, `{"name":"Bank of Dave"}`},
	} {
		t.Run(tc.method, func(t *testing.T) {
			w := newWorld(t)
			oldID, oldRaw := w.initial(t)
			path := filePath(w, "codat")
			writeAtomic(t, path, header(oldRaw))
			tr := w.newTransport(t, path, time.Hour, nil)
			newID, newRaw := w.newKey(t)
			writeAtomic(t, path, header(newRaw))
			w.deleteKey(t, oldID)
			before, seq := tr.Stats(), w.lastSeq()+1

			if got := w.call(t, tr.Client(), tc.method, tc.body); got != http.StatusOK {
				t.Fatalf("%s: the caller got %d, want 200", tc.method, got)
			}
			got := w.companyEvents(seq)
			if len(got) != 2 || got[0].Status != http.StatusUnauthorized || got[1].Status != http.StatusOK || got[1].KeyID != newID {
				t.Fatalf("emulator saw %+v, want a 401 then a 200 with key %s", got, newID)
			}
			st := tr.Stats()
			if d := (codatauth.Stats{Reads: st.Reads - before.Reads, Changes: st.Changes - before.Changes, Unauthorized: st.Unauthorized - before.Unauthorized, Retries: st.Retries - before.Retries}); d != (codatauth.Stats{Reads: 1, Changes: 1, Unauthorized: 1, Retries: 1}) {
				t.Errorf("stats moved by %+v, want one read, one change, one 401, one retry", d)
			}
			if tc.body != "" {
				var page struct {
					Results []struct{ Name string } `json:"results"`
				}
				req, _ := http.NewRequest(http.MethodGet, w.url+"/companies", nil)
				resp, err := tr.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
					t.Fatal(err)
				}
				if len(page.Results) != 1 || page.Results[0].Name != "Bank of Dave" {
					t.Errorf("companies after the retried POST: %+v, want the one it made", page.Results)
				}
			}
		})
	}
}

// TestUnauthorizedBodyNotReplayable: a request whose body cannot be sent
// again returns Codat's 401 to the caller, but the source is read, so the
// next request goes out with the new header and succeeds first time.
func TestUnauthorizedBodyNotReplayable(t *testing.T) {
	w := newWorld(t)
	oldID, oldRaw := w.initial(t)
	path := filePath(w, "codat")
	writeAtomic(t, path, header(oldRaw))
	tr := w.newTransport(t, path, time.Hour, nil)
	_, newRaw := w.newKey(t)
	writeAtomic(t, path, header(newRaw))
	w.deleteKey(t, oldID)

	req, err := http.NewRequest(http.MethodPost, w.url+"/companies", io.NopCloser(strings.NewReader(`{"name":"x"}`)))
	if err != nil {
		t.Fatal(err)
	}
	if req.GetBody != nil {
		t.Fatal("the test needs a request without GetBody")
	}
	resp, err := tr.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a POST whose body cannot be replayed: got %d, want Codat's 401", resp.StatusCode)
	}
	seq := w.lastSeq() + 1
	if got := w.call(t, tr.Client(), http.MethodGet, ""); got != http.StatusOK {
		t.Fatalf("the next GET: got %d, want 200", got)
	}
	if got := w.companyEvents(seq); len(got) != 1 {
		t.Errorf("the next GET reached Codat %d times, want once", len(got))
	}
	if st := tr.Stats(); st.Unauthorized != 1 || st.Retries != 0 || st.Reads != 2 {
		t.Errorf("stats %+v, want 1 unauthorized, no retry, 2 reads", st)
	}
}

// TestUnauthorizedWithoutANewHeader: when the source still holds the
// refused header, the caller gets the 401 after one read and no retry;
// each request reaches Codat once: nothing loops.
func TestUnauthorizedWithoutANewHeader(t *testing.T) {
	w := newWorld(t)
	oldID, oldRaw := w.initial(t)
	w.newKey(t) // so that the initial key is not the last
	path := filePath(w, "codat")
	writeAtomic(t, path, header(oldRaw))
	tr := w.newTransport(t, path, time.Hour, nil)
	w.deleteKey(t, oldID)
	seq := w.lastSeq() + 1
	for i := range 3 {
		if got := w.call(t, tr.Client(), http.MethodGet, ""); got != http.StatusUnauthorized {
			t.Fatalf("request %d: got %d, want 401", i, got)
		}
	}
	if got := w.companyEvents(seq); len(got) != 3 {
		t.Errorf("Codat saw %d requests, want 3 (one each)", len(got))
	}
	if st := tr.Stats(); st.Unauthorized != 3 || st.Retries != 0 || st.Reads != 4 || st.Changes != 1 {
		t.Errorf("stats %+v, want 3 unauthorized, no retry, 1+3 reads, only the first read a change", st)
	}
}

// TestBurstOfUnauthorizedReadsOnce: many requests meeting a deleted key
// at once cost one read of the source, and every caller succeeds.
func TestBurstOfUnauthorizedReadsOnce(t *testing.T) {
	w := newWorld(t)
	oldID, oldRaw := w.initial(t)
	path := filePath(w, "codat")
	writeAtomic(t, path, header(oldRaw))
	tr := w.newTransport(t, path, time.Hour, nil)
	_, newRaw := w.newKey(t)
	writeAtomic(t, path, header(newRaw))
	w.deleteKey(t, oldID)
	c := tr.Client()
	var wg sync.WaitGroup
	statuses := make([]int, 20)
	for i := range statuses {
		wg.Go(func() { statuses[i] = w.call(t, c, http.MethodGet, "") })
	}
	wg.Wait()
	for i, s := range statuses {
		if s != http.StatusOK {
			t.Errorf("caller %d got %d, want 200", i, s)
		}
	}
	st := tr.Stats()
	if st.Reads != 2 {
		t.Errorf("reads: got %d, want 2 (the first, and one for the whole burst)", st.Reads)
	}
	if st.Unauthorized == 0 || st.Retries != st.Unauthorized {
		t.Errorf("stats %+v: want every 401 retried once", st)
	}
}

// gatedSource is a FileSource whose Load can be held, to show that
// requests wait for no read.
type gatedSource struct {
	*codatauth.FileSource
	loads   atomic.Int64
	hold    atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (g *gatedSource) Load(ctx context.Context) (codatauth.Credential, error) {
	g.loads.Add(1)
	if g.hold.Load() {
		g.entered <- struct{}{}
		<-g.release
	}
	return g.FileSource.Load(ctx)
}

// TestRequestPathNeitherLocksNorReads: requests read no source, and go
// through while a read of the source is stuck holding the transport's
// lock.
func TestRequestPathNeitherLocksNorReads(t *testing.T) {
	w := newWorld(t)
	_, raw := w.initial(t)
	path := filePath(w, "codat")
	writeAtomic(t, path, header(raw))
	src := &gatedSource{FileSource: codatauth.NewFileSource(path), entered: make(chan struct{}), release: make(chan struct{})}
	tr, err := codatauth.New(context.Background(), codatauth.Config{Source: src, BaseURL: w.url, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	c := tr.Client()
	for range 50 {
		if got := w.call(t, c, http.MethodGet, ""); got != http.StatusOK {
			t.Fatalf("got %d", got)
		}
	}
	if got := src.loads.Load(); got != 1 {
		t.Fatalf("50 requests made %d reads of the source, want only New's one", got)
	}
	src.hold.Store(true)
	refreshed := make(chan error)
	go func() { refreshed <- tr.Refresh(context.Background()) }()
	<-src.entered // the read now holds the lock, stuck in the source
	done := make(chan int)
	go func() {
		for range 50 {
			if got := w.call(t, c, http.MethodGet, ""); got != http.StatusOK {
				done <- got
				return
			}
		}
		done <- http.StatusOK
	}()
	select {
	case got := <-done:
		if got != http.StatusOK {
			t.Errorf("a request during the stuck read got %d", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("requests waited for the read of the source")
	}
	close(src.release)
	if err := <-refreshed; err != nil {
		t.Fatal(err)
	}
}

func inode(tb testing.TB, path string) uint64 {
	tb.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		tb.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// TestFileSourceFollowsTheFile: the transport follows a file replaced by
// rename (Vault Agent), rewritten in place, swapped behind kubelet's
// ..data symlink (a Kubernetes Secret volume), and rendered as JSON; a
// read that finds the file empty mid-write keeps the header in use.
// Every request after a change authenticates with the new key.
func TestFileSourceFollowsTheFile(t *testing.T) {
	w := newWorld(t)
	_, raw := w.initial(t)
	path := filePath(w, "codat")
	writeAtomic(t, path, header(raw))
	var ev events
	tr := w.newTransport(t, path, 20*time.Millisecond, &ev)
	c := tr.Client()
	uses := func(t *testing.T, id, raw string) {
		t.Helper()
		waitFor(t, "the transport to take the new header", func() bool { return tr.Current().Header.Reveal() == header(raw) })
		seq := w.lastSeq() + 1
		if got := w.call(t, c, http.MethodGet, ""); got != http.StatusOK {
			t.Fatalf("got %d, want 200", got)
		}
		if got := w.companyEvents(seq); len(got) != 1 || got[0].KeyID != id {
			t.Fatalf("emulator saw %+v, want one request with key %s", got, id)
		}
	}

	t.Run("atomic rename", func(t *testing.T) {
		id, raw := w.newKey(t)
		before := inode(t, path)
		writeAtomic(t, path, header(raw))
		if inode(t, path) == before {
			t.Fatal("the rename kept the inode")
		}
		uses(t, id, raw)
	})
	t.Run("in place", func(t *testing.T) {
		id, raw := w.newKey(t)
		before := inode(t, path)
		if err := os.WriteFile(path, []byte(header(raw)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if inode(t, path) != before {
			t.Fatal("the in-place write changed the inode")
		}
		uses(t, id, raw)
	})
	t.Run("emptied mid-write keeps the header", func(t *testing.T) {
		in := tr.Current().Header
		failures := tr.Stats().Failures
		if err := os.Truncate(path, 0); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "a failed read of the empty file", func() bool { return tr.Stats().Failures > failures })
		if tr.Current().Header != in {
			t.Fatal("an empty file replaced the header in use")
		}
		if got := w.call(t, c, http.MethodGet, ""); got != http.StatusOK {
			t.Fatalf("during the failed reads: got %d, want 200", got)
		}
		var failed *codatauth.Refresh
		for _, e := range ev.list() {
			if e.Err != nil {
				failed = &e
			}
		}
		if failed == nil || !errors.Is(failed.Err, codatauth.ErrMalformed) || failed.Changed || failed.Reason != codatauth.ReasonRetry && failed.Reason != codatauth.ReasonInterval {
			t.Errorf("failed read reported as %+v", failed)
		}
		id, raw := w.newKey(t)
		if err := os.WriteFile(path, []byte(header(raw)), 0o600); err != nil {
			t.Fatal(err)
		}
		uses(t, id, raw)
	})
	t.Run("JSON", func(t *testing.T) {
		id, raw := w.newKey(t)
		writeAtomic(t, path, fmt.Sprintf(`{"authorization_header":%q,"key_id":%q}`, header(raw), id))
		uses(t, id, raw)
		if got := tr.Current().KeyID; got != id {
			t.Errorf("KeyID: got %q, want %q", got, id)
		}
	})

	t.Run("kubernetes secret volume", func(t *testing.T) {
		// kubelet's atomic writer: name -> ..data/name, ..data -> ..<ts>,
		// and an update swaps ..data by renaming a new symlink over it.
		vol := filepath.Join(w.dir, "secret-volume")
		version := func(n int, content string) {
			dir := filepath.Join(vol, fmt.Sprintf("..2026_03_01_03_00_0%d", n))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "authorization"), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			tmp := filepath.Join(vol, "..data_tmp")
			if err := os.Symlink(filepath.Base(dir), tmp); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, filepath.Join(vol, "..data")); err != nil {
				t.Fatal(err)
			}
		}
		id1, raw1 := w.newKey(t)
		version(1, header(raw1))
		if err := os.Symlink("..data/authorization", filepath.Join(vol, "authorization")); err != nil {
			t.Fatal(err)
		}
		tr = w.newTransport(t, filepath.Join(vol, "authorization"), 20*time.Millisecond, nil)
		c = tr.Client()
		uses(t, id1, raw1)
		id2, raw2 := w.newKey(t)
		version(2, header(raw2))
		uses(t, id2, raw2)
	})
}

// TestNextRotationAtBringsARead: a transport with an hour's interval
// reads the source just after the secret's next_rotation_at, and so
// takes the key published then.
func TestNextRotationAtBringsARead(t *testing.T) {
	w := newWorld(t)
	_, raw := w.initial(t)
	path := filePath(w, "codat")
	due := time.Now().UTC().Truncate(time.Second).Add(2 * time.Second)
	writeAtomic(t, path, fmt.Sprintf(`{"authorization_header":%q,"next_rotation_at":%q}`, header(raw), due.Format(time.RFC3339)))
	var ev events
	tr := w.newTransport(t, path, time.Hour, &ev)
	_, newRaw := w.newKey(t)
	writeAtomic(t, path, fmt.Sprintf(`{"authorization_header":%q,"next_rotation_at":%q}`, header(newRaw), due.Add(time.Hour).Format(time.RFC3339)))
	waitFor(t, "a read after next_rotation_at", func() bool { return tr.Current().Header.Reveal() == header(newRaw) })
	got := ev.list()
	if len(got) != 2 || got[1].Reason != codatauth.ReasonRotationDue || !got[1].Changed || got[1].Time.Before(due) {
		t.Errorf("reads %+v, want the first and one after %s for the rotation", got, due)
	}
}

// TestPastDueBacksOff: while the secret still shows a next_rotation_at
// in the past (the new key is not published yet), reads come at 1 s,
// then 2 s after that, and so on.
func TestPastDueBacksOff(t *testing.T) {
	w := newWorld(t)
	_, raw := w.initial(t)
	path := filePath(w, "codat")
	writeAtomic(t, path, fmt.Sprintf(`{"authorization_header":%q,"next_rotation_at":%q}`, header(raw), time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)))
	var ev events
	w.newTransport(t, path, time.Hour, &ev)
	waitFor(t, "two reads past due", func() bool { return len(ev.list()) >= 3 })
	got := ev.list()
	for _, e := range got[1:3] {
		if e.Reason != codatauth.ReasonRotationDue || e.Changed || e.Err != nil {
			t.Errorf("read %+v, want an unchanged rotation-due read", e)
		}
	}
	if gap := got[2].Time.Sub(got[1].Time); gap < 2*time.Second {
		t.Errorf("second past-due read %s after the first, want the backoff doubled to 2s", gap)
	}
}

// TestFailedReadKeepsTheHeader: a source that fails keeps the header in
// use; the failure is reported and counted, and New refuses to start
// without a first read.
func TestFailedReadKeepsTheHeader(t *testing.T) {
	w := newWorld(t)
	_, raw := w.initial(t)
	path := filePath(w, "codat")
	writeAtomic(t, path, header(raw))
	var ev events
	tr := w.newTransport(t, path, time.Hour, &ev)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	err := tr.Refresh(context.Background())
	if !errors.Is(err, codatauth.ErrNotFound) {
		t.Fatalf("Refresh: got %v, want ErrNotFound", err)
	}
	if got := w.call(t, tr.Client(), http.MethodGet, ""); got != http.StatusOK {
		t.Fatalf("after a failed read: got %d, want 200", got)
	}
	if st := tr.Stats(); st.Reads != 2 || st.Failures != 1 {
		t.Errorf("stats %+v, want 2 reads, 1 failure", st)
	}
	if got := ev.list(); len(got) != 2 || got[1].Reason != codatauth.ReasonManual || !errors.Is(got[1].Err, codatauth.ErrNotFound) {
		t.Errorf("events %+v, want the failed manual read last", got)
	}
	noSecret(t, fmt.Sprintf("%+v", ev.list()), raw, header(raw))
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope")
	good := filepath.Join(dir, "codat")
	writeAtomic(t, good, docHeader)
	for _, tt := range []struct {
		name string
		cfg  codatauth.Config
		want string
		is   error
	}{
		{"no source", codatauth.Config{}, "codatauth: Config.Source is nil: use NewVaultSource or NewFileSource", nil},
		{"negative interval", codatauth.Config{Source: codatauth.NewFileSource(good), Interval: -time.Second}, "Config.Interval -1s: must not be negative", nil},
		{"plain http", codatauth.Config{Source: codatauth.NewFileSource(good), BaseURL: "http://api.codat.io"}, `Config.BaseURL "http://api.codat.io": plain http would send the Codat key in clear`, nil},
		{"not a URL", codatauth.Config{Source: codatauth.NewFileSource(good), BaseURL: "api.codat.io"}, `Config.BaseURL "api.codat.io": want an absolute http(s) URL`, nil},
		{"missing file", codatauth.Config{Source: codatauth.NewFileSource(missing)}, "codatauth: first read: file " + missing + ": codat credential not found", codatauth.ErrNotFound},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := codatauth.New(context.Background(), tt.cfg)
			if err == nil {
				tr.Close()
				t.Fatal("New: no error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want it to say %q", err, tt.want)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v does not match %v", err, tt.is)
			}
		})
	}
	for _, base := range []string{"http://127.0.0.1:8484", "http://localhost:1", "http://[::1]:2"} {
		tr, err := codatauth.New(context.Background(), codatauth.Config{Source: codatauth.NewFileSource(good), BaseURL: base})
		if err != nil {
			t.Errorf("loopback %s: %v", base, err)
			continue
		}
		tr.Close()
	}
	tr, err := codatauth.New(context.Background(), codatauth.Config{Source: codatauth.NewFileSource(good), BaseURL: "http://proxy.internal", AllowInsecureHTTP: true})
	if err != nil {
		t.Errorf("AllowInsecureHTTP: %v", err)
	} else {
		tr.Close()
	}
}
