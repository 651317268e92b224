package serve

import (
	"net"
	"testing"
	"time"
)

// TestListenerCap: with MaxConns open, Accept waits; closing one lets
// the next in. The accepted connection is reachable through NetConn.
func TestListenerCap(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Limits{MaxConns: 2}.Listener(raw)
	defer l.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	for range 3 {
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	var got []net.Conn
	for range 2 {
		select {
		case c := <-accepted:
			got = append(got, c)
		case <-time.After(5 * time.Second):
			t.Fatal("the first two connections were not accepted")
		}
	}
	if _, ok := got[0].(interface{ NetConn() net.Conn }).NetConn().(*net.TCPConn); !ok {
		t.Errorf("NetConn: got %T, want the accepted *net.TCPConn", got[0].(interface{ NetConn() net.Conn }).NetConn())
	}
	select {
	case <-accepted:
		t.Fatal("a third connection was accepted while two were open")
	case <-time.After(200 * time.Millisecond):
	}
	got[0].Close()
	got[0].Close() // a second Close releases nothing more
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("the third connection was not accepted after one closed")
	}
	l.Close()
	if _, ok := <-accepted; ok {
		t.Error("Accept after Close: got a connection")
	}
}
