package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/codat"
	"github.com/codat-rotator/codat-rotator/codat/emulator"
	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/rotation/adapt"
	"github.com/codat-rotator/codat-rotator/store"
	"github.com/codat-rotator/codat-rotator/vault"
	"github.com/codat-rotator/codat-rotator/vault/vaulttest"
)

// Benchmarks that print numbers; docs/benchmarks.md holds the results
// and `make bench` (and `make soak`) runs them. None of them runs
// without -bench, so `make test` stays fast.

var (
	benchIdle      = flag.Duration("bench.idle", 60*time.Second, "how long BenchmarkIdleFootprint and BenchmarkIdleWakeups watch an idle daemon")
	benchFleetSize = flag.Int("bench.fleet", 1000, "targets in BenchmarkFleet")
	soakRotations  = flag.Int("soak.rotations", 0, "rotations BenchmarkSoak waits for (0 skips it)")
	soakEvery      = flag.Duration("soak.every", 0, "how often BenchmarkSoak samples the daemon (0: about 50 samples)")
)

// latencyProxy forwards to next after a fixed delay, and counts.
type latencyProxy struct {
	next  http.Handler
	delay time.Duration
	n     atomic.Int64
}

func (p *latencyProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.n.Add(1)
	if p.delay > 0 {
		time.Sleep(p.delay)
	}
	p.next.ServeHTTP(w, r)
}

// benchWorld is an emulator and a Vault mount, both behind the same
// added latency.
type benchWorld struct {
	lat      time.Duration
	emu      *emulator.Server
	codatURL string
	vs       *vaulttest.Server
	vproxy   *latencyProxy
	vaultURL string
	mount    string
	stateDir string
}

func latencyFaults(d time.Duration) emulator.Faults {
	l := emulator.OpFaults{Latency: emulator.Duration(d)}
	return emulator.Faults{List: l, Create: l, Delete: l}
}

func newBenchWorld(b *testing.B, lat time.Duration) *benchWorld {
	b.Helper()
	vs := vaulttest.Shared(b)
	w := &benchWorld{lat: lat, vs: vs, mount: vs.NewKV(b), stateDir: b.TempDir()}
	var err error
	if w.emu, err = emulator.New(emulator.Options{Faults: latencyFaults(lat)}); err != nil {
		b.Fatal(err)
	}
	codatSrv := httptest.NewServer(w.emu)
	b.Cleanup(func() { w.emu.Close(); codatSrv.Close() })
	w.codatURL = codatSrv.URL
	target, _ := url.Parse(vs.Addr)
	w.vproxy = &latencyProxy{next: httputil.NewSingleHostReverseProxy(target), delay: lat}
	vaultSrv := httptest.NewServer(w.vproxy)
	b.Cleanup(vaultSrv.Close)
	w.vaultURL = vaultSrv.URL
	return w
}

// benchTarget is one target of a generated config.
type benchTarget struct {
	name, codatURL, mount, path, schedule, grace string
	bootstrapEnv                                 string
}

// writeBenchConfig writes a config with the given targets and returns
// its path.
func writeBenchConfig(b *testing.B, dir, vaultURL, metrics, sock string, targets []benchTarget) string {
	b.Helper()
	var sb strings.Builder
	if *benchBudget >= 0 {
		// Off by default: these benchmarks measure the daemon, not the
		// Codat budget (BenchmarkFleetBudget does).
		fmt.Fprintf(&sb, "codat_requests_per_minute: %d\n", *benchBudget)
	}
	fmt.Fprintf(&sb, "state_path: %s\nlog: {level: info, format: json}\nlisten:\n  metrics: %q\n  admin_socket: %q\nvault:\n  address: %s\ntargets:\n",
		filepath.Join(dir, "state.db"), metrics, sock, vaultURL)
	for _, t := range targets {
		fmt.Fprintf(&sb, "  - name: %s\n    codat: {base_url: %q", t.name, t.codatURL)
		if t.bootstrapEnv != "" {
			fmt.Fprintf(&sb, ", bootstrap_key_env: %s", t.bootstrapEnv)
		}
		fmt.Fprintf(&sb, "}\n    vault: {mount: %s, path: %s}\n    schedule: %q\n    grace: %s\n    key_name_prefix: codat-rotator-\n",
			t.mount, t.path, t.schedule, t.grace)
	}
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(sb.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	return path
}

// openBenchApp builds the daemon's own wiring (state file, Vault client,
// Codat clients, engine) in-process.
func openBenchApp(b *testing.B, configPath string, env map[string]string) *app {
	b.Helper()
	getenv := func(k string) string { return env[k] }
	cfg, err := LoadConfig(configPath, getenv)
	if err != nil {
		b.Fatal(err)
	}
	a, err := openApp(cfg, slog.New(slog.DiscardHandler), getenv, false, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { a.Close() })
	return a
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkRotation measures one routine rotation with a fixed latency
// added to every Codat and every Vault request, against the latency of
// the 5 round trips a rotation cannot avoid (Codat list, create, verify;
// Vault write, read-back), and the same rotation done by a shell script
// (docs/bench/baseline-rotate.sh: curl, jq and the vault CLI).
func BenchmarkRotation(b *testing.B) {
	for _, lat := range []time.Duration{0, 10 * time.Millisecond, 50 * time.Millisecond} {
		w := newBenchWorld(b, lat)
		b.Run(fmt.Sprintf("latency=%s/engine", lat), func(b *testing.B) { benchEngineRotation(b, w) })
		b.Run(fmt.Sprintf("latency=%s/script", lat), func(b *testing.B) { benchScriptRotation(b, w) })
	}
}

func benchEngineRotation(b *testing.B, w *benchWorld) {
	// One state file for every round of the benchmark: it owns the
	// secret the first round published (docs/design.md#ownership).
	dir := w.stateDir
	cfgPath := writeBenchConfig(b, dir, w.vaultURL, "", "", []benchTarget{{
		name: "bench", codatURL: w.codatURL, mount: w.mount, path: "codat/bench",
		schedule: "0 3 * * 1", grace: "1h", bootstrapEnv: "CODAT_BOOTSTRAP_API_KEY",
	}})
	a := openBenchApp(b, cfgPath, map[string]string{"VAULT_TOKEN": w.vs.RootToken, "CODAT_BOOTSTRAP_API_KEY": w.emu.InitialKey()})
	// A clock the benchmark moves past the grace between rotations, so
	// that the superseded key is retired outside the timed part.
	var offset atomic.Int64
	a.engine.Now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	t := a.allTargets()[0]
	ctx := context.Background()
	retire := func() {
		offset.Add(int64(2 * time.Hour))
		if _, err := a.engine.RetireDue(ctx, t); err != nil {
			b.Fatal(err)
		}
	}
	// The first rotation bootstraps (or adopts what an earlier round left).
	if _, err := a.engine.Rotate(ctx, t, rotation.Options{}); err != nil {
		b.Fatal(err)
	}
	retire()

	var took, floor []time.Duration
	var codatRT, vaultRT int64
	commits0 := a.db.Commits()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		floor = append(floor, w.fiveRoundTrips(b, a, t))
		c0, v0 := len(w.emu.Events(0)), w.vproxy.n.Load()
		b.StartTimer()
		start := time.Now()
		if _, err := a.engine.Rotate(ctx, t, rotation.Options{}); err != nil {
			b.Fatal(err)
		}
		took = append(took, time.Since(start))
		b.StopTimer()
		codatRT += int64(len(w.emu.Events(0)) - c0)
		vaultRT += w.vproxy.n.Load() - v0
		commits0 -= a.db.Commits()
		retire()
		commits0 += a.db.Commits()
		b.StartTimer()
	}
	b.StopTimer()
	reportRoundTrips(b, w.lat, took, codatRT, vaultRT)
	b.ReportMetric(float64(a.db.Commits()-commits0)/float64(b.N), "commits/op")
	if w.lat > 0 {
		// The same 5 round trips made bare, with nothing between them:
		// what the harness's latency really costs on this machine
		// (timers overshoot on a loaded VM), to tell it from the
		// daemon's own overhead.
		b.ReportMetric(ms(median(floor)), "median-ms-5rt-bare")
		b.ReportMetric(float64(median(took))/float64(median(floor)), "x-5rt-bare")
	}
}

// fiveRoundTrips makes the 5 round trips of a rotation bare, one after
// the other through the same emulator and Vault proxy: three Codat
// listings and two Vault reads of the target's secret, and returns how
// long they took.
func (w *benchWorld) fiveRoundTrips(b *testing.B, a *app, t rotation.Target) time.Duration {
	b.Helper()
	ctx := context.Background()
	cur, err := a.vault.Read(ctx, adapt.VaultLocation(t.Vault))
	if err != nil || cur.Secret == nil {
		b.Fatalf("read the served key: %v", err)
	}
	c := a.codat(t.Name, cur.Secret.APIKey)
	start := time.Now()
	for range 3 {
		if _, err := c.List(ctx); err != nil {
			b.Fatal(err)
		}
	}
	for range 2 {
		if _, err := a.vault.Read(ctx, adapt.VaultLocation(t.Vault)); err != nil {
			b.Fatal(err)
		}
	}
	return time.Since(start)
}

// reportRoundTrips prints the median wall time and its ratio to the
// latency of the 5 unavoidable round trips and of the round trips made.
func reportRoundTrips(b *testing.B, lat time.Duration, took []time.Duration, codatRT, vaultRT int64) {
	med := median(took)
	n := float64(b.N)
	made := float64(codatRT+vaultRT) / n
	b.ReportMetric(ms(med), "median-ms")
	b.ReportMetric(float64(codatRT)/n, "codat-rt/op")
	b.ReportMetric(float64(vaultRT)/n, "vault-rt/op")
	if lat == 0 {
		return // the fixed cost of a rotation: nothing to divide by
	}
	b.ReportMetric(float64(med)/float64(5*lat), "x-5rt")
	b.ReportMetric(float64(med)/(made*float64(lat)), "x-rt-made")
}

func benchScriptRotation(b *testing.B, w *benchWorld) {
	vaultBin, err := vaulttest.Binary()
	if err != nil {
		b.Fatal(err)
	}
	if _, err := exec.LookPath("jq"); err != nil {
		b.Fatal("the baseline script needs jq")
	}
	script, err := filepath.Abs("../../docs/bench/baseline-rotate.sh")
	if err != nil {
		b.Fatal(err)
	}
	// The script's own Codat key, made as a person would, and published
	// at its own path.
	id, raw, err := w.emu.AddPortalKey("script-seed")
	if err != nil {
		b.Fatal(err)
	}
	path := "codat/script-" + strconv.Itoa(b.N)
	_, err = w.vs.Client(b).KVv2(w.mount).Put(context.Background(), path, map[string]any{"api_key": raw, "key_id": id})
	if err != nil {
		b.Fatal(err)
	}
	env := append(os.Environ(), "VAULT="+vaultBin, "VAULT_ADDR="+w.vaultURL, "VAULT_TOKEN="+w.vs.RootToken,
		"CODAT_URL="+w.codatURL, "MOUNT="+w.mount, "SECRET_PATH="+path)
	var took []time.Duration
	var codatRT, vaultRT int64
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		c0, v0 := len(w.emu.Events(0)), w.vproxy.n.Load()
		cmd := exec.Command("bash", script)
		cmd.Env = env
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		b.StartTimer()
		start := time.Now()
		err := cmd.Run()
		took = append(took, time.Since(start))
		b.StopTimer()
		if err != nil {
			b.Fatalf("baseline script: %v\n%s", err, out.String())
		}
		codatRT += int64(len(w.emu.Events(0)) - c0)
		vaultRT += w.vproxy.n.Load() - v0
		b.StartTimer()
	}
	b.StopTimer()
	reportRoundTrips(b, w.lat, took, codatRT, vaultRT)
}

// codatLimiter answers 429 with Retry-After beyond limit requests in
// flight, as a rate-limited Codat does, and routes /t/<i>/... to the
// i-th emulator: one Codat client per target.
type codatLimiter struct {
	emus              []*emulator.Server
	limit             int64
	inflight          atomic.Int64
	accepted, limited atomic.Int64
}

func (l *codatLimiter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, "/t/")
	i, tail, _ := strings.Cut(rest, "/")
	n, err := strconv.Atoi(i)
	if !ok || err != nil || n < 0 || n >= len(l.emus) {
		http.NotFound(w, r)
		return
	}
	if l.inflight.Add(1) > l.limit {
		l.inflight.Add(-1)
		l.limited.Add(1)
		w.Header().Set("Retry-After", "1")
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusTooManyRequests)
		fmt.Fprint(w, `{"statusCode":429,"service":"PublicApi","error":"Too many requests.","correlationId":"0","canBeRetried":"Unknown","detailedErrorCode":0}`)
		return
	}
	defer l.inflight.Add(-1)
	l.accepted.Add(1)
	r2 := new(http.Request)
	*r2 = *r
	r2.URL = new(url.URL)
	*r2.URL = *r.URL
	r2.URL.Path = "/" + tail
	l.emus[n].ServeHTTP(w, r2)
}

// BenchmarkFleet rotates a fleet of targets at once (an emergency for
// all), each with its own Codat client and Vault path, against a Codat
// that holds every request for a fixed latency and answers 429 beyond a
// concurrency limit. The engine is driven in-process by a pool of
// workers (the daemon's admin rotate goes through targets one by one).
// The ideal is the Codat requests made times the latency, divided by the
// limit.
func BenchmarkFleet(b *testing.B) {
	const (
		lat   = 100 * time.Millisecond
		limit = 50
	)
	n := *benchFleetSize
	for _, c := range []struct {
		workers int
		state   string
		// gate holds the workers' Codat requests to limit in flight,
		// client-side, so that more workers than slots get no 429.
		gate bool
	}{{limit, "disk", false}, {limit, "tmpfs", false}, {2 * limit, "disk", true}, {n, "disk", false}} {
		name := fmt.Sprintf("targets=%d/limit=%d/workers=%d/state=%s", n, limit, c.workers, c.state)
		if c.gate {
			name += "/client-gate"
		}
		b.Run(name, func(b *testing.B) {
			dir := b.TempDir()
			if c.state == "tmpfs" {
				// The state file where fsync costs nothing: what the
				// fleet does when the journal's commits are free.
				var err error
				if dir, err = os.MkdirTemp("/dev/shm", "crb"); err != nil {
					b.Skipf("no tmpfs: %v", err)
				}
				b.Cleanup(func() { os.RemoveAll(dir) })
			}
			for range b.N {
				benchFleetOnce(b, dir, n, limit, c.workers, lat, c.gate)
			}
		})
	}
}

func benchFleetOnce(b *testing.B, dir string, n, limit, workers int, lat time.Duration, gate bool) {
	b.StopTimer()
	vs := vaulttest.Shared(b)
	mount := vs.NewKV(b)
	dir, err := os.MkdirTemp(dir, "fleet")
	if err != nil {
		b.Fatal(err)
	}
	lim := &codatLimiter{limit: int64(limit)}
	for range n {
		emu, err := emulator.New(emulator.Options{})
		if err != nil {
			b.Fatal(err)
		}
		lim.emus = append(lim.emus, emu)
	}
	srv := httptest.NewServer(lim)
	b.Cleanup(srv.Close)
	targets := make([]benchTarget, n)
	for i := range targets {
		targets[i] = benchTarget{name: fmt.Sprintf("t%04d", i), codatURL: fmt.Sprintf("%s/t/%d", srv.URL, i),
			mount: mount, path: fmt.Sprintf("codat/t%04d", i), schedule: "0 3 1 1 *", grace: "24h"}
	}
	a := openBenchApp(b, writeBenchConfig(b, dir, vs.Addr, "", "", targets), map[string]string{"VAULT_TOKEN": vs.RootToken})
	// The workers are the concurrency here: the engine's own bound
	// (max_concurrent_rotations) is lifted to match them.
	a.engine.SetMaxConcurrent(workers)
	ts := a.allTargets()
	if gate {
		tr := &gateTransport{gate: make(chan struct{}, limit), next: http.DefaultTransport.(*http.Transport).Clone()}
		tr.next.MaxIdleConnsPerHost = limit
		a.mu.Lock()
		for i, t := range ts {
			c, err := codat.New("", codat.Options{BaseURL: targets[i].codatURL, HTTPClient: &http.Client{Transport: tr}})
			if err != nil {
				b.Fatal(err)
			}
			a.clients[t.Name] = c
		}
		a.mu.Unlock()
	}
	ctx := context.Background()
	// Each target starts as a user leaves it: its first key in Vault.
	parallel(b, n, 32, func(i int) error {
		k := lim.emus[i].Keys()[0]
		_, err := a.vault.Write(ctx, adapt.VaultLocation(ts[i].Vault), vault.Secret{APIKey: codat.Secret(lim.emus[i].InitialKey()), KeyID: k.ID,
			CreatedAt: k.Created, RotatedAt: time.Now().UTC()}, 0, nil)
		return err
	})
	for _, emu := range lim.emus {
		if err := emu.SetFaults(latencyFaults(lat)); err != nil {
			b.Fatal(err)
		}
	}
	lim.accepted.Store(0)

	var failed atomic.Int64
	var firstErr sync.Once
	b.StartTimer()
	start := time.Now()
	parallel(b, n, workers, func(i int) error {
		if _, err := a.engine.Rotate(ctx, ts[i], rotation.Options{Emergency: true, Manual: true}); err != nil {
			failed.Add(1)
			firstErr.Do(func() { b.Logf("%s: %v", ts[i].Name, err) })
		}
		return nil
	})
	took := time.Since(start)
	b.StopTimer()

	violations := 0
	unrotated := 0
	for _, emu := range lim.emus {
		violations += len(emu.Violations())
		if emu.ActiveKeys() != 1 {
			unrotated++
		}
	}
	ideal := time.Duration(lim.accepted.Load()) * lat / time.Duration(limit)
	b.ReportMetric(took.Seconds(), "s-wall")
	b.ReportMetric(ideal.Seconds(), "s-ideal")
	b.ReportMetric(float64(ideal)/float64(took), "ideal/wall")
	b.ReportMetric(float64(lim.accepted.Load())/float64(n), "codat-rt/target")
	b.ReportMetric(float64(lim.limited.Load()), "429s")
	b.ReportMetric(float64(failed.Load()), "failed")
	b.ReportMetric(float64(unrotated), "not-1-key")
	b.ReportMetric(float64(violations), "violations")
	for _, emu := range lim.emus {
		emu.Close()
	}
}

// gateTransport lets at most cap(gate) requests be in flight.
type gateTransport struct {
	gate chan struct{}
	next *http.Transport
}

func (t *gateTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	select {
	case t.gate <- struct{}{}:
	case <-r.Context().Done():
		return nil, r.Context().Err()
	}
	defer func() { <-t.gate }()
	resp, err := t.next.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	// The slot is held until the body is read: the request is in flight
	// at Codat until then.
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, err
}

// parallel runs fn(0..n-1) on workers goroutines and fails b on the
// first error.
func parallel(b *testing.B, n, workers int, fn func(i int) error) {
	b.Helper()
	next := make(chan int)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := fn(i); err != nil {
					errs <- err
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
}

// daemonBench is a `codat-rotator run` started by a benchmark, with a
// NOTIFY_SOCKET it listens on.
type daemonBench struct {
	cmd     *exec.Cmd
	ready   chan struct{}
	started time.Time
	readyAt time.Time
	logs    bytes.Buffer
	done    chan struct{}
	// watchdogs counts the WATCHDOG=1 datagrams received.
	watchdogs atomic.Int64
}

// idleConfig writes a config of n targets on a rare schedule and a
// state file in which each rotated just now, so no catch-up runs at
// start.
// idleBootstrapEnv names the idle fleet's bootstrap variable.
const idleBootstrapEnv = "CODAT_BENCH_IDLE_BOOTSTRAP"

func idleConfig(b *testing.B, dir string, n int, vs *vaulttest.Server, codatURL string) string {
	b.Helper()
	mount := "secret"
	targets := make([]benchTarget, n)
	for i := range targets {
		// The bootstrap variable is set (startDaemonBench) and never read:
		// a target that has never published may start (issue 24's start
		// check), and the yearly schedule keeps it idle.
		targets[i] = benchTarget{name: fmt.Sprintf("t%04d", i), codatURL: codatURL, mount: mount,
			path: fmt.Sprintf("codat/t%04d", i), schedule: "0 3 1 1 *", grace: "24h", bootstrapEnv: idleBootstrapEnv}
	}
	cfg := writeBenchConfig(b, dir, vs.Addr, freeAddr(b), filepath.Join(dir, "admin.sock"), targets)
	db, err := store.Open(filepath.Join(dir, "state.db"), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now().UTC()
	for _, t := range targets {
		if err := db.Update(t.name, func(st *store.Target) error {
			st.LastAttempt, st.LastSuccess, st.LastResult = now, now, "success"
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		b.Fatal(err)
	}
	return cfg
}

// startDaemonBench execs `codat-rotator run` with a NOTIFY_SOCKET and
// returns at once; ready closes on READY=1.
func startDaemonBench(b *testing.B, dir, cfg, token string, extraEnv ...string) *daemonBench {
	b.Helper()
	sockPath := filepath.Join(dir, "notify")
	_ = os.Remove(sockPath)
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		b.Fatal(err)
	}
	d := &daemonBench{ready: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer conn.Close()
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			states := strings.Split(string(buf[:n]), "\n")
			if slices.Contains(states, "WATCHDOG=1") {
				d.watchdogs.Add(1)
			}
			if slices.Contains(states, "READY=1") && d.readyAt.IsZero() {
				d.readyAt = time.Now()
				close(d.ready)
			}
		}
	}()
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "VAULT_") && name != "NOTIFY_SOCKET" && !strings.HasPrefix(name, "WATCHDOG_") {
			env = append(env, kv)
		}
	}
	d.cmd = exec.Command(binary, "run", "--config", cfg)
	d.cmd.Env = append(env, append([]string{"VAULT_TOKEN=" + token, "NOTIFY_SOCKET=" + sockPath, idleBootstrapEnv + "=idle-never-read"}, extraEnv...)...)
	d.cmd.Stdout, d.cmd.Stderr = &d.logs, &d.logs
	d.started = time.Now()
	if err := d.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	go func() { _ = d.cmd.Wait(); close(d.done) }()
	return d
}

func (d *daemonBench) waitReady(b *testing.B, timeout time.Duration) time.Duration {
	b.Helper()
	select {
	case <-d.ready:
		return d.readyAt.Sub(d.started)
	case <-d.done:
		b.Fatalf("daemon exited before READY=1:\n%s", d.logs.String())
	case <-time.After(timeout):
		d.stop(b)
		b.Fatalf("no READY=1 after %s:\n%s", timeout, d.logs.String())
	}
	return 0
}

func (d *daemonBench) stop(b *testing.B) {
	b.Helper()
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
		b.Errorf("daemon did not stop on SIGTERM")
	}
}

// BenchmarkStartToReady measures from exec to READY=1 on a fake
// NOTIFY_SOCKET: one target, a Vault token (no login), a state file.
func BenchmarkStartToReady(b *testing.B) {
	vs := vaulttest.Shared(b)
	dir, err := os.MkdirTemp("", "crb")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	cfg := idleConfig(b, dir, 1, vs, "http://127.0.0.1:9")
	var took []time.Duration
	b.ResetTimer()
	for range b.N {
		d := startDaemonBench(b, dir, cfg, vs.RootToken)
		took = append(took, d.waitReady(b, 30*time.Second))
		b.StopTimer()
		d.stop(b)
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(ms(median(took)), "median-ms-to-ready")
	b.ReportMetric(ms(slices.Max(took)), "max-ms-to-ready")
}

// procSample is what /proc says of a process.
type procSample struct {
	rssKiB, hwmKiB int64
	ticks          int64         // utime+stime, in clock ticks
	cpu            time.Duration // sum over threads of schedstat run time
	fds            int
}

func readProc(b *testing.B, pid int) procSample {
	b.Helper()
	var s procSample
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "VmRSS:" {
			s.rssKiB, _ = strconv.ParseInt(f[1], 10, 64)
		}
		if len(f) >= 2 && f[0] == "VmHWM:" {
			s.hwmKiB, _ = strconv.ParseInt(f[1], 10, 64)
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name, which ends with the last ')'.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, _ := strconv.ParseInt(f[12], 10, 64) // field 15
	s.ticks = utime + stime
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	for _, t := range tasks {
		raw, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		if v, err := strconv.ParseInt(strings.Fields(string(raw))[0], 10, 64); err == nil {
			s.cpu += time.Duration(v)
		}
	}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	s.fds = len(fds)
	return s
}

// BenchmarkIdleFootprint runs `codat-rotator run` with 1 and with 1,000
// targets that stay idle (a yearly schedule, a state file in which each
// just rotated), and reports RSS and the CPU used over -bench.idle
// (default 60s), with the watchdog of the shipped unit (WatchdogSec=2min).
func BenchmarkIdleFootprint(b *testing.B) {
	vs := vaulttest.Shared(b)
	for _, n := range []int{1, 1000} {
		b.Run(fmt.Sprintf("targets=%d", n), func(b *testing.B) {
			for range b.N {
				dir, err := os.MkdirTemp("", "crb")
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { os.RemoveAll(dir) })
				cfg := idleConfig(b, dir, n, vs, "http://127.0.0.1:9")
				d := startDaemonBench(b, dir, cfg, vs.RootToken, "WATCHDOG_USEC=120000000")
				d.waitReady(b, 60*time.Second)
				time.Sleep(2 * time.Second) // let start-up settle
				pid := d.cmd.Process.Pid
				before := readProc(b, pid)
				time.Sleep(*benchIdle)
				after := readProc(b, pid)
				d.stop(b)
				b.ReportMetric(float64(after.rssKiB)/1024, "MiB-rss")
				b.ReportMetric(float64(after.hwmKiB)/1024, "MiB-rss-peak")
				// Clock ticks are 10 ms (USER_HZ 100 on Linux): too coarse
				// for the target, hence schedstat beside them.
				b.ReportMetric(float64(after.ticks-before.ticks)*10, "ms-cpu-ticks")
				b.ReportMetric(ms(after.cpu-before.cpu), "ms-cpu-schedstat")
				b.ReportMetric(benchIdle.Seconds(), "s-idle")
				if strings.Contains(d.logs.String(), "catching up") {
					b.Errorf("the daemon caught up; the idle measurement is not idle")
				}
			}
		})
	}
}

// BenchmarkIdleWakeups counts what wakes an idle daemon over -bench.idle
// (default 60s), with 1 and with 1,000 idle targets (as in
// BenchmarkIdleFootprint). Two daemons run side by side: one without a
// watchdog (outside systemd: NOTIFY_SOCKET for READY=1 only) and one
// with WATCHDOG_USEC as the shipped unit sets it (WatchdogSec=2min). It
// reports for each the scheduler's wake-ups
// (codat_rotator_scheduler_wakeups_total: must be 0) and the voluntary
// context switches of all its threads, and the WATCHDOG=1 datagrams the
// second sent (at most one a minute). It fails when a number is over.
func BenchmarkIdleWakeups(b *testing.B) {
	vs := vaulttest.Shared(b)
	for _, n := range []int{1, 1000} {
		b.Run(fmt.Sprintf("targets=%d", n), func(b *testing.B) {
			for range b.N {
				type run struct {
					name   string
					env    []string
					d      *daemonBench
					scrape string
				}
				runs := []*run{{name: "plain"}, {name: "watchdog", env: []string{"WATCHDOG_USEC=120000000"}}}
				for _, r := range runs {
					dir, err := os.MkdirTemp("", "crw")
					if err != nil {
						b.Fatal(err)
					}
					b.Cleanup(func() { os.RemoveAll(dir) })
					cfgPath := idleConfig(b, dir, n, vs, "http://127.0.0.1:9")
					cfg, err := LoadConfig(cfgPath, func(string) string { return "" })
					if err != nil {
						b.Fatal(err)
					}
					r.scrape = "http://" + cfg.Listen.Metrics + "/metrics"
					r.d = startDaemonBench(b, dir, cfgPath, vs.RootToken, r.env...)
				}
				for _, r := range runs {
					r.d.waitReady(b, 60*time.Second)
				}
				time.Sleep(2 * time.Second) // let start-up settle
				type sample struct{ wakeups, ctxsw, watchdogs float64 }
				take := func(r *run, scrapeFirst bool) sample {
					var s sample
					scrape := func() {
						_, expo := get(b, r.scrape)
						s.wakeups = metricSum(expo, "codat_rotator_scheduler_wakeups_total")
					}
					if scrapeFirst { // the scrape's own wake-up stays out of the window
						scrape()
					}
					s.ctxsw, s.watchdogs = float64(voluntaryCtxSwitches(b, r.d.cmd.Process.Pid)), float64(r.d.watchdogs.Load())
					if !scrapeFirst {
						scrape()
					}
					return s
				}
				before := make([]sample, len(runs))
				for i, r := range runs {
					before[i] = take(r, true)
				}
				time.Sleep(*benchIdle)
				minutes := benchIdle.Minutes()
				for i, r := range runs {
					after := take(r, false)
					r.d.stop(b)
					wakeups := after.wakeups - before[i].wakeups
					b.ReportMetric(wakeups, "wakeups-"+r.name)
					b.ReportMetric(after.ctxsw-before[i].ctxsw, "ctxsw-"+r.name)
					if wakeups != 0 {
						b.Errorf("%s: %v scheduler wake-ups in an idle %s, want 0", r.name, wakeups, *benchIdle)
					}
					if r.name == "watchdog" {
						wd := after.watchdogs - before[i].watchdogs
						b.ReportMetric(wd, "watchdog-datagrams")
						if limit := math.Ceil(minutes); wd > limit {
							b.Errorf("%v WATCHDOG=1 in %s, want at most %v (one a minute)", wd, *benchIdle, limit)
						}
					} else if after.watchdogs != 0 {
						b.Errorf("plain: %v WATCHDOG=1 without WATCHDOG_USEC", after.watchdogs)
					}
				}
				b.ReportMetric(benchIdle.Seconds(), "s-idle")
			}
		})
	}
}

// voluntaryCtxSwitches sums voluntary_ctxt_switches over the process's
// threads (/proc/<pid>/status gives the main thread's alone): each is a
// thread that went to sleep, so each later wake-up shows here.
func voluntaryCtxSwitches(b *testing.B, pid int) int64 {
	b.Helper()
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	if err != nil || len(tasks) == 0 {
		b.Fatalf("no threads of %d in /proc: %v", pid, err)
	}
	var sum int64
	for _, t := range tasks {
		raw, err := os.ReadFile(t)
		if err != nil {
			continue // a thread that just ended
		}
		for _, line := range strings.Split(string(raw), "\n") {
			if v, ok := strings.CutPrefix(line, "voluntary_ctxt_switches:"); ok {
				n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				sum += n
			}
		}
	}
	return sum
}

// BenchmarkSoak runs the daemon on a 1s schedule against the emulator
// and a real Vault until -soak.rotations rotations succeeded, samples
// RSS, goroutines and open files, and fails on growth, on a failed
// rotation or on an emulator violation. `make soak` runs it.
func BenchmarkSoak(b *testing.B) {
	if *soakRotations <= 0 {
		b.Skip("set -soak.rotations (make soak)")
	}
	for range b.N {
		soak(b, *soakRotations)
	}
}

type soakSample struct {
	at                   time.Duration
	rotations, failed    float64
	rssMiB               float64
	goroutines, fds      float64
	codatReqs, vaultReqs float64
}

func soak(b *testing.B, rotations int) {
	vs := vaulttest.Shared(b)
	mount := vs.NewKV(b)
	emu, err := emulator.New(emulator.Options{})
	if err != nil {
		b.Fatal(err)
	}
	codatSrv := httptest.NewServer(emu)
	b.Cleanup(func() { emu.Close(); codatSrv.Close() })
	dir, err := os.MkdirTemp("", "crs")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	metricsAddr := freeAddr(b)
	cfg := writeBenchConfig(b, dir, vs.Addr, metricsAddr, filepath.Join(dir, "admin.sock"), []benchTarget{{
		name: "soak", codatURL: codatSrv.URL, mount: mount, path: "codat/soak",
		schedule: "@every 1s", grace: "500ms", bootstrapEnv: "CODAT_BOOTSTRAP_API_KEY",
	}})
	d := startDaemonBench(b, dir, cfg, vs.RootToken, "CODAT_BOOTSTRAP_API_KEY="+emu.InitialKey())
	defer d.stop(b)
	d.waitReady(b, 30*time.Second)
	pid := d.cmd.Process.Pid

	every := *soakEvery
	if every <= 0 {
		every = max(time.Second, time.Duration(rotations)*time.Second/50)
	}
	deadline := time.Now().Add(time.Duration(rotations)*2*time.Second + time.Minute)
	start := time.Now()
	var samples []soakSample
	// Printed, not logged: a benchmark's log is cut short without -v.
	fmt.Printf("%8s %9s %6s %8s %10s %4s %9s %9s\n", "t", "rotations", "failed", "rss_MiB", "goroutines", "fds", "codat_req", "vault_req")
	for {
		select {
		case <-d.done:
			b.Fatalf("daemon exited:\n%s", d.logs.String())
		case <-time.After(every):
		}
		_, expo := get(b, "http://"+metricsAddr+"/metrics")
		p := readProc(b, pid)
		s := soakSample{at: time.Since(start).Round(time.Second), rssMiB: float64(p.rssKiB) / 1024, fds: float64(p.fds)}
		s.rotations = metricSum(expo, "codat_rotator_rotations_total", `result="success"`)
		s.failed = metricSum(expo, "codat_rotator_rotations_total", `result="failed"`)
		s.goroutines, _ = metricValue(expo, "go_goroutines")
		s.codatReqs = metricSum(expo, "codat_rotator_codat_requests_total")
		s.vaultReqs = metricSum(expo, "codat_rotator_vault_requests_total")
		samples = append(samples, s)
		fmt.Printf("%8s %9.0f %6.0f %8.1f %10.0f %4.0f %9.0f %9.0f\n", s.at, s.rotations, s.failed, s.rssMiB, s.goroutines, s.fds, s.codatReqs, s.vaultReqs)
		if s.failed > 0 {
			b.Fatalf("a rotation failed:\n%s", d.logs.String())
		}
		if v := emu.Violations(); len(v) > 0 {
			b.Fatalf("emulator violations: %+v", v)
		}
		if s.rotations >= float64(rotations) {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("only %.0f of %d rotations by the deadline", s.rotations, rotations)
		}
	}
	if len(samples) < 8 {
		b.Fatalf("%d samples: too few to judge growth; lower -soak.every", len(samples))
	}
	q := len(samples) / 4
	first, last := samples[:q], samples[len(samples)-q:]
	med := func(ss []soakSample, f func(soakSample) float64) float64 {
		v := make([]float64, len(ss))
		for i, s := range ss {
			v[i] = f(s)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	for _, c := range []struct {
		name  string
		f     func(soakSample) float64
		limit func(first float64) float64
	}{
		{"rss_MiB", func(s soakSample) float64 { return s.rssMiB }, func(f float64) float64 { return f*1.2 + 2 }},
		{"goroutines", func(s soakSample) float64 { return s.goroutines }, func(f float64) float64 { return f + 3 }},
		{"fds", func(s soakSample) float64 { return s.fds }, func(f float64) float64 { return f + 3 }},
	} {
		f, l := med(first, c.f), med(last, c.f)
		fmt.Printf("%s: first-quarter median %.1f, last-quarter median %.1f (limit %.1f)\n", c.name, f, l, c.limit(f))
		if l > c.limit(f) {
			b.Errorf("%s grew: %.1f -> %.1f", c.name, f, l)
		}
	}
	lastS := samples[len(samples)-1]
	b.ReportMetric(lastS.rotations, "rotations")
	b.ReportMetric(lastS.rssMiB, "MiB-rss-last")
	b.ReportMetric(lastS.goroutines, "goroutines-last")
	b.ReportMetric(lastS.fds, "fds-last")
	b.ReportMetric(float64(len(emu.Violations())), "violations")
}

// metricSum adds every sample of name whose labels include all of labels.
func metricSum(exposition, name string, labels ...string) float64 {
	sum := 0.0
	for _, line := range strings.Split(exposition, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		all := true
		for _, l := range labels {
			all = all && strings.Contains(line[:i], l)
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil && all {
			sum += v
		}
	}
	return sum
}
