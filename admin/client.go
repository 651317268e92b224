package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"syscall"
	"time"
)

// Client is the Service of a running daemon, over its admin socket.
type Client struct {
	path string
	http *http.Client
}

var _ Service = (*Client)(nil)

// Dial returns a client of the daemon that answers on the socket at
// path, or an error when none does (no path, no socket, no answer
// within two seconds), or ErrRefused when the daemon answers but
// refuses this process's user, or ErrUntrusted when the socket is one
// another user could have put there (checkSocket) or is answered by
// another user's process.
func Dial(ctx context.Context, path string) (*Client, error) {
	if path == "" {
		return nil, errors.New("admin socket: disabled")
	}
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return nil, notPermitted(path, err)
		}
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	owner, err := checkSocket(path, uint32(os.Geteuid()))
	if err != nil {
		return nil, err
	}
	c := &Client{path: path, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialTrusted(ctx, path, owner, peerCred)
		},
	}}}
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := c.Ping(pctx); err != nil {
		c.Close()
		if errors.Is(err, fs.ErrPermission) {
			return nil, notPermitted(path, err)
		}
		var ue *untrustedError
		if errors.As(err, &ue) {
			return nil, ue // said whole, without the transport's wrapping
		}
		return nil, err
	}
	return c, nil
}

// notPermitted is a socket this user may not open: the daemon runs as
// another user, whose socket only it and root may use. Working
// in-process instead would only meet its state file, so it is a
// refusal (ErrRefused) that says what to do.
func notPermitted(path string, _ error) error {
	owner := "the daemon's user"
	if fi, serr := os.Stat(path); serr == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			owner = fmt.Sprintf("the daemon's user (uid %d)", st.Uid)
		}
	}
	return refusedError(fmt.Sprintf("admin socket %s: %v: it accepts only %s and root; run this command as that user or with sudo",
		path, fs.ErrPermission, owner))
}

// Ping asks the daemon who it is.
func (c *Client) Ping(ctx context.Context) (Ping, error) {
	var p Ping
	err := c.call(ctx, http.MethodGet, "/v1/ping", nil, &p)
	return p, err
}

// Rotate asks the daemon to rotate (or plan). With req.Progress set, it
// asks for the answer as a stream and passes each retry on as it comes.
func (c *Client) Rotate(ctx context.Context, req RotateRequest) (RotateReport, error) {
	var rep RotateReport
	if req.Progress == nil {
		err := c.call(ctx, http.MethodPost, "/v1/rotate", req, &rep)
		return rep, err
	}
	resp, err := c.send(ctx, http.MethodPost, "/v1/rotate", req, streamType)
	if err != nil {
		return rep, err
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") != streamType {
		return rep, c.answer(resp, &rep) // refused before it ran, or an older daemon
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var l streamLine
		if err := dec.Decode(&l); err != nil {
			return rep, fmt.Errorf("admin socket %s: the answer ended early: %w", c.path, err)
		}
		switch {
		case l.Progress != nil:
			req.Progress(*l.Progress)
		case l.Report != nil:
			return *l.Report, nil
		case l.Error != nil:
			return rep, daemonError(*l.Error)
		}
	}
}

// Status asks the daemon for every target's status.
func (c *Client) Status(ctx context.Context) (StatusReport, error) {
	var rep StatusReport
	err := c.call(ctx, http.MethodGet, "/v1/status", nil, &rep)
	return rep, err
}

// Keys asks the daemon for the keys at Codat.
func (c *Client) Keys(ctx context.Context, target string) (KeysReport, error) {
	var rep KeysReport
	err := c.call(ctx, http.MethodGet, "/v1/keys?target="+url.QueryEscape(target), nil, &rep)
	return rep, err
}

// Resume asks the daemon to clear a target's halt.
func (c *Client) Resume(ctx context.Context, target string) (ResumeReport, error) {
	var rep ResumeReport
	err := c.call(ctx, http.MethodPost, "/v1/resume", ResumeRequest{Target: target}, &rep)
	return rep, err
}

// Takeover asks the daemon to take over a target.
func (c *Client) Takeover(ctx context.Context, target string) (TakeoverReport, error) {
	var rep TakeoverReport
	err := c.call(ctx, http.MethodPost, "/v1/takeover", TakeoverRequest{Target: target}, &rep)
	return rep, err
}

// Reload asks the daemon to re-read its config file and apply it; the
// error is the daemon's reason for keeping its running config.
func (c *Client) Reload(ctx context.Context) (ReloadReport, error) {
	var rep ReloadReport
	err := c.call(ctx, http.MethodPost, "/v1/reload", nil, &rep)
	return rep, err
}

// Close releases the client's idle connections.
func (c *Client) Close() error {
	c.http.CloseIdleConnections()
	return nil
}

// call sends one request; the answer decodes into out. An answer that
// is not 200 is the daemon's error.
func (c *Client) call(ctx context.Context, method, path string, in, out any) error {
	resp, err := c.send(ctx, method, path, in, "application/json")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return c.answer(resp, out)
}

// send sends one request, with in as its JSON body.
func (c *Client) send(ctx context.Context, method, path string, in any, accept string) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://codat-rotator"+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", accept)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", c.path, err)
	}
	return resp, nil
}

// answer decodes a plain answer into out, or returns the daemon's error.
func (c *Client) answer(resp *http.Response, out any) error {
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("admin socket %s: %w", c.path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e errorReport
		if resp.StatusCode == http.StatusForbidden {
			_ = json.Unmarshal(raw, &e)
			return fmt.Errorf("admin socket %s: %w", c.path, refusedError(e.Error))
		}
		if json.Unmarshal(raw, &e) == nil && e.Error != "" {
			return daemonError(e)
		}
		return fmt.Errorf("daemon: %s", resp.Status)
	}
	return json.Unmarshal(raw, out)
}

// daemonError is the daemon's error, matching ErrNoSuchTarget when it is
// one, so that an unknown target is the same mistake through the daemon
// as in-process.
func daemonError(e errorReport) error {
	switch e.Kind {
	case kindNoSuchTarget:
		return fmt.Errorf("daemon: %w", noSuchTargetError(e.Error))
	case kindConfig:
		return fmt.Errorf("daemon: %w", configRefusedError(e.Error))
	}
	return fmt.Errorf("daemon: %s", e.Error)
}

// configRefusedError is the daemon's ErrConfigRefused, in its words.
type configRefusedError string

func (e configRefusedError) Error() string        { return string(e) }
func (e configRefusedError) Is(target error) bool { return target == ErrConfigRefused }

// noSuchTargetError is the daemon's ErrNoSuchTarget, in its words.
type noSuchTargetError string

func (e noSuchTargetError) Error() string        { return string(e) }
func (e noSuchTargetError) Is(target error) bool { return target == ErrNoSuchTarget }

// refusedError is the daemon's refusal of this client, in its words; it
// is ErrRefused.
type refusedError string

func (e refusedError) Error() string {
	if e == "" {
		return ErrRefused.Error()
	}
	return string(e)
}

func (e refusedError) Is(target error) bool { return target == ErrRefused }
