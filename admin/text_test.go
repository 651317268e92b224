package admin_test

import (
	"strings"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/admin"
)

// The dry run's lines are written for an operator: every placeholder is
// filled in (an orphan's line once printed "the daemon's p.Target").
func TestDryRunTextSaysWhatItMeans(t *testing.T) {
	after := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var b strings.Builder
	admin.RotateReport{Results: []admin.RotateEntry{{
		Target: "t", Vault: "secret/codat/t", Succeeded: true,
		Plan: &admin.RotationPlan{
			ServedKeyID: "k1", CodatKeys: 3, Limit: 9, NewKeyName: "codat-rotator-20261130T000000Z-xxxxxx",
			Orphans: []string{"k2"}, Retire: []admin.Key{{ID: "k1", DeleteAfter: &after}}, RetireNow: []string{"k3"},
		},
	}}}.WriteText(&b)
	out := b.String()
	for _, want := range []string{
		"t: dry run, nothing changed",
		"would delete orphan key k2 (it has this target's name shape and its state does not know it)",
		"would retire key k1, deleted after 2026-12-01T00:00:00Z",
		"would then delete key k3: its grace is over",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "p.Target") || strings.Contains(out, "%!") {
		t.Errorf("dry run output has an unfilled placeholder:\n%s", out)
	}
}

// TestStatusTextShowsAWaitingTarget: a target due that waits for a slot
// of max_concurrent_rotations says so, with how full the bound is.
func TestStatusTextShowsAWaitingTarget(t *testing.T) {
	since := time.Date(2026, 3, 2, 4, 0, 0, 0, time.UTC)
	rep := admin.StatusReport{
		Targets:   []admin.TargetStatus{{Name: "prod", Vault: "secret/codat/prod", WaitingSince: &since}, {Name: "dev", Vault: "secret/codat/dev"}},
		Rotations: admin.Concurrency{Running: 16, Waiting: 984, Limit: 16},
	}
	var b strings.Builder
	rep.WriteText(&b)
	want := "  state:          waiting for a rotation slot since 2026-03-02T04:00:00Z (16 of max_concurrent_rotations 16 running, 984 waiting)\n"
	if !strings.Contains(b.String(), want) {
		t.Errorf("status text lacks %q:\n%s", want, b.String())
	}
	if strings.Count(b.String(), "waiting for a rotation slot") != 1 {
		t.Errorf("only prod waits:\n%s", b.String())
	}
}

// TestTextEscapesControlCharacters: a key named (or an error worded)
// with terminal escapes by whoever made it prints them escaped: `keys`
// on an operator's terminal once printed them as they were.
func TestTextEscapesControlCharacters(t *testing.T) {
	evil := "\x1b]0;pwned\x07\x1b[1A\x1b[2Kfine"
	var b strings.Builder
	admin.KeysReport{Targets: []admin.TargetKeys{
		{Name: "prod", Keys: []admin.KeyEntry{{ID: "k1", Name: evil}}},
		{Name: "test", Error: "list keys: " + evil},
	}}.WriteText(&b)
	admin.StatusReport{Targets: []admin.TargetStatus{{Name: "prod", LastResult: "failed", LastError: evil}}}.WriteText(&b)
	out := b.String()
	if strings.ContainsAny(out, "\x1b\x07") {
		t.Errorf("control characters reached the text:\n%q", out)
	}
	if n := strings.Count(out, `\x1b]0;pwned\x07\x1b[1A\x1b[2Kfine`); n != 3 {
		t.Errorf("want the name escaped 3 times, got %d in:\n%s", n, out)
	}
	if !strings.Contains(out, "prod\n") || !strings.Contains(out, "\n  ") {
		t.Errorf("the layout's line feeds are gone:\n%q", out)
	}
}
