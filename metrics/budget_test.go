package metrics

import (
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/codat"
)

// TestBudgetMetrics: the budget's gauges read its state at each scrape;
// waits and both kinds of 429 are counted.
func TestBudgetMetrics(t *testing.T) {
	m := New()
	st := codat.BudgetState{PerMinute: 900, Effective: 450, Waiting: 3, Narrows: 2}
	m.WatchBudget(func() codat.BudgetState { return st })
	for name, want := range map[string]float64{
		"codat_rotator_codat_budget_requests_per_minute":  900,
		"codat_rotator_codat_budget_effective_per_minute": 450,
		"codat_rotator_codat_budget_waiting":              3,
	} {
		if got, ok := gaugeValue(t, m, name, nil); !ok || got != want {
			t.Errorf("%s = %v (%v), want %v", name, got, ok, want)
		}
	}
	if got := counterValue(t, m, "codat_rotator_codat_budget_narrowed_total", nil); got != 2 {
		t.Errorf("narrowed_total = %v, want 2", got)
	}
	// Both kinds exist at zero before any 429.
	for _, kind := range []string{codat.RateLimitIP, codat.RateLimitClientQuota} {
		if mm := findMetric(t, m, "codat_rotator_codat_rate_limited_total", map[string]string{"kind": kind}); mm == nil {
			t.Errorf("rate_limited_total{kind=%q} missing before any 429", kind)
		}
	}
	m.ObserveCodat(codat.Exchange{Op: codat.OpList, Status: 429, RateLimit: codat.RateLimitIP})
	m.ObserveCodat(codat.Exchange{Op: codat.OpList, Status: 200})
	if got := counterValue(t, m, "codat_rotator_codat_rate_limited_total", map[string]string{"kind": codat.RateLimitIP}); got != 1 {
		t.Errorf("rate_limited_total{kind=ip} = %v, want 1", got)
	}
	m.ObserveBudgetWait(1500 * time.Millisecond)
	mm := findMetric(t, m, "codat_rotator_codat_budget_wait_seconds", nil)
	if mm == nil || mm.GetHistogram().GetSampleCount() != 1 || mm.GetHistogram().GetSampleSum() != 1.5 {
		t.Errorf("budget_wait_seconds: %v, want one sample of 1.5", mm)
	}
}
