package admin_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/codat-rotator/codat-rotator/admin"
)

// servePeer serves canned() on a socket as a daemon of uid self that
// sees every peer as peer (or fails to read it, with credErr), and
// returns the socket and the daemon's log.
func servePeer(tb testing.TB, self uint32, peer admin.Peer, credErr error) (string, *bytes.Buffer) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "admin.sock")
	l, err := admin.Listen(path)
	if err != nil {
		tb.Fatal(err)
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	srv := admin.NewServerFor(admin.NewHandler(canned(), nil, "v-test"), log, self,
		func(net.Conn) (admin.Peer, error) { return peer, credErr })
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	tb.Cleanup(func() {
		srv.Close()
		<-done
	})
	return path, &logs
}

// TestPeerCheck: the daemon's user and root are let in; any other uid,
// and a peer whose credentials cannot be read, are refused with the
// reason, which the client returns as ErrRefused, and the daemon logs
// who it refused. serve() uses the real SO_PEERCRED check, so every
// other test here is a same-uid peer let in; a real peer of another uid
// is in the cmd tests.
func TestPeerCheck(t *testing.T) {
	const self = 1001
	for _, uid := range []uint32{self, 0} {
		path, _ := servePeer(t, self, admin.Peer{UID: uid, PID: 42}, nil)
		if c, err := admin.Dial(context.Background(), path); err != nil {
			t.Errorf("peer uid %d: %v, want accepted", uid, err)
		} else {
			c.Close()
		}
	}

	path, logs := servePeer(t, self, admin.Peer{UID: 2002, GID: 2002, PID: 4242}, nil)
	_, err := admin.Dial(context.Background(), path)
	want := "admin socket " + path + ": refused: the admin socket accepts only uid 1001 (the daemon's user) or root; run as that user or with sudo"
	if err == nil || err.Error() != want || !errors.Is(err, admin.ErrRefused) {
		t.Errorf("peer of another uid:\ngot  %v\nwant %s (ErrRefused)", err, want)
	}
	if got := logs.String(); !strings.Contains(got, "refused a peer of another user") || !strings.Contains(got, "peer_uid=2002") || !strings.Contains(got, "peer_pid=4242") {
		t.Errorf("the daemon's log does not name the refused peer:\n%s", got)
	}
	// Every route is behind the check, not only ping.
	if got := rawRequest(t, path, "POST", "/v1/rotate", `{}`); got.status != 403 || !strings.Contains(string(got.body), "refused:") {
		t.Errorf("rotate by another uid: %d %s, want 403 refused", got.status, got.body)
	}

	path, _ = servePeer(t, 0, admin.Peer{UID: 2002}, nil)
	if _, err := admin.Dial(context.Background(), path); err == nil || !strings.HasSuffix(err.Error(), "refused: the admin socket accepts only root (the daemon's user); run with sudo") {
		t.Errorf("peer of another uid, daemon as root: got %v", err)
	}

	path, _ = servePeer(t, self, admin.Peer{}, errors.New("SO_PEERCRED: boom"))
	if _, err := admin.Dial(context.Background(), path); !errors.Is(err, admin.ErrRefused) || !strings.Contains(err.Error(), "cannot tell who is connecting") {
		t.Errorf("unreadable credentials: got %v, want refused (fail closed)", err)
	}
}
