//go:build !linux

package admin

import (
	"errors"
	"net"
)

// peerCred is Linux only (SO_PEERCRED); elsewhere the admin socket
// refuses every peer rather than trust the file mode alone.
func peerCred(net.Conn) (Peer, error) {
	return Peer{}, errors.New("peer credentials: SO_PEERCRED is Linux only")
}
