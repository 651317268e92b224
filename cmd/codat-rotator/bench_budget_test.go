package main

import (
	"fmt"
	"math"
	"testing"
	"time"
)

// BenchmarkFleetBudget: a fleet-wide `rotate --emergency` of
// -bench.fleet (default 1,000) targets through the daemon, at the
// default Codat request budget, against one emulator.Fleet (every
// client behind one address, 100 ms on every request) that counts the
// requests of all its clients per minute, as Codat counts an IP. The
// ideal is the requests made at the budget's rate: R / budget minutes.
// It takes R / 900 minutes (about 5 for 1,000 targets): not in `make
// bench`; `make bench-budget` runs it.
func BenchmarkFleetBudget(b *testing.B) {
	n := *benchFleetSize
	b.Run(fmt.Sprintf("targets=%d/budget=%d", n, DefaultCodatRequestsPerMinute), func(b *testing.B) {
		for range b.N {
			b.StopTimer()
			saved := *benchBudget
			*benchBudget = -1 // the default budget: no line in the config
			f := newCommandFleet(b, n, "0 3 1 1 *", "24h")
			*benchBudget = saved
			for i := range n {
				if err := f.codat.Client(i).SetFaults(latencyFaults(100 * time.Millisecond)); err != nil {
					b.Fatal(err)
				}
			}
			d := startDaemonBench(b, f.dir, f.cfg, f.vs.RootToken)
			d.waitReady(b, 5*time.Minute)
			b.Cleanup(func() {
				select {
				case <-d.done:
				default:
					d.stop(b)
				}
			})
			df := &daemonFleet{n: n, vs: f.vs, dir: f.dir, cfg: f.cfg, metrics: f.metrics, d: d}
			before := f.codat.Rate().Requests
			b.StartTimer()
			rep, wall := df.rotate(b, "--emergency")
			b.StopTimer()
			rate := f.codat.Rate()
			requests := rate.Requests - before
			violations, notOne := 0, 0
			for i := range n {
				violations += len(f.codat.Client(i).Violations())
				if f.codat.Client(i).ActiveKeys() != 1 {
					notOne++
				}
			}
			rss := readProc(b, d.cmd.Process.Pid)
			d.stop(b)
			budget := float64(DefaultCodatRequestsPerMinute)
			ideal := time.Duration(float64(requests) / budget * float64(time.Minute))
			failed := len(rep.Failed())
			b.ReportMetric(wall.Seconds(), "s-wall")
			b.ReportMetric(ideal.Seconds(), "s-ideal")
			b.ReportMetric(float64(ideal)/float64(wall), "ideal/wall")
			b.ReportMetric(float64(requests), "requests")
			b.ReportMetric(float64(requests)/float64(n), "requests/target")
			b.ReportMetric(float64(rate.MaxPerMinute), "max-per-clock-minute")
			b.ReportMetric(float64(rate.MaxIn60s), "max-in-any-60s")
			b.ReportMetric(float64(failed), "failed")
			b.ReportMetric(float64(violations), "violations")
			b.ReportMetric(float64(notOne), "not-1-key")
			b.ReportMetric(float64(rss.hwmKiB)/1024, "MiB-rss-peak")
			if failed > 0 || violations > 0 || notOne > 0 || rate.MaxIn60s > DefaultCodatRequestsPerMinute {
				b.Errorf("%d failed, %d violations, %d targets without exactly one key, %d requests in one minute (budget %d)",
					failed, violations, notOne, rate.MaxIn60s, DefaultCodatRequestsPerMinute)
			}
			if r := float64(ideal) / float64(wall); r < 0.9 || math.IsNaN(r) {
				b.Errorf("ideal/wall %.2f: the budget was not used", r)
			}
		}
	})
}
