package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/admin"
	"github.com/codat-rotator/codat-rotator/codat"
	"github.com/codat-rotator/codat-rotator/codat/emulator"
	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/rotation/adapt"
	"github.com/codat-rotator/codat-rotator/store"
	"github.com/codat-rotator/codat-rotator/vault"
	"github.com/codat-rotator/codat-rotator/vault/vaulttest"
)

// The fleet through the real binary: `codat-rotator run` with N targets,
// each its own Codat client (its own emulator, 100 ms on every request),
// a real Vault dev server, the state file on disk; a fleet-wide
// emergency sent by the `rotate` command over the admin socket, and a
// tick that every target shares. The ideal is ceil(N / bound) times one
// rotation of the same kind alone, measured in the same daemon.

// daemonFleet is a running daemon of n idle targets, each of which
// rotated "just now" and serves its first key.
type daemonFleet struct {
	n        int
	lim      *codatLimiter // a router here: no limit
	vs       *vaulttest.Server
	dir, cfg string
	metrics  string
	d        *daemonBench
}

func newDaemonFleet(b *testing.B, n int, schedule, grace string) *daemonFleet {
	b.Helper()
	const lat = 100 * time.Millisecond
	f := &daemonFleet{n: n, lim: &codatLimiter{limit: math.MaxInt64}, vs: vaulttest.Shared(b)}
	mount := f.vs.NewKV(b)
	var err error
	if f.dir, err = os.MkdirTemp("", "crfl"); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(f.dir) })
	for range n {
		emu, err := emulator.New(emulator.Options{})
		if err != nil {
			b.Fatal(err)
		}
		f.lim.emus = append(f.lim.emus, emu)
	}
	srv := httptest.NewServer(f.lim)
	b.Cleanup(func() {
		srv.Close()
		for _, e := range f.lim.emus {
			e.Close()
		}
	})
	targets := make([]benchTarget, n)
	for i := range targets {
		targets[i] = benchTarget{name: fmt.Sprintf("t%04d", i), codatURL: fmt.Sprintf("%s/t/%d", srv.URL, i),
			mount: mount, path: fmt.Sprintf("codat/t%04d", i), schedule: schedule, grace: grace}
	}
	f.metrics = freeAddr(b)
	f.cfg = writeBenchConfig(b, f.dir, f.vs.Addr, f.metrics, filepath.Join(f.dir, "admin.sock"), targets)

	// Each target as a user leaves it: its first key in Vault, and a
	// state file in which it rotated just now (no catch-up at start).
	vc, err := vault.New(vault.Config{Address: f.vs.Addr, Token: codat.Secret(f.vs.RootToken)})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	parallel(b, n, 32, func(i int) error {
		k := f.lim.emus[i].Keys()[0]
		_, err := vc.Write(ctx, adapt.VaultLocation(rotation.Location{Mount: mount, Path: targets[i].path}), vault.Secret{APIKey: codat.Secret(f.lim.emus[i].InitialKey()),
			KeyID: k.ID, CreatedAt: k.Created, RotatedAt: time.Now().UTC()}, 0, nil)
		return err
	})
	f.markRotatedNow(b)
	for _, emu := range f.lim.emus {
		if err := emu.SetFaults(latencyFaults(lat)); err != nil {
			b.Fatal(err)
		}
	}
	return f
}

// markRotatedNow records in the state file that every target rotated
// just now: no catch-up at the daemon's start.
func (f *daemonFleet) markRotatedNow(b *testing.B) {
	b.Helper()
	db, err := store.Open(filepath.Join(f.dir, "state.db"), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now().UTC()
	parallel(b, f.n, 64, func(i int) error {
		return db.Update(fmt.Sprintf("t%04d", i), func(st *store.Target) error {
			st.LastAttempt, st.LastSuccess, st.LastResult = now, now, "success"
			return nil
		})
	})
	if err := db.Close(); err != nil {
		b.Fatal(err)
	}
}

func (f *daemonFleet) start(b *testing.B) {
	b.Helper()
	f.d = startDaemonBench(b, f.dir, f.cfg, f.vs.RootToken)
	f.d.waitReady(b, 2*time.Minute)
	b.Cleanup(func() {
		select {
		case <-f.d.done:
		default:
			f.d.stop(b)
		}
	})
}

// rotate runs `codat-rotator rotate --json` with args against the
// daemon and returns its report and wall time.
func (f *daemonFleet) rotate(b *testing.B, args ...string) (admin.RotateReport, time.Duration) {
	b.Helper()
	cmd := exec.Command(binary, append([]string{"rotate", "--config", f.cfg, "--json", "--log-level", "error"}, args...)...)
	cmd.Env = append(os.Environ(), "VAULT_TOKEN="+f.vs.RootToken)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	var rep admin.RotateReport
	if jerr := json.Unmarshal(out.Bytes(), &rep); jerr != nil {
		b.Fatalf("rotate %v: %v (%v)\n%s%s", args, err, jerr, out.String(), errOut.String())
	}
	return rep, took
}

// took is the daemon's own wall time of the target's rotations so far
// (the sum of codat_rotator_rotation_duration_seconds).
func (f *daemonFleet) took(b *testing.B, target string) time.Duration {
	b.Helper()
	_, expo := get(b, "http://"+f.metrics+"/metrics")
	return time.Duration(metricSum(expo, "codat_rotator_rotation_duration_seconds_sum", `target="`+target+`"`) * float64(time.Second))
}

// alone measures one rotation of each of three targets, alone, as the
// daemon times it, and returns the median.
func (f *daemonFleet) alone(b *testing.B, args ...string) time.Duration {
	b.Helper()
	var one []time.Duration
	for i := range 3 {
		name := fmt.Sprintf("t%04d", i)
		before := f.took(b, name)
		rep, _ := f.rotate(b, append([]string{"--target", name}, args...)...)
		if len(rep.Results) != 1 || !rep.Results[0].Succeeded {
			b.Fatalf("one rotation of %s: %+v", name, rep)
		}
		one = append(one, f.took(b, name)-before)
	}
	return median(one)
}

func (f *daemonFleet) violations() (violations, notOneKey int) {
	for _, emu := range f.lim.emus {
		violations += len(emu.Violations())
		if emu.ActiveKeys() != 1 {
			notOneKey++
		}
	}
	return violations, notOneKey
}

// BenchmarkFleetEmergency: `rotate --emergency` of the whole fleet
// through the daemon's admin socket, for 50 and -bench.fleet (default
// 1,000) targets, with the default max_concurrent_rotations. The ideal
// is ceil(N / bound) emergencies of one target alone.
func BenchmarkFleetEmergency(b *testing.B) {
	for _, n := range []int{50, *benchFleetSize} {
		b.Run(fmt.Sprintf("targets=%d", n), func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				f := newDaemonFleet(b, n, "0 3 1 1 *", "24h")
				f.start(b)
				one := f.alone(b, "--emergency")
				b.StartTimer()
				rep, wall := f.rotate(b, "--emergency")
				b.StopTimer()
				failed := len(rep.Failed())
				violations, notOne := f.violations()
				bound := DefaultMaxConcurrentRotations
				ideal := time.Duration(math.Ceil(float64(n)/float64(bound))) * one
				rss := readProc(b, f.d.cmd.Process.Pid)
				f.d.stop(b)
				b.ReportMetric(wall.Seconds(), "s-wall")
				b.ReportMetric(one.Seconds()*1000, "ms-one-emergency")
				b.ReportMetric(ideal.Seconds(), "s-ideal")
				b.ReportMetric(float64(ideal)/float64(wall), "ideal/wall")
				b.ReportMetric(float64(failed), "failed")
				b.ReportMetric(float64(violations), "violations")
				b.ReportMetric(float64(notOne), "not-1-key")
				b.ReportMetric(float64(rss.hwmKiB)/1024, "MiB-rss-peak")
				b.ReportMetric(float64(bound), "bound")
				if failed > 0 || violations > 0 || notOne > 0 {
					b.Errorf("%d failed, %d violations, %d targets without exactly one key", failed, violations, notOne)
				}
			}
		})
	}
}

// BenchmarkSameTick: -bench.fleet (default 1,000) targets on one cron
// tick under `run`, with the default max_concurrent_rotations. Wall is
// from the tick to the last success the daemon counts; the ideal is
// ceil(N / bound) routine rotations of one target alone.
func BenchmarkSameTick(b *testing.B) {
	n := *benchFleetSize
	b.Run(fmt.Sprintf("targets=%d", n), func(b *testing.B) {
		for range b.N {
			b.StopTimer()
			// An hourly tick a few minutes from now: a cron spec that
			// ticks every minute makes validation walk a year of minutes
			// per target (ShortestInterval), a minute of CPU for 1,000.
			tick := time.Now().Truncate(time.Minute).Add(4 * time.Minute)
			f := newDaemonFleet(b, n, fmt.Sprintf("%d * * * *", tick.Minute()), "30m")
			f.markRotatedNow(b)
			f.start(b)
			one := f.alone(b)
			if time.Now().After(tick) {
				b.Fatalf("setup ran past the tick at %s", tick)
			}
			metricsURL := "http://" + f.metrics + "/metrics"
			_, expo := get(b, metricsURL)
			base := metricSum(expo, "codat_rotator_rotations_total", `result="success"`)
			time.Sleep(time.Until(tick))
			b.StartTimer()
			var done time.Time
			peakWaiting := 0.0
			for deadline := tick.Add(10 * time.Minute); ; {
				_, expo = get(b, metricsURL)
				peakWaiting = max(peakWaiting, metricSum(expo, "codat_rotator_rotations_waiting"))
				if metricSum(expo, "codat_rotator_rotations_total", `result="success"`)-base >= float64(n) {
					done = time.Now()
					break
				}
				if failed := metricSum(expo, "codat_rotator_rotations_total", `result="failed"`); failed > 0 {
					b.Fatalf("%v rotations failed", failed)
				}
				if time.Now().After(deadline) {
					b.Fatalf("not all %d rotated by %s", n, deadline)
				}
				time.Sleep(100 * time.Millisecond)
			}
			b.StopTimer()
			wall := done.Sub(tick)
			failed := metricSum(expo, "codat_rotator_rotations_total", `result="failed"`)
			rss := readProc(b, f.d.cmd.Process.Pid)
			f.d.stop(b)
			bound := DefaultMaxConcurrentRotations
			ideal := time.Duration(math.Ceil(float64(n)/float64(bound))) * one
			violations := 0
			for _, emu := range f.lim.emus {
				violations += len(emu.Violations())
			}
			b.ReportMetric(wall.Seconds(), "s-wall")
			b.ReportMetric(one.Seconds()*1000, "ms-one-rotation")
			b.ReportMetric(ideal.Seconds(), "s-ideal")
			b.ReportMetric(float64(ideal)/float64(wall), "ideal/wall")
			b.ReportMetric(failed, "failed")
			b.ReportMetric(float64(violations), "violations")
			b.ReportMetric(peakWaiting, "peak-waiting")
			b.ReportMetric(float64(rss.hwmKiB)/1024, "MiB-rss-peak")
			b.ReportMetric(float64(bound), "bound")
			if failed > 0 || violations > 0 {
				b.Errorf("%v failed, %d violations", failed, violations)
			}
			if strings.Contains(f.d.logs.String(), "catching up") {
				b.Errorf("a target caught up at start: the tick is not the only run")
			}
		}
	})
}
