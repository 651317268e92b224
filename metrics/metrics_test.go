package metrics

import (
	"errors"
	"fmt"
	"testing"

	"github.com/codat-rotator/codat-rotator/rotation"
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
			return mm.GetCounter().GetValue()
		}
	}
	return 0
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
