package metrics

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/store"
)

// TestRetireFailuresCounted: the metric counts a retirement the
// scheduler gave up on apart from the failures it still retries.
func TestRetireFailuresCounted(t *testing.T) {
	gaveUp := fmt.Errorf("%w after 10 attempts: %w", rotation.ErrRetireExhausted, errors.New("retire: vault is sealed"))
	m := New()
	m.ObserveRetire("prod", nil, errors.New("retire: vault is sealed"))
	m.ObserveRetire("prod", nil, gaveUp)
	m.ObserveRetire("prod", []string{"k1"}, nil)
	for _, tc := range []struct {
		gaveUp string
		want   float64
	}{{"false", 1}, {"true", 1}} {
		if got := counterValue(t, m, ns+"_retire_failures_total", map[string]string{"target": "prod", "gave_up": tc.gaveUp}); got != tc.want {
			t.Errorf("retire_failures_total{gave_up=%q} = %v, want %v", tc.gaveUp, got, tc.want)
		}
	}
	if got := counterValue(t, m, ns+"_retired_keys_total", map[string]string{"target": "prod"}); got != 1 {
		t.Errorf("retired_keys_total = %v, want 1", got)
	}
}

// counterValue reads the counter name{labels} from m's registry, 0 when
// it was never set.
func counterValue(t *testing.T, m *Metrics, name string, labels map[string]string) float64 {
	t.Helper()
	if mm := findMetric(t, m, name, labels); mm != nil {
		return mm.GetCounter().GetValue()
	}
	return 0
}

// findMetric returns the series name{labels} from m's registry, nil when
// there is none.
func findMetric(t *testing.T, m *Metrics, name string, labels map[string]string) *dto.Metric {
	t.Helper()
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, mm := range f.GetMetric() {
			for _, l := range mm.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue metrics
				}
			}
			return mm
		}
	}
	return nil
}

// TestSchedulerWakeups: the counter reads the scheduler's count at
// each scrape.
func TestSchedulerWakeups(t *testing.T) {
	m := New()
	var n uint64 = 3
	m.WatchScheduler(func() uint64 { return n })
	if got := counterValue(t, m, ns+"_scheduler_wakeups_total", nil); got != 3 {
		t.Errorf("scheduler_wakeups_total = %v, want 3", got)
	}
	n = 5
	if got := counterValue(t, m, ns+"_scheduler_wakeups_total", nil); got != 5 {
		t.Errorf("scheduler_wakeups_total after two wake-ups = %v, want 5", got)
	}
}

// TestStateGauges: the per-target gauges come from the state file and
// the target's definition at each scrape, the cap and the schedule's
// interval included (the alert rules and the dashboard need both).
func TestStateGauges(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	st := store.Target{
		LastSuccess: now.Add(-time.Hour), CodatKeys: 4, Halted: true,
		Keys: []store.Key{
			{ID: "a", State: store.KeyActive}, {ID: "r", State: store.KeyRetiring},
			{ID: "f", State: store.KeyForeign}, {ID: "g", State: store.KeyForeign}, {ID: "d", State: store.KeyDeleted},
		},
	}
	targets := []rotation.Target{
		{Name: "prod", MaxKeys: 10, ReserveSlots: 1, Interval: 6 * time.Hour},
		{Name: "full", MaxKeys: 4, ReserveSlots: 1}, // no known interval
	}
	m := New()
	m.WatchState(func(string) (store.Target, error) { return st, nil },
		func() []rotation.Target { return targets },
		func(string) time.Time { return now.Add(5 * time.Hour) })
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"last_success_timestamp_seconds", map[string]string{"target": "prod"}, float64(now.Add(-time.Hour).Unix())},
		{"next_rotation_timestamp_seconds", map[string]string{"target": "prod"}, float64(now.Add(5 * time.Hour).Unix())},
		{"keys", map[string]string{"target": "prod", "state": "active"}, 1},
		{"keys", map[string]string{"target": "prod", "state": "retiring"}, 1},
		{"keys", map[string]string{"target": "prod", "state": "foreign"}, 2},
		{"keys", map[string]string{"target": "prod", "state": "pending"}, 0},
		{"max_keys", map[string]string{"target": "prod"}, 10},
		{"max_keys", map[string]string{"target": "full"}, 4},
		{"free_slots", map[string]string{"target": "prod"}, 10 - 1 - 4},
		{"free_slots", map[string]string{"target": "full"}, 0}, // 4-1-4 clamps at 0
		{"halted", map[string]string{"target": "prod"}, 1},
		{"rotation_in_flight", map[string]string{"target": "prod"}, 0},
		{"schedule_interval_seconds", map[string]string{"target": "prod"}, 6 * 3600},
	} {
		if got, ok := gaugeValue(t, m, ns+"_"+tc.name, tc.labels); !ok || got != tc.want {
			t.Errorf("%s%v = %v (present %v), want %v", tc.name, tc.labels, got, ok, tc.want)
		}
	}
	if _, ok := gaugeValue(t, m, ns+"_schedule_interval_seconds", map[string]string{"target": "full"}); ok {
		t.Errorf("schedule_interval_seconds of a target without a known interval: present, want absent")
	}
}

// gaugeValue reads the gauge name{labels} from m's registry.
func gaugeValue(t *testing.T, m *Metrics, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	if mm := findMetric(t, m, name, labels); mm != nil {
		return mm.GetGauge().GetValue(), true
	}
	return 0, false
}

// TestTrackStartsCountersAtZero: a tracked target's counters exist at 0
// before anything happens, so the first failure is an increase.
func TestTrackStartsCountersAtZero(t *testing.T) {
	m := New()
	m.Track([]string{"prod"})
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, f := range families {
		if !strings.HasPrefix(f.GetName(), ns+"_") {
			continue // the Go and process collectors
		}
		for _, mm := range f.GetMetric() {
			if mm.GetCounter().GetValue() != 0 {
				t.Errorf("%s %v: got %v, want 0", f.GetName(), mm.GetLabel(), mm.GetCounter().GetValue())
			}
		}
		got[f.GetName()] = len(f.GetMetric())
	}
	for name, want := range map[string]int{ns + "_rotations_total": 3, ns + "_retired_keys_total": 1, ns + "_retire_failures_total": 2} {
		if got[name] != want {
			t.Errorf("%s: %d series, want %d", name, got[name], want)
		}
	}
	m.ObserveRotation("prod", rotation.Result{}, errors.New("boom"), time.Second)
	if v := counterValue(t, m, ns+"_rotations_total", map[string]string{"target": "prod", "result": "failed"}); v != 1 {
		t.Errorf("rotations_total{failed} after a failure: got %v, want 1", v)
	}
}
