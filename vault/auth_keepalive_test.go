package vault_test

import (
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/codat-rotator/codat-rotator/codat"
	"github.com/codat-rotator/codat-rotator/vault"
	"github.com/codat-rotator/codat-rotator/vault/vaulttest"
)

// gate is a TCP proxy on loopback in front of a Vault: while shut it
// drops every connection it accepts, as a Vault that is still starting
// or a network blip does; once opened it forwards them.
type gate struct {
	l       net.Listener
	backend string // host:port

	mu      sync.Mutex
	open    bool
	dropped int
	conns   []net.Conn // forwarded, closed with the gate
	closed  bool
}

func newGate(tb testing.TB, backendURL string) *gate {
	tb.Helper()
	u, err := url.Parse(backendURL)
	if err != nil {
		tb.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	g := &gate{l: l, backend: u.Host}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		g.serve(&wg)
	}()
	tb.Cleanup(func() {
		l.Close()
		g.mu.Lock()
		g.closed = true
		for _, c := range g.conns {
			c.Close() // idle keep-alive connections would hold wg for 90s
		}
		g.mu.Unlock()
		wg.Wait()
	})
	return g
}

func (g *gate) URL() string { return "http://" + g.l.Addr().String() }

func (g *gate) setOpen(open bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.open = open
}

// drops is how many connections the gate dropped while shut.
func (g *gate) drops() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.dropped
}

func (g *gate) serve(wg *sync.WaitGroup) {
	for {
		conn, err := g.l.Accept()
		if err != nil {
			return // closed at the test's end
		}
		g.mu.Lock()
		if g.closed {
			g.mu.Unlock()
			conn.Close()
			return
		}
		open := g.open
		if open {
			g.conns = append(g.conns, conn)
		} else {
			g.dropped++
		}
		g.mu.Unlock()
		if !open {
			conn.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			up, err := net.Dial("tcp", g.backend)
			if err != nil {
				return
			}
			defer up.Close()
			done := make(chan struct{}, 2)
			go func() { _, _ = io.Copy(up, conn); done <- struct{}{} }()
			go func() { _, _ = io.Copy(conn, up); done <- struct{}{} }()
			<-done // either side ending ends both: the deferred closes
		}()
	}
}

// TestKeepAliveLookupRetried: a renewable token that KeepAlive cannot
// look up at first (Vault not reachable yet) is looked up again, with
// backoff and one warning, and renewed once Vault answers (issue 9,
// defect 4: it used to give up after one lookup and let the token
// expire).
func TestKeepAliveLookupRetried(t *testing.T) {
	t.Parallel() // waits for real backoff
	srv := vaulttest.Shared(t)
	root := srv.Client(t)
	token := srv.Token(t, `path "auth/token/lookup-self" { capabilities = ["read"] }
path "auth/token/renew-self" { capabilities = ["update"] }`)
	expireTime := func() time.Time {
		t.Helper()
		sec, err := root.Auth().Token().Lookup(token)
		if err != nil {
			t.Fatalf("lookup: %v", err)
		}
		return tokenTime(t, sec, "expire_time")
	}
	expiresBefore := expireTime()

	g := newGate(t, srv.Addr)
	c, err := vault.New(vault.Config{Address: g.URL(), Token: codat.Secret(token)})
	if err != nil {
		t.Fatal(err)
	}
	logs, stop := keepAlive(t, c)
	// Shut for 2.5s: lookups at 0s and 1s fail; the one at 3s gets through.
	time.Sleep(2500 * time.Millisecond)
	opened := time.Now()
	g.setOpen(true)
	droppedWhileShut := g.drops()

	waitFor(t, 5*time.Second, "the token was not renewed after vault became reachable", func() bool {
		sec, err := root.Auth().Token().Lookup(token)
		if err != nil {
			t.Fatalf("lookup: %v", err)
		}
		if lr, _ := sec.Data["last_renewal"].(string); lr == "" {
			return false
		}
		return tokenTime(t, sec, "last_renewal").After(opened.Add(-time.Second))
	})
	if got := expireTime(); !got.After(expiresBefore) {
		t.Errorf("expire_time %v did not move past %v: the renewal did not extend the token", got, expiresBefore)
	}
	stop()
	if droppedWhileShut < 2 || droppedWhileShut > 4 {
		t.Errorf("%d lookups in the 2.5s vault was unreachable, want 2-4: retried with backoff, not given up, not a tight loop", droppedWhileShut)
	}
	out := logs.String()
	t.Logf("KeepAlive's log:\n%s", out)
	if n := strings.Count(out, "cannot look up the vault token"); n != 1 {
		t.Errorf("the lookup failure was logged %d times, want once per failure streak:\n%s", n, out)
	}
	assertContains(t, out, "vault token looked up again; renewing it", fmt.Sprintf("failed_lookups=%d", droppedWhileShut))
}

// tokenTime reads a time field of a token lookup.
func tokenTime(tb testing.TB, sec *api.Secret, field string) time.Time {
	tb.Helper()
	s, _ := sec.Data[field].(string)
	at, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		tb.Fatalf("token %s %q: %v", field, s, err)
	}
	return at
}
