package codatauth_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/codatauth"
)

// cloning is the usual way to set a header in a RoundTripper (as
// golang.org/x/oauth2 does): req.Clone and Header.Set. It is measured
// beside codatauth for reference.
type cloning struct {
	base  http.RoundTripper
	value string
}

func (c cloning) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", c.value)
	return c.base.RoundTrip(r)
}

// answered is the base of the in-memory benchmarks: it answers every
// request at once with one shared 200, so that what is left to measure
// is the cost of the transport in front of it.
type answered struct{ resp *http.Response }

func (a answered) RoundTrip(*http.Request) (*http.Response, error) { return a.resp, nil }

// BenchmarkRoundTrip measures what the transport adds to a request: over
// a base that answers in memory (the transport's own cost), and over a
// real http.Transport to a loopback server (the cost beside a request's
// own). "plain" is the base alone, with the header already on the
// request, as an application with a fixed key sends it; "clone" is
// req.Clone and Header.Set in front of the base, for reference;
// "parallel" runs on every core, to show that the request path shares no
// lock.
// docs/benchmarks.md holds the numbers.
func BenchmarkRoundTrip(b *testing.B) {
	path := filepath.Join(b.TempDir(), "codat")
	writeAtomic(b, path, docHeader)
	newTransport := func(b *testing.B, base http.RoundTripper, baseURL string) *codatauth.Transport {
		tr, err := codatauth.New(context.Background(), codatauth.Config{Source: codatauth.NewFileSource(path), BaseURL: baseURL, Base: base, Interval: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = tr.Close() })
		return tr
	}
	// A request as an application sends one: a few headers of its own,
	// and the Authorization header for the plain base.
	request := func(b *testing.B, url string) *http.Request {
		req, err := http.NewRequest(http.MethodGet, url+"/companies?page=1&pageSize=100", nil)
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Accept", "application/json")
		req.Header.Set("User-Agent", "consumer/1.0")
		return req
	}
	withAuth := func(req *http.Request) *http.Request {
		r := req.Clone(req.Context())
		r.Header.Set("Authorization", docHeader)
		return r
	}
	send := func(b *testing.B, rt http.RoundTripper, req *http.Request) {
		resp, err := rt.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}

	memory := answered{resp: &http.Response{StatusCode: http.StatusOK, Body: http.NoBody}}
	memReq := request(b, codatauth.DefaultBaseURL)
	memTr := newTransport(b, memory, codatauth.DefaultBaseURL)
	for _, bc := range []struct {
		name string
		rt   http.RoundTripper
		req  *http.Request
	}{
		{"memory/plain", memory, withAuth(memReq)},
		{"memory/clone", cloning{memory, docHeader}, memReq},
		{"memory/codatauth", memTr, memReq},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				send(b, bc.rt, bc.req)
			}
		})
		b.Run(bc.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					send(b, bc.rt, bc.req)
				}
			})
		})
	}

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"results":[],"pageNumber":1,"pageSize":100,"totalResults":0}`)
	}))
	b.Cleanup(srv.Close)
	plain := &http.Transport{MaxIdleConnsPerHost: 64}
	b.Cleanup(plain.CloseIdleConnections)
	through := &http.Transport{MaxIdleConnsPerHost: 64}
	b.Cleanup(through.CloseIdleConnections)
	loopReq := request(b, srv.URL)
	for _, bc := range []struct {
		name string
		rt   http.RoundTripper
		req  *http.Request
	}{
		{"loopback/plain", plain, withAuth(loopReq)},
		{"loopback/codatauth", newTransport(b, through, srv.URL), loopReq},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				send(b, bc.rt, bc.req)
			}
		})
	}
}
