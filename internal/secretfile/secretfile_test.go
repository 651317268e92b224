package secretfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// asRoot fails the test, under CI too, when it cannot chown: the owner
// rules need root.
func asRoot(tb testing.TB) {
	tb.Helper()
	if os.Getuid() != 0 {
		if os.Getenv("CI") == "true" {
			tb.Fatal("the owner rules need root to chown test files")
		}
		tb.Skip("needs root to chown test files")
	}
}

func write(tb testing.TB, path string, mode os.FileMode, uid int) {
	tb.Helper()
	if err := os.WriteFile(path, []byte("s3cr3t\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // not the umask's
		tb.Fatal(err)
	}
	if err := os.Lchown(path, uid, -1); err != nil {
		tb.Fatal(err)
	}
}

func TestCheckRules(t *testing.T) {
	asRoot(t)
	dir := t.TempDir()
	tests := []struct {
		name     string
		mode     os.FileMode
		uid      int
		wantErr  string // "": accepted
		wantWarn string // "": no warning
	}{
		{"own 0600", 0o600, 0, "", ""},
		{"own 0400", 0o400, 0, "", ""},
		{"group-readable warns", 0o640, 0, "", "mode 0640 lets other users read the Codat key; chmod 600 it"},
		{"world-readable warns", 0o644, 0, "", "mode 0644 lets other users read the Codat key; chmod 600 it"},
		{"group-writable refused", 0o620, 0, "mode 0620 lets other users replace the Codat key; chmod 600 it", ""},
		{"world-writable refused", 0o602, 0, "mode 0602 lets other users replace the Codat key; chmod 600 it", ""},
		{"another user's refused", 0o600, 65534, "mode 0600, owned by uid 65534, who can replace the Codat key; only this process's uid (0) or root may own it: chown it", ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, "key"+string(rune('a'+i)))
			write(t, path, tt.mode, tt.uid)
			f := File{Field: "bootstrap_key_file", Path: path, Holds: "the Codat key"}
			data, warns, err := f.Read()
			if tt.wantErr != "" {
				want := "bootstrap_key_file " + path + ": " + tt.wantErr
				if err == nil || err.Error() != want || !errors.Is(err, ErrUnsafe) {
					t.Fatalf("got %v\nwant %s", err, want)
				}
				if data != nil {
					t.Errorf("refused, yet read %d bytes", len(data))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(data) != "s3cr3t\n" {
				t.Errorf("data: got %q", data)
			}
			var want []string
			if tt.wantWarn != "" {
				want = []string{"bootstrap_key_file " + path + ": " + tt.wantWarn}
			}
			if strings.Join(warns, "|") != strings.Join(want, "|") {
				t.Errorf("warnings: got %q, want %q", warns, want)
			}
		})
	}
}

func TestCheckMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope")
	_, _, err := File{Field: "token_file", Path: path, Holds: "the Vault token"}.Read()
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Errorf("got %v", err)
	}
}

// projected builds kubelet's atomic-writer layout in a temp dir:
// token -> ..data/token, ..data -> ..2024_01_02_03_04_05.1, with the
// real file root-owned, mode 0644.
func projected(tb testing.TB) (token string) {
	tb.Helper()
	dir := tb.TempDir()
	ts := filepath.Join(dir, "..2024_01_02_03_04_05.1")
	if err := os.Mkdir(ts, 0o755); err != nil {
		tb.Fatal(err)
	}
	write(tb, filepath.Join(ts, "token"), 0o644, 0)
	if err := os.Symlink("..2024_01_02_03_04_05.1", filepath.Join(dir, "..data")); err != nil {
		tb.Fatal(err)
	}
	token = filepath.Join(dir, "token")
	if err := os.Symlink("..data/token", token); err != nil {
		tb.Fatal(err)
	}
	return token
}

func TestProjectedTokenPassesQuietly(t *testing.T) {
	asRoot(t)
	token := projected(t)
	data, warns, err := File{Field: "vault.auth.kubernetes.token_file", Path: token, Holds: "the service-account token"}.Read()
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != "s3cr3t\n" || len(warns) != 0 {
		t.Errorf("got %q, warnings %q; want the token and no warning", data, warns)
	}
}

// TestProjectedLayoutNotRootOwned: the exception is for what kubelet
// writes (root-owned); a 0644 file of the process's own user in the same
// layout still warns, and one of another user is still refused.
func TestProjectedLayoutNotRootOwned(t *testing.T) {
	asRoot(t)
	token := projected(t)
	real, err := filepath.EvalSymlinks(token)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(real, 65534, -1); err != nil {
		t.Fatal(err)
	}
	_, _, err = File{Field: "token_file", Path: token, Holds: "the Vault token"}.Read()
	if !errors.Is(err, ErrUnsafe) {
		t.Errorf("another user's projected file: got %v, want a refusal", err)
	}
}

func TestProjectedLayoutWritableRefused(t *testing.T) {
	asRoot(t)
	token := projected(t)
	real, _ := filepath.EvalSymlinks(token)
	if err := os.Chmod(real, 0o666); err != nil {
		t.Fatal(err)
	}
	_, _, err := File{Field: "token_file", Path: token, Holds: "the Vault token"}.Read()
	if !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), "mode 0666") {
		t.Errorf("got %v, want a refusal naming mode 0666", err)
	}
}

// TestSymlinkOutsideProjectionWarns: a plain symlink to a 0644 file is
// judged by the file it names, and warns.
func TestSymlinkOutsideProjectionWarns(t *testing.T) {
	asRoot(t)
	dir := t.TempDir()
	real := filepath.Join(dir, "real")
	write(t, real, 0o644, 0)
	link := filepath.Join(dir, "link")
	if err := os.Symlink("real", link); err != nil {
		t.Fatal(err)
	}
	_, warns, err := File{Field: "token_file", Path: link, Holds: "the Vault token"}.Read()
	if err != nil || len(warns) != 1 || !strings.Contains(warns[0], "mode 0644") {
		t.Errorf("got %q, %v; want one warning naming mode 0644", warns, err)
	}
}

func TestProjected(t *testing.T) {
	asRoot(t)
	token := projected(t)
	plain := filepath.Join(t.TempDir(), "token")
	write(t, plain, 0o644, os.Getuid())
	for path, want := range map[string]bool{
		token: true,
		plain: false,
		"/var/run/secrets/kubernetes.io/serviceaccount/token": true,
		"/run/secrets/kubernetes.io/serviceaccount/token":     true,
		"/etc/codat-rotator/token":                            false,
	} {
		if got := Projected(path); got != want {
			t.Errorf("Projected(%s) = %v, want %v", path, got, want)
		}
	}
}

// TestReadChecksWhatItReads: a path swapped, again and again, between a
// safe file and one other users can write is never read while it names
// the unsafe one. Checking the path and then opening it by path once
// read the swapped-in file hundreds of times in such a loop.
func TestReadChecksWhatItReads(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "token")
	safe, evil := filepath.Join(dir, "safe"), filepath.Join(dir, "evil")
	for name, mode := range map[string]os.FileMode{safe: 0o600, evil: 0o666} {
		content := "good"
		if name == evil {
			content = "EVIL"
		}
		if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(name, mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Link(safe, path); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			src, tmp := safe, filepath.Join(dir, "tmp")
			if i%2 == 1 {
				src = evil
			}
			_ = os.Remove(tmp)
			if os.Link(src, tmp) == nil {
				_ = os.Rename(tmp, path)
			}
		}
	}()
	f := File{Field: "vault.auth.token_file", Path: path, Holds: "the Vault token"}
	var good, refused, leaked int
	for start := time.Now(); time.Since(start) < 2*time.Second && (good < 1000 || refused < 1000); {
		data, _, err := f.Read()
		switch {
		case errors.Is(err, ErrUnsafe):
			refused++
		case err != nil:
		case string(data) == "EVIL":
			leaked++
		default:
			good++
		}
	}
	close(stop)
	<-done
	t.Logf("reads: %d good, %d refused, %d of the unsafe file", good, refused, leaked)
	if good == 0 || refused == 0 {
		t.Fatalf("the swap was not exercised: %d good reads, %d refused", good, refused)
	}
	if leaked > 0 {
		t.Errorf("the unsafe file was read %d times: the check and the read saw different files", leaked)
	}
}
