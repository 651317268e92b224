package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/store"
)

// The admin socket: HTTP over a unix socket (mode 0600), never TCP, for
// rotate, status, keys and resume while the daemon runs.

// adminHandler serves the admin API of a running daemon.
func adminHandler(a *app, sched *rotation.Scheduler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/ping", func(w http.ResponseWriter, r *http.Request) {
		writeAdmin(w, http.StatusOK, map[string]any{"pid": os.Getpid(), "version": version})
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		doc, err := buildStatus(a.engine.Store.Load, a.allTargets(), sched.Next, time.Now().UTC())
		if err != nil {
			writeAdminError(w, http.StatusInternalServerError, err)
			return
		}
		doc.Daemon = true
		writeAdmin(w, http.StatusOK, doc)
	})
	mux.HandleFunc("GET /v1/keys", func(w http.ResponseWriter, r *http.Request) {
		targets, err := a.selectTargets(r.URL.Query().Get("target"))
		if err != nil {
			writeAdminError(w, http.StatusBadRequest, err)
			return
		}
		writeAdmin(w, http.StatusOK, buildKeys(r.Context(), a, targets))
	})
	mux.HandleFunc("POST /v1/rotate", func(w http.ResponseWriter, r *http.Request) {
		var req rotateRequest
		if err := decodeAdmin(r, &req); err != nil {
			writeAdminError(w, http.StatusBadRequest, err)
			return
		}
		targets, err := a.selectTargets(req.Target)
		if err != nil {
			writeAdminError(w, http.StatusBadRequest, err)
			return
		}
		doc := rotateInProcess(r.Context(), a, targets, req, func(t rotation.Target, opts rotation.Options) (rotation.Result, error) {
			return sched.RotateNow(t.Name, opts)
		})
		writeAdmin(w, http.StatusOK, doc)
	})
	mux.HandleFunc("POST /v1/resume", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Target string `json:"target"`
		}
		if err := decodeAdmin(r, &req); err != nil {
			writeAdminError(w, http.StatusBadRequest, err)
			return
		}
		targets, err := a.selectTargets(req.Target)
		if err != nil || req.Target == "" {
			writeAdminError(w, http.StatusBadRequest, fmt.Errorf("resume: name one target: %v", err))
			return
		}
		if err := a.engine.Resume(targets[0]); err != nil {
			writeAdminError(w, http.StatusInternalServerError, err)
			return
		}
		a.log.Info("target resumed by an operator", "target", req.Target)
		writeAdmin(w, http.StatusOK, map[string]string{"resumed": req.Target})
	})
	return mux
}

func decodeAdmin(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("request body: %w", err)
	}
	return nil
}

func writeAdmin(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeAdminError(w http.ResponseWriter, status int, err error) {
	writeAdmin(w, status, map[string]string{"error": err.Error()})
}

// listenAdmin listens on the unix socket at path with mode 0600. A stale
// socket file left by a crash is replaced; a live one means another
// daemon runs.
func listenAdmin(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("admin socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("admin socket %s: exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("admin socket %s: another daemon answers on it", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("admin socket %s: remove stale socket: %w", path, err)
		}
	}
	old := syscall.Umask(0o177) // the socket is born 0600, with no window
	l, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	return l, nil
}

// adminClient talks to a daemon's admin socket.
type adminClient struct {
	path string
	http *http.Client
}

// dialDaemon returns a client when a daemon answers on the socket.
func dialDaemon(ctx context.Context, path string) (*adminClient, bool) {
	if path == "" {
		return nil, false
	}
	if _, err := os.Stat(path); err != nil {
		return nil, false
	}
	c := &adminClient{path: path, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}}
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := c.call(pctx, "GET", "/v1/ping", nil, nil); err != nil {
		return nil, false
	}
	return c, true
}

// call sends one request; the answer decodes into out.
func (c *adminClient) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://codat-rotator"+path, body)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("admin socket %s: %w", c.path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("admin socket %s: %w", c.path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(raw, &e) == nil && e.Error != "" {
			return fmt.Errorf("daemon: %s", e.Error)
		}
		return fmt.Errorf("daemon: %s", resp.Status)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(raw, out)
}

// explainLocked turns "state file locked" into what the operator needs:
// a daemon holds it, and its admin socket did not answer.
func explainLocked(err error, socket string) error {
	if !errors.Is(err, store.ErrLocked) {
		return err
	}
	if socket == "" {
		return fmt.Errorf("%w; the admin socket is disabled (listen.admin_socket), so this command cannot reach the daemon", err)
	}
	return fmt.Errorf("%w; its admin socket %s does not answer (is listen.admin_socket the same for both?)", err, socket)
}
