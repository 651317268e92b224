// Package vaulttest runs a real `vault server -dev` for tests: on a free
// loopback port, with a random root token, one server per test binary,
// and a fresh KV v2 mount per test. There is no fake: when no vault
// binary can be found the test fails (run `make vault`).
package vaulttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// Server is a running dev server.
type Server struct {
	Addr      string // http://127.0.0.1:PORT (https:// from StartTLS)
	RootToken string
	// CACert is the PEM file of the CA that signed the server's
	// certificate (StartTLS); empty for plain HTTP.
	CACert   string
	Binary   string
	cmd      *exec.Cmd
	exited   chan error
	stopOnce sync.Once
	log      *bytes.Buffer
	logMu    *sync.Mutex
}

var (
	shared    *Server
	sharedErr error
	once      sync.Once
)

// Shared returns the test binary's one dev server, starting it on first
// use. Call Stop from TestMain after m.Run.
func Shared(tb testing.TB) *Server {
	tb.Helper()
	once.Do(func() { shared, sharedErr = Start() })
	if sharedErr != nil {
		tb.Fatalf("vault dev server: %v", sharedErr)
	}
	return shared
}

// StopShared stops the shared server if one was started.
func StopShared() {
	if shared != nil {
		shared.Stop()
	}
}

// Binary finds the vault binary: $VAULT_BIN, then vault on PATH, then
// bin/vault at the root of this repository.
func Binary() (string, error) {
	if p := os.Getenv("VAULT_BIN"); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("vault"); err == nil {
		return p, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "tools", "vault")); err == nil {
				p := filepath.Join(dir, "bin", "vault")
				if _, err := os.Stat(p); err == nil {
					return p, nil
				}
				break
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	return "", fmt.Errorf("no vault binary: set VAULT_BIN, put vault on PATH, or run `make vault` to build bin/vault")
}

// Start starts a new dev server and waits until it is unsealed and ready.
func Start() (*Server, error) { return start("") }

// StartTLS starts a dev server over TLS (`vault server -dev-tls`), its
// CA and certificate generated in certDir: CACert names the CA, which no
// client trusts unless told. Stop it when the test ends.
func StartTLS(certDir string) (*Server, error) { return start(certDir) }

func start(certDir string) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	token := "root-" + randomHex(12)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	args := []string{"server", "-dev",
		"-dev-listen-address=" + addr,
		"-dev-root-token-id=" + token,
		"-dev-no-store-token",
	}
	scheme, ca := "http", ""
	if certDir != "" {
		args = append(args, "-dev-tls", "-dev-tls-cert-dir="+certDir)
		scheme, ca = "https", filepath.Join(certDir, "vault-ca.pem")
	}
	cmd := exec.Command(bin, args...)
	// A clean environment: the developer's VAULT_* must not leak in.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.TempDir()}
	logBuf, mu := &bytes.Buffer{}, &sync.Mutex{}
	w := &lockedWriter{buf: logBuf, mu: mu}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan error, 1)
	s := &Server{Addr: scheme + "://" + addr, RootToken: token, CACert: ca, Binary: bin, cmd: cmd, exited: exited, log: logBuf, logMu: mu}
	go func() { exited <- cmd.Wait(); close(exited) }()

	deadline := time.Now().Add(60 * time.Second)
	var c *api.Client
	for {
		select {
		case err := <-exited:
			return nil, fmt.Errorf("vault server exited: %v\n%s", err, s.Log())
		default:
		}
		if c == nil {
			// Over TLS, the CA file appears once the server made it.
			if c, err = s.client(); err != nil {
				if time.Now().After(deadline) {
					s.Stop()
					return nil, err
				}
				time.Sleep(100 * time.Millisecond)
				continue
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		h, err := c.Sys().HealthWithContext(ctx)
		cancel()
		if err == nil && h.Initialized && !h.Sealed {
			// The dev server mounts KV v2 at secret/ last; wait for it.
			if m, err := c.Sys().ListMounts(); err == nil {
				if _, ok := m["secret/"]; ok {
					return s, nil
				}
			}
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("vault server not ready after 60s: %v\n%s", err, s.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop stops the server: SIGTERM, then SIGKILL after 5s.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(5 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
	})
}

// Log returns what the server printed.
func (s *Server) Log() string {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return s.log.String()
}

// Client returns a root-token API client.
func (s *Server) Client(tb testing.TB) *api.Client {
	tb.Helper()
	c, err := s.client()
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func (s *Server) client() (*api.Client, error) {
	conf := api.DefaultConfig()
	conf.Address = s.Addr
	if s.CACert != "" {
		if err := conf.ConfigureTLS(&api.TLSConfig{CACert: s.CACert}); err != nil {
			return nil, err
		}
	}
	c, err := api.NewClient(conf)
	if err != nil {
		return nil, err
	}
	c.ClearNamespace()
	c.SetToken(s.RootToken)
	return c, nil
}

// NewKV mounts a fresh KV v2 engine for one test and returns its path.
// It is unmounted when the test ends.
func (s *Server) NewKV(tb testing.TB) string {
	tb.Helper()
	return s.mount(tb, "2")
}

// NewKVv1 mounts a KV version 1 engine, for tests of the refusal.
func (s *Server) NewKVv1(tb testing.TB) string {
	tb.Helper()
	return s.mount(tb, "1")
}

func (s *Server) mount(tb testing.TB, version string) string {
	tb.Helper()
	c := s.Client(tb)
	path := "kv-" + randomHex(6)
	err := c.Sys().Mount(path, &api.MountInput{Type: "kv", Options: map[string]string{"version": version}})
	if err != nil {
		tb.Fatalf("mount kv v%s at %s: %v", version, path, err)
	}
	if version == "2" {
		// KV v2 upgrades its storage in the background after mounting;
		// writes fail until it is done.
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, err := c.KVv2(path).Put(context.Background(), "_ready", map[string]any{"ok": "1"})
			if err == nil {
				_ = c.KVv2(path).DeleteMetadata(context.Background(), "_ready")
				break
			}
			if time.Now().After(deadline) {
				tb.Fatalf("kv v2 at %s not ready: %v", path, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	tb.Cleanup(func() { _ = c.Sys().Unmount(path) })
	return path
}

// Token creates a token holding exactly the given policy (written from
// hcl) and returns it.
func (s *Server) Token(tb testing.TB, hcl string) string {
	tb.Helper()
	c := s.Client(tb)
	name := "p-" + randomHex(6)
	if err := c.Sys().PutPolicy(name, hcl); err != nil {
		tb.Fatalf("put policy: %v", err)
	}
	sec, err := c.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{name}, NoDefaultPolicy: true, TTL: "1h"})
	if err != nil {
		tb.Fatalf("create token: %v", err)
	}
	return sec.Auth.ClientToken
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

type lockedWriter struct {
	buf *bytes.Buffer
	mu  *sync.Mutex
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

// AppRole enables AppRole auth at a fresh path with one role whose
// tokens hold exactly the policy hcl and live ttl (such as "1m"), and
// returns the mount, the role id and a secret id. Disabling the mount
// when the test ends revokes its tokens.
func (s *Server) AppRole(tb testing.TB, hcl, ttl string) (mount, roleID, secretID string) {
	tb.Helper()
	c := s.Client(tb)
	mount = "approle-" + randomHex(5)
	if err := c.Sys().EnableAuthWithOptions(mount, &api.EnableAuthOptions{Type: "approle"}); err != nil {
		tb.Fatalf("enable approle: %v", err)
	}
	tb.Cleanup(func() { _ = c.Sys().DisableAuth(mount) })
	policy := "p-" + randomHex(6)
	if err := c.Sys().PutPolicy(policy, hcl); err != nil {
		tb.Fatalf("put policy: %v", err)
	}
	tb.Cleanup(func() { _ = c.Sys().DeletePolicy(policy) })
	role := "auth/" + mount + "/role/codat-rotator"
	if _, err := c.Logical().Write(role, map[string]any{"token_policies": []string{policy}, "token_ttl": ttl, "token_no_default_policy": true}); err != nil {
		tb.Fatalf("create approle role: %v", err)
	}
	rid, err := c.Logical().Read(role + "/role-id")
	if err != nil {
		tb.Fatalf("read role id: %v", err)
	}
	sid, err := c.Logical().Write(role+"/secret-id", nil)
	if err != nil {
		tb.Fatalf("make secret id: %v", err)
	}
	return mount, rid.Data["role_id"].(string), sid.Data["secret_id"].(string)
}
