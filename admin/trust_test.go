package admin

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("this test plays other users with chown: it needs root, which CI has")
		}
		t.Skip("needs root (chown)")
	}
}

// fakeDaemon answers every request on a socket at path with a made-up
// success, as the attacker did for root's rotate --emergency.
func fakeDaemon(t *testing.T, path string) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"pid":1,"version":"fake","results":[{"target":"prod","succeeded":true}]}`))
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
}

// TestDialRefusesAnUntrustedSocket: the client checks the socket and its
// directories before it believes an answer, and says what is wrong.
func TestDialRefusesAnUntrustedSocket(t *testing.T) {
	needRoot(t)
	const other = 54321 // a user that is neither root nor the daemon's
	for _, tt := range []struct {
		name  string
		setup func(t *testing.T, dir, sock string)
		want  string // "" when trusted
	}{
		{name: "a directory above the socket's that other users can write", want: "is writable by other users (mode 0777)", setup: func(t *testing.T, dir, sock string) {
			must(t, os.Chmod(filepath.Dir(dir), 0o777))
		}},
		// A Kubernetes emptyDir is 0777: the caller's own socket there is
		// trusted; a fake daemon's socket there is not (next case).
		{name: "the caller's socket in an open directory (an emptyDir)", setup: func(t *testing.T, dir, sock string) {
			must(t, os.Chmod(dir, 0o777))
		}},
		{name: "a fake daemon's socket in an open directory", want: "is owned by uid 54321", setup: func(t *testing.T, dir, sock string) {
			must(t, os.Chmod(dir, 0o777))
			must(t, os.Chown(sock, other, other))
		}},
		{name: "a group-writable directory above the socket's", want: "is writable by other users (mode 0770)", setup: func(t *testing.T, dir, sock string) {
			must(t, os.Chmod(filepath.Dir(dir), 0o770))
		}},
		{name: "a directory of another user", want: "belongs to uid 54321", setup: func(t *testing.T, dir, sock string) {
			must(t, os.Chown(dir, other, other))
			must(t, os.Chmod(dir, 0o755))
		}},
		{name: "a socket of another user in root's directory", want: "is owned by uid 54321, which is neither yours (uid 0), root's, nor that of its directory", setup: func(t *testing.T, dir, sock string) {
			must(t, os.Chown(sock, other, other))
		}},
		{name: "a symlink to another user's socket in an open directory", want: "is owned by uid 54321", setup: func(t *testing.T, dir, sock string) {
			open := filepath.Join(dir, "open")
			must(t, os.Mkdir(open, 0o777))
			must(t, os.Chmod(open, 0o777))
			must(t, os.Rename(sock, filepath.Join(open, "real.sock")))
			must(t, os.Chown(filepath.Join(open, "real.sock"), other, other))
			must(t, os.Symlink(filepath.Join(open, "real.sock"), sock))
		}},
		// As the daemon runs under systemd: /run/codat-rotator belongs to
		// its (dynamic) user, 0750, and so does the socket; root asks.
		{name: "the daemon's user's directory and socket", setup: func(t *testing.T, dir, sock string) {
			must(t, os.Chown(dir, other, other))
			must(t, os.Chmod(dir, 0o750))
			must(t, os.Chown(sock, other, other))
		}},
		{name: "a sticky shared directory, the socket root's", setup: func(t *testing.T, dir, sock string) {
			must(t, os.Chmod(dir, 0o777|os.ModeSticky))
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			base, err := os.MkdirTemp("", "crt") // short: a socket path holds ~100 bytes
			must(t, err)
			t.Cleanup(func() { os.RemoveAll(base) })
			dir := filepath.Join(base, "run")
			must(t, os.Mkdir(dir, 0o750))
			sock := filepath.Join(dir, "admin.sock")
			fakeDaemon(t, sock)
			tt.setup(t, dir, sock)
			c, err := Dial(context.Background(), sock)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("got %v, want it trusted", err)
				}
				c.Close()
				return
			}
			if err == nil {
				c.Close()
				t.Fatalf("dial succeeded, want %q", tt.want)
			}
			if !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want ErrUntrusted with %q", err, tt.want)
			}
		})
	}
}

// TestDialChecksWhoAnswers: the kernel's word on the answering process
// must be the socket owner's or root's.
func TestDialChecksWhoAnswers(t *testing.T) {
	base, err := os.MkdirTemp("", "crt")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(base) })
	sock := filepath.Join(base, "admin.sock")
	l, err := Listen(sock)
	must(t, err)
	srv := NewServer(NewHandler(nil, nil, "v"), slog.New(slog.DiscardHandler))
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	self := uint32(os.Geteuid())
	if _, err := dialTrusted(context.Background(), sock, 4242, func(net.Conn) (Peer, error) { return Peer{UID: 4243, PID: 7}, nil }); !errors.Is(err, ErrUntrusted) ||
		!strings.Contains(err.Error(), "answered by a process of uid 4243 (pid 7), not by the socket's owner (uid 4242) or root") {
		t.Errorf("another user's process: got %v", err)
	}
	c, err := dialTrusted(context.Background(), sock, self, peerCred)
	if err != nil {
		t.Fatalf("the owner's process: %v", err)
	}
	c.Close()
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
