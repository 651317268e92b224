package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
)

// The admin socket's second lock, after its file mode: the kernel's word
// (SO_PEERCRED) on who is at the other end. Only the daemon's own user
// and root may ask it anything; a mode loosened by mistake (or a
// directory another user can reach) opens nothing.

// Peer is the process at the other end of an admin connection, as the
// kernel saw it when that process connected.
type Peer struct {
	UID, GID uint32
	PID      int32
}

type peerKey struct{}

// peerResult is what ConnContext found: the peer, or why there is none.
type peerResult struct {
	peer Peer
	err  error
}

// NewServer returns the HTTP server of the admin socket: h behind the
// peer check, which answers 403 with the reason to a peer whose uid is
// neither the daemon's nor root's, and logs it. Serve it on a listener
// from Listen.
func NewServer(h http.Handler, log *slog.Logger) *http.Server {
	return newServer(h, log, uint32(os.Getuid()), peerCred)
}

// newServer is NewServer with the daemon's uid and the credential read
// given, for tests.
func newServer(h http.Handler, log *slog.Logger, self uint32, cred func(net.Conn) (Peer, error)) *http.Server {
	srv := limits.Server(requirePeer(h, log, self), slog.NewLogLogger(log.Handler(), slog.LevelWarn))
	srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		p, err := cred(c)
		return context.WithValue(ctx, peerKey{}, peerResult{p, err})
	}
	return srv
}

// requirePeer lets through the requests of a peer with uid self or 0.
// A connection without credentials (not a unix socket, or a server not
// built by NewServer) is refused: the check fails closed.
func requirePeer(h http.Handler, log *slog.Logger, self uint32) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		res, ok := r.Context().Value(peerKey{}).(peerResult)
		if !ok {
			res.err = errors.New("no peer credentials on the connection")
		}
		switch {
		case res.err != nil:
			log.Error("admin socket: refused a peer whose credentials cannot be read", "error", res.err)
			write(w, http.StatusForbidden, errorReport{Error: "refused: the daemon cannot tell who is connecting: " + res.err.Error()})
			return
		case res.peer.UID != self && res.peer.UID != 0:
			log.Warn("admin socket: refused a peer of another user",
				"peer_uid", res.peer.UID, "peer_gid", res.peer.GID, "peer_pid", res.peer.PID, "allowed_uid", self)
			write(w, http.StatusForbidden, errorReport{Error: refusal(self)})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// refusal is what a refused peer reads.
func refusal(self uint32) string {
	if self == 0 {
		return "refused: the admin socket accepts only root (the daemon's user); run with sudo"
	}
	return fmt.Sprintf("refused: the admin socket accepts only uid %d (the daemon's user) or root; run as that user or with sudo", self)
}
