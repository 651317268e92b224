package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
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
// refuses this process's user.
func Dial(ctx context.Context, path string) (*Client, error) {
	if path == "" {
		return nil, errors.New("admin socket: disabled")
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	c := &Client{path: path, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}}
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := c.Ping(pctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Ping asks the daemon who it is.
func (c *Client) Ping(ctx context.Context) (Ping, error) {
	var p Ping
	err := c.call(ctx, http.MethodGet, "/v1/ping", nil, &p)
	return p, err
}

// Rotate asks the daemon to rotate (or plan).
func (c *Client) Rotate(ctx context.Context, req RotateRequest) (RotateReport, error) {
	var rep RotateReport
	err := c.call(ctx, http.MethodPost, "/v1/rotate", req, &rep)
	return rep, err
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
func (c *Client) Resume(ctx context.Context, target string) error {
	return c.call(ctx, http.MethodPost, "/v1/resume", ResumeRequest{Target: target}, &ResumeReport{})
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
		var e errorReport
		if resp.StatusCode == http.StatusForbidden {
			_ = json.Unmarshal(raw, &e)
			return fmt.Errorf("admin socket %s: %w", c.path, refusedError(e.Error))
		}
		if json.Unmarshal(raw, &e) == nil && e.Error != "" {
			return fmt.Errorf("daemon: %s", e.Error)
		}
		return fmt.Errorf("daemon: %s", resp.Status)
	}
	return json.Unmarshal(raw, out)
}

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
