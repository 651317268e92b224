package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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

// What a fleet's config costs: loading it, each command that reads it,
// start to READY=1 and a reload, at 1 to 1,000 targets on a per-minute
// and a daily schedule (docs/benchmarks.md#config). Run them against
// another build with -bench.binary (and -bench.budget=-1 for a build
// that knows no codat_requests_per_minute).

var (
	benchBinary   = flag.String("bench.binary", "", "the codat-rotator binary the command benchmarks run (default: built from this tree)")
	benchSizes    = flag.String("bench.sizes", "1,100,1000", "fleet sizes of BenchmarkConfigLoad and BenchmarkCommands")
	benchSpecs    = flag.String("bench.specs", "* * * * *;0 3 * * *", "schedules (;-separated) of BenchmarkConfigLoad and BenchmarkCommands")
	benchCommands = flag.String("bench.commands", "status;check;keys;rotate --dry-run", "commands (;-separated) BenchmarkCommands runs")
	benchBudget   = flag.Int("bench.budget", 0, "codat_requests_per_minute written in the benchmarks' configs; -1 writes none (the default budget, or a build without it)")
	benchRuns     = flag.Int("bench.runs", 3, "runs of each command; the median is reported")
	benchRotated  = flag.Bool("bench.rotated", false, "BenchmarkCommands: rotate every target once (untimed) first, so that the state is the one the daemon keeps, not one that never saw the secrets Vault holds")
)

// loadChildEnv names the config a benchmark's child process loads: the
// test binary, re-run, loads it once and prints the nanoseconds it took
// (TestMain), so that every load is a process's first, as a command's.
const loadChildEnv = "CODAT_ROTATOR_BENCH_LOAD"

// loadChild is TestMain's child mode.
func loadChild(path string) int {
	start := time.Now()
	if _, err := LoadConfig(path, func(string) string { return "" }); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(time.Since(start).Nanoseconds())
	return 0
}

func sizes(b *testing.B) []int {
	var out []int
	for _, s := range strings.Split(*benchSizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			b.Fatalf("-bench.sizes: %q is not a size", s)
		}
		out = append(out, n)
	}
	return out
}

func cliBinary() string {
	if *benchBinary != "" {
		return *benchBinary
	}
	return binary
}

// BenchmarkConfigLoad: LoadConfig of n targets on one schedule, each
// time in a fresh process (the cost a command pays at its start).
func BenchmarkConfigLoad(b *testing.B) {
	for _, spec := range strings.Split(*benchSpecs, ";") {
		for _, n := range sizes(b) {
			b.Run(fmt.Sprintf("schedule=%s/targets=%d", spec, n), func(b *testing.B) {
				dir := b.TempDir()
				targets := make([]benchTarget, n)
				for i := range targets {
					targets[i] = benchTarget{name: fmt.Sprintf("t%04d", i), codatURL: "http://127.0.0.1:9", mount: "secret",
						path: fmt.Sprintf("codat/t%04d", i), schedule: spec, grace: "30s"}
				}
				cfg := writeBenchConfig(b, dir, "http://127.0.0.1:8200", "", filepath.Join(dir, "admin.sock"), targets)
				var took []time.Duration
				b.ResetTimer()
				for range b.N {
					cmd := exec.Command(os.Args[0], "-test.run=^$")
					cmd.Env = append(os.Environ(), loadChildEnv+"="+cfg)
					out, err := cmd.Output()
					if err != nil {
						b.Fatalf("load: %v\n%s", err, out)
					}
					ns, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
					if err != nil {
						b.Fatalf("load printed %q", out)
					}
					took = append(took, time.Duration(ns))
				}
				b.ReportMetric(ms(median(took)), "median-ms-load")
			})
		}
	}
}

// commandFleet is n targets, each its own client of one emulator.Fleet,
// each serving its first key from a real Vault, in a state file where
// each last succeeded just now. The state records nothing else of the
// secret (no version, no key), so it is behind Vault, as after seeding
// by hand: a look reads the secret's versions too (-bench.rotated for
// the state a rotation leaves).
type commandFleet struct {
	n        int
	codat    *emulator.Fleet
	vs       *vaulttest.Server
	dir, cfg string
	metrics  string
	targets  []benchTarget
}

func newCommandFleet(b *testing.B, n int, spec, grace string) *commandFleet {
	b.Helper()
	f := &commandFleet{n: n, vs: vaulttest.Shared(b)}
	var err error
	if f.codat, err = emulator.NewFleet(n, emulator.Options{}); err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(f.codat)
	b.Cleanup(func() {
		srv.Close()
		f.codat.Close()
	})
	if f.dir, err = os.MkdirTemp("", "crcf"); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(f.dir) })
	mount := f.vs.NewKV(b)
	f.targets = make([]benchTarget, n)
	for i := range f.targets {
		f.targets[i] = benchTarget{name: fmt.Sprintf("t%04d", i), codatURL: emulator.BaseURL(srv.URL, i),
			mount: mount, path: fmt.Sprintf("codat/t%04d", i), schedule: spec, grace: grace}
	}
	f.metrics = freeAddr(b)
	f.cfg = writeBenchConfig(b, f.dir, f.vs.Addr, f.metrics, filepath.Join(f.dir, "admin.sock"), f.targets)
	vc, err := vault.New(vault.Config{Address: f.vs.Addr, Token: codat.Secret(f.vs.RootToken)})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	parallel(b, n, 32, func(i int) error {
		emu := f.codat.Client(i)
		k := emu.Keys()[0]
		_, err := vc.Write(ctx, adapt.VaultLocation(rotation.Location{Mount: mount, Path: f.targets[i].path}),
			vault.Secret{APIKey: codat.Secret(emu.InitialKey()), KeyID: k.ID, CreatedAt: k.Created, RotatedAt: time.Now().UTC()}, 0, nil)
		return err
	})
	db, err := store.Open(filepath.Join(f.dir, "state.db"), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now().UTC()
	parallel(b, n, 64, func(i int) error {
		return db.Update(f.targets[i].name, func(st *store.Target) error {
			st.LastAttempt, st.LastSuccess, st.LastResult = now, now, "success"
			return nil
		})
	})
	if err := db.Close(); err != nil {
		b.Fatal(err)
	}
	return f
}

// cli runs the binary with args and the fleet's config, and returns its
// wall time; a failure stops the benchmark.
func (f *commandFleet) cli(b *testing.B, args ...string) time.Duration {
	b.Helper()
	args = append(args[:1:1], append([]string{"--config", f.cfg}, args[1:]...)...)
	cmd := exec.Command(cliBinary(), args...)
	cmd.Env = append(os.Environ(), "VAULT_TOKEN="+f.vs.RootToken)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	if err != nil {
		tail := out.String()
		if len(tail) > 2000 {
			tail = tail[len(tail)-2000:]
		}
		b.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, tail)
	}
	return took
}

// BenchmarkCommands: each command's wall time through the real binary,
// no daemon running, at each size and schedule.
func BenchmarkCommands(b *testing.B) {
	for _, spec := range strings.Split(*benchSpecs, ";") {
		for _, n := range sizes(b) {
			b.Run(fmt.Sprintf("schedule=%s/targets=%d", spec, n), func(b *testing.B) {
				f := newCommandFleet(b, n, spec, "30s")
				if *benchRotated {
					// Seeded by hand, each state is behind its secret, and
					// every look reads the secret's versions too.
					f.cli(b, "rotate")
				}
				for _, command := range strings.Split(*benchCommands, ";") {
					args := strings.Fields(command)
					var took []time.Duration
					for range *benchRuns {
						took = append(took, f.cli(b, args...))
					}
					b.ReportMetric(median(took).Seconds(), "s-"+strings.ReplaceAll(strings.TrimPrefix(command, "rotate --"), " ", "-"))
				}
			})
		}
	}
}

// BenchmarkReadyAndReload: a daemon of -bench.fleet targets on a
// per-minute schedule: from exec to READY=1, then `codat-rotator
// reload` of the same file, then of a file that changes one target,
// each with the loops it woke.
func BenchmarkReadyAndReload(b *testing.B) {
	n := *benchFleetSize
	defer func(built string) { binary = built }(binary)
	binary = cliBinary() // the daemon too
	for _, spec := range strings.Split(*benchSpecs, ";") {
		b.Run(fmt.Sprintf("schedule=%s/targets=%d", spec, n), func(b *testing.B) {
			for range b.N {
				f := newCommandFleet(b, n, spec, "30s")
				d := startDaemonBench(b, f.dir, f.cfg, f.vs.RootToken)
				ready := d.waitReady(b, 10*time.Minute)
				b.Cleanup(func() {
					select {
					case <-d.done:
					default:
						d.stop(b)
					}
				})
				wakeups := func() float64 {
					_, expo := get(b, "http://"+f.metrics+"/metrics")
					return metricSum(expo, "codat_rotator_scheduler_wakeups_total")
				}
				w0 := wakeups()
				same := f.cli(b, "reload")
				w1 := wakeups()
				f.targets[0].grace = "20s"
				f.cfg = writeBenchConfig(b, f.dir, f.vs.Addr, f.metrics, filepath.Join(f.dir, "admin.sock"), f.targets)
				one := f.cli(b, "reload")
				w2 := wakeups()
				d.stop(b)
				b.ReportMetric(ready.Seconds(), "s-to-ready")
				b.ReportMetric(same.Seconds(), "s-reload-same")
				b.ReportMetric(w1-w0, "woken-reload-same")
				b.ReportMetric(one.Seconds(), "s-reload-one-changed")
				b.ReportMetric(w2-w1, "woken-reload-one")
			}
		})
	}
}
