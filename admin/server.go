package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/codat-rotator/codat-rotator/internal/serve"
)

// The admin socket: HTTP over a unix socket (mode 0600), never TCP.

// NewHandler serves svc as the admin API of a running daemon of the
// given version; reload, when not nil, serves POST /v1/reload.
func NewHandler(svc Service, reload Reload, version string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/ping", func(w http.ResponseWriter, r *http.Request) {
		write(w, http.StatusOK, Ping{PID: os.Getpid(), Version: version})
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		rep, err := svc.Status(r.Context())
		if err != nil {
			writeError(w, err)
			return
		}
		rep.Daemon = true
		write(w, http.StatusOK, rep)
	})
	mux.HandleFunc("GET /v1/keys", func(w http.ResponseWriter, r *http.Request) {
		rep, err := svc.Keys(r.Context(), r.URL.Query().Get("target"))
		if err != nil {
			writeError(w, err)
			return
		}
		write(w, http.StatusOK, rep)
	})
	mux.HandleFunc("POST /v1/rotate", func(w http.ResponseWriter, r *http.Request) {
		var req RotateRequest
		if err := decode(r, &req); err != nil {
			write(w, http.StatusBadRequest, errorReport{Error: err.Error()})
			return
		}
		var st *stream
		if strings.Contains(r.Header.Get("Accept"), streamType) {
			st = &stream{w: w}
			req.Progress = st.progress
		}
		rep, err := svc.Rotate(r.Context(), req)
		if st != nil {
			st.finish(rep, err)
			return
		}
		if err != nil {
			writeError(w, err)
			return
		}
		write(w, http.StatusOK, rep)
	})
	mux.HandleFunc("POST /v1/resume", func(w http.ResponseWriter, r *http.Request) {
		var req ResumeRequest
		if err := decode(r, &req); err != nil {
			write(w, http.StatusBadRequest, errorReport{Error: err.Error()})
			return
		}
		if req.Target == "" {
			write(w, http.StatusBadRequest, errorReport{Error: "resume: name one target"})
			return
		}
		rep, err := svc.Resume(r.Context(), req.Target)
		if err != nil {
			writeError(w, err)
			return
		}
		write(w, http.StatusOK, rep)
	})
	mux.HandleFunc("POST /v1/takeover", func(w http.ResponseWriter, r *http.Request) {
		var req TakeoverRequest
		if err := decode(r, &req); err != nil {
			write(w, http.StatusBadRequest, errorReport{Error: err.Error()})
			return
		}
		if req.Target == "" {
			write(w, http.StatusBadRequest, errorReport{Error: "takeover: name one target"})
			return
		}
		rep, err := svc.Takeover(r.Context(), req.Target)
		if err != nil {
			writeError(w, err)
			return
		}
		write(w, http.StatusOK, rep)
	})
	mux.HandleFunc("POST /v1/reload", func(w http.ResponseWriter, r *http.Request) {
		if reload == nil {
			write(w, http.StatusNotImplemented, errorReport{Error: "this server cannot reload a config"})
			return
		}
		rep, err := reload(r.Context())
		if err != nil {
			writeError(w, err)
			return
		}
		write(w, http.StatusOK, rep)
	})
	return mux
}

func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("request body: %w", err)
	}
	return nil
}

// limits bound the admin socket's server. Only the daemon's user and
// root can connect, but a stuck script of theirs should not hold the
// daemon's descriptors either. A rotation takes as long as it takes: the
// write timeout bounds a client that does not read, counted afresh
// before each answer or stream line is written (extendWrite), not the
// work before it.
var limits = serve.Limits{
	ReadHeaderTimeout: 10 * time.Second,
	ReadTimeout:       30 * time.Second,
	WriteTimeout:      time.Minute,
	IdleTimeout:       2 * time.Minute,
	MaxConns:          16,
}

// extendWrite gives the answer about to be written the full write
// timeout, however long the handler worked before it.
func extendWrite(w http.ResponseWriter) {
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(limits.WriteTimeout))
}

func write(w http.ResponseWriter, status int, v any) {
	extendWrite(w)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError answers 400 for a request naming no configured target, 500
// for anything else.
func writeError(w http.ResponseWriter, err error) {
	status, rep := http.StatusInternalServerError, reportOf(err)
	if rep.Kind == kindNoSuchTarget {
		status = http.StatusBadRequest
	}
	write(w, status, rep)
}

func reportOf(err error) errorReport {
	rep := errorReport{Error: err.Error()}
	switch {
	case errors.Is(err, ErrNoSuchTarget):
		rep.Kind = kindNoSuchTarget
	case errors.Is(err, ErrConfigRefused):
		rep.Kind = kindConfig
	}
	return rep
}

// stream answers a rotation as lines (streamType): each retry as it
// happens, then the report. Nothing is committed before the first line,
// so a request refused before anything ran (an unknown target) keeps its
// plain answer and status.
type stream struct {
	mu      sync.Mutex
	w       http.ResponseWriter
	started bool
	done    bool
}

func (s *stream) line(l streamLine) {
	extendWrite(s.w)
	if !s.started {
		s.w.Header().Set("Content-Type", streamType)
		s.w.WriteHeader(http.StatusOK)
		s.started = true
	}
	_ = json.NewEncoder(s.w).Encode(l)
	_ = http.NewResponseController(s.w).Flush()
}

// progress sends a retry; it may come from the goroutine that runs the
// rotation, never after finish.
func (s *stream) progress(p Progress) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.done {
		s.line(streamLine{Progress: &p})
	}
}

func (s *stream) finish(rep RotateReport, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done = true
	switch {
	case !s.started && err != nil:
		writeError(s.w, err)
	case !s.started:
		write(s.w, http.StatusOK, rep)
	case err != nil:
		e := reportOf(err)
		s.line(streamLine{Error: &e})
	default:
		s.line(streamLine{Report: &rep})
	}
}

// Listen listens on the unix socket at path with mode 0600. A stale
// socket file left by a crash is replaced; a live one means another
// daemon runs.
func Listen(path string) (net.Listener, error) {
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
	return limits.Listener(l), nil
}
