package vault_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/vault"
)

// blackhole accepts TCP connections and never answers on them: a Vault
// (or a load balancer in front of one) that is reachable but stuck. It
// holds every connection until the test ends.
func blackhole(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	tb.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return "http://" + l.Addr().String()
}

// A login that hangs holds up no other caller past that caller's own
// deadline (issue 22: /readyz waited ~30s on the lock the login held,
// three times the readiness probe's timeout).
func TestHungLoginBoundedByCallersContext(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("eyJhbGciOiJSUzI1NiJ9.e30.c2ln\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := vault.New(vault.Config{
		Address: blackhole(t),
		Auth:    vault.KubernetesAuth{Role: "codat-rotator", TokenFile: tokenFile},
		Timeout: 20 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	// The login in flight: as KeepAlive's, with no deadline of its own
	// but the client's request timeout.
	loginCtx, cancelLogin := context.WithCancel(context.Background())
	loginDone := make(chan struct{})
	var loginErr error
	go func() { loginErr = c.Login(loginCtx); close(loginDone) }()
	t.Cleanup(func() { cancelLogin(); <-loginDone })
	time.Sleep(200 * time.Millisecond) // let it take the login slot

	for _, call := range []struct {
		name string
		do   func(ctx context.Context) error
	}{
		{"ping", c.Ping},
		{"read", func(ctx context.Context) error {
			_, err := c.Read(ctx, vault.Location{Mount: "secret", Path: "codat/x"})
			return err
		}},
	} {
		t.Run(call.name, func(t *testing.T) {
			const deadline = 500 * time.Millisecond
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			start := time.Now()
			err := call.do(ctx)
			took := time.Since(start)
			if err == nil {
				t.Fatal("succeeded against a Vault that never answers")
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("error %q: want it to wrap context.DeadlineExceeded", err)
			}
			if took > deadline+time.Second {
				t.Errorf("returned after %s, want about its %s deadline", took.Round(time.Millisecond), deadline)
			}
		})
	}
	select {
	case <-loginDone:
		t.Errorf("the hanging login returned early: %v", loginErr)
	default:
	}
}
