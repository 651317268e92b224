// Package serve bounds what an HTTP server of the daemon holds for its
// clients: how long a connection may take to send its request, to read
// the answer and to sit idle, and how many connections are open at
// once. Without these, a client that opens connections and sends
// nothing keeps each one (and its memory and descriptor) for ever.
package serve

import (
	"log"
	"net"
	"net/http"
	"sync"
	"time"
)

// Limits are one server's bounds. Every field must be positive.
type Limits struct {
	// ReadHeaderTimeout closes a connection that has not sent a whole
	// request header in time (a fresh one that sends nothing included).
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing an answer to a client that reads it
	// slowly or not at all.
	WriteTimeout time.Duration
	// IdleTimeout closes a kept-alive connection that sends no next
	// request.
	IdleTimeout time.Duration
	// MaxConns bounds the connections open at once. Past it, new
	// connections wait in the kernel's backlog, costing the process
	// nothing, until one closes.
	MaxConns int
}

// Server returns an http.Server for h with l's timeouts.
func (l Limits) Server(h http.Handler, errorLog *log.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		ErrorLog:          errorLog,
	}
}

// Listener returns ln bounded to l.MaxConns open connections: Accept
// waits while that many are open. It is golang.org/x/net/netutil's
// LimitListener but for one thing: its connections give the accepted
// one back through NetConn (as crypto/tls does), which the admin socket
// needs to read its peer's credentials.
func (l Limits) Listener(ln net.Listener) net.Listener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, l.MaxConns), done: make(chan struct{})}
}

type limitListener struct {
	net.Listener
	sem       chan struct{}
	closeOnce sync.Once
	done      chan struct{}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

func (l *limitListener) Close() error {
	err := l.Listener.Close()
	l.closeOnce.Do(func() { close(l.done) })
	return err
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

// NetConn returns the accepted connection.
func (c *limitConn) NetConn() net.Conn { return c.Conn }

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
