package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/admin"
	"github.com/codat-rotator/codat-rotator/rotation"
)

// TestNextRotationAgrees (issue 16): with an @every schedule and jitter,
// what status shows as the next rotation, the next_rotation metric and
// the next_rotation_at the last rotation published are one instant, and
// the daemon's next rotation starts then (its id carries its start, to
// the second). rotation/scheduler_test.go's TestNextRotationAtIsTheLoopsRun
// shows the same on a fake clock for cron and @every.
func TestNextRotationAgrees(t *testing.T) {
	e := newDaemonEnv(t, "@every 4s", "1s")
	f, err := os.OpenFile(e.config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, "    jitter: 2s")
	f.Close()
	d := e.start(t, nil)
	d.waitRunning(t)
	d.waitRotations(t, 15*time.Second, 1)

	// read gives the three views, once they agree on which rotation was
	// the last: a rotation between two reads moves them all.
	read := func() (status, metric, published time.Time, last string) {
		t.Helper()
		for range 50 {
			before := e.servedKeyID(t)
			code, stdout, stderr := e.cli(t, nil, "status", "--json")
			if code != 0 {
				t.Fatalf("status --json: exit %d\n%s%s", code, stdout, stderr)
			}
			var doc admin.StatusReport
			if err := json.Unmarshal([]byte(stdout), &doc); err != nil || len(doc.Targets) != 1 || doc.Targets[0].NextRotation == nil {
				t.Fatalf("status --json: %v\n%s", err, stdout)
			}
			_, body := get(t, "http://"+e.metrics+"/metrics")
			v, ok := metricValue(body, "codat_rotator_next_rotation_timestamp_seconds", `target="crash"`)
			if !ok {
				t.Fatalf("no next_rotation metric:\n%s", body)
			}
			sec, err := e.api.KVv2(e.mount).Get(context.Background(), "codat/crash")
			if err != nil {
				t.Fatal(err)
			}
			at, _ := sec.Data["next_rotation_at"].(string)
			p, err := time.Parse(time.RFC3339, at)
			if err != nil {
				t.Fatalf("next_rotation_at %q: %v", at, err)
			}
			if e.servedKeyID(t) == before && doc.Targets[0].CurrentKey != nil && doc.Targets[0].CurrentKey.ID == before {
				return *doc.Targets[0].NextRotation, time.Unix(int64(v), 0), p, before
			}
		}
		t.Fatal("the daemon rotated during every read")
		return
	}
	for round := range 3 {
		status, metric, published, served := read()
		if !status.Equal(metric) || !status.Equal(published) {
			t.Errorf("round %d: status says %s, the metric %s, next_rotation_at %s: want one instant",
				round, status.UTC(), metric.UTC(), published.UTC())
		}
		// The daemon's next rotation starts at that instant: its id
		// (r-<start>-<hex>) names the second it started.
		want := "r-" + status.UTC().Format(rotation.NameTimeLayout) + "-"
		d.until(t, 15*time.Second, "the next rotation", func() bool { return e.servedKeyID(t) != served })
		d.waitLog(t, 10*time.Second, 1, "rotation "+want+"… done", func(r logRecord) bool {
			return r.str("msg") == "rotation done" && strings.HasPrefix(r.str("rotation"), want)
		})
	}
	d.stop(t)
}
