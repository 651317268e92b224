// Package metrics holds the daemon's Prometheus metrics: counters that
// move as things happen, and per-target gauges read from the state file.
package metrics

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/codat-rotator/codat-rotator/codat"
	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/store"
)

// Metrics are the daemon's Prometheus metrics. Counters move as things
// happen; the per-target gauges are read from the state file at scrape
// time (WatchState), so they can never drift from it.
type Metrics struct {
	reg *prometheus.Registry

	rotations     *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	retirements   *prometheus.CounterVec
	retireFailed  *prometheus.CounterVec
	codatRequests *prometheus.CounterVec
	codatLatency  *prometheus.HistogramVec
	vaultRequests *prometheus.CounterVec
	vaultLatency  *prometheus.HistogramVec
	rateLimited   *prometheus.CounterVec
	budgetWait    prometheus.Histogram
}

const ns = "codat_rotator"

// New registers the counters and the Go and process collectors.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "rotations_total", Help: "Rotations by target and result (success, recovered, failed).",
		}, []string{"target", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "rotation_duration_seconds", Help: "Wall time of rotations, retries included.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"target"}),
		retirements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "retired_keys_total", Help: "Keys deleted after their grace, by target.",
		}, []string{"target"}),
		retireFailed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "retire_failures_total", Help: "Failed retirement passes by target; gave_up=true when the retry budget ran out.",
		}, []string{"target", "gave_up"}),
		codatRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "codat_requests_total", Help: "Codat API requests by operation and HTTP status (error: no response).",
		}, []string{"operation", "status"}),
		codatLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "codat_request_duration_seconds", Help: "Codat API request latency by operation.",
			Buckets: prometheus.DefBuckets,
		}, []string{"operation"}),
		vaultRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "vault_requests_total", Help: "Vault requests by operation and result (ok, error).",
		}, []string{"operation", "result"}),
		vaultLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "vault_request_duration_seconds", Help: "Vault request latency by operation.",
			Buckets: prometheus.DefBuckets,
		}, []string{"operation"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "codat_rate_limited_total",
			Help: "Codat 429s by kind: client_quota (the client's own quota is spent: slows that client) or ip (Codat's limit per IP: narrows the request budget for every client).",
		}, []string{"kind"}),
		budgetWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Name: "codat_budget_wait_seconds", Help: "Time each Codat request waited for the request budget (codat_requests_per_minute) before it was sent.",
			Buckets: []float64{.001, .01, .1, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}),
	}
	for _, kind := range []string{codat.RateLimitClientQuota, codat.RateLimitIP} {
		m.rateLimited.WithLabelValues(kind)
	}
	m.reg.MustRegister(m.rotations, m.duration, m.retirements, m.retireFailed, m.codatRequests, m.codatLatency, m.vaultRequests, m.vaultLatency,
		m.rateLimited, m.budgetWait,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics (/metrics).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// WatchState adds the per-target gauges, read at each scrape: load
// gives a target's state, targets the configured ones, next a target's
// next scheduled rotation (zero: none).
func (m *Metrics) WatchState(load func(target string) (store.Target, error), targets func() []rotation.Target, next func(target string) time.Time) {
	m.reg.MustRegister(newStateCollector(load, targets, next))
}

// WatchScheduler adds codat_rotator_scheduler_wakeups_total, read at
// each scrape from wakeups (rotation.Scheduler.Wakeups): how often a
// parked target loop got a goroutine again. On an idle daemon it moves
// only when something comes due.
func (m *Metrics) WatchScheduler(wakeups func() uint64) {
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: ns, Name: "scheduler_wakeups_total",
		Help: "Times a parked target loop was started again: a rotation or retirement came due, a manual rotation, a reload.",
	}, func() float64 { return float64(wakeups()) }))
}

// WatchConcurrency adds the gauges of the engine's bound on concurrent
// rotations, read at each scrape from look (rotation.Engine.Concurrency):
// codat_rotator_rotations_running, codat_rotator_rotations_waiting (targets
// due that wait for a slot: neither dropped nor failed) and
// codat_rotator_max_concurrent_rotations.
func (m *Metrics) WatchConcurrency(look func() rotation.Concurrency) {
	gauge := func(name, help string, v func(rotation.Concurrency) int) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: name, Help: help},
			func() float64 { return float64(v(look())) })
	}
	m.reg.MustRegister(
		gauge("rotations_running", "Rotations and retirement passes holding a slot of max_concurrent_rotations.",
			func(c rotation.Concurrency) int { return c.Running }),
		gauge("rotations_waiting", "Targets due that wait for a slot of max_concurrent_rotations (not failed, not dropped).",
			func(c rotation.Concurrency) int { return c.Waiting }),
		gauge("max_concurrent_rotations", "The bound on rotations at once (max_concurrent_rotations).",
			func(c rotation.Concurrency) int { return c.Limit }),
	)
}

// Track starts each target's counters at zero: a series born at 1 on
// the first failure has no earlier sample, so Prometheus's increase()
// would not see that failure (nor an alert on it). Call it with the
// configured targets at start and after every reload.
func (m *Metrics) Track(targets []string) {
	for _, t := range targets {
		for _, result := range []string{"success", "recovered", "failed"} {
			m.rotations.WithLabelValues(t, result)
		}
		m.retirements.WithLabelValues(t)
		for _, gaveUp := range []string{"false", "true"} {
			m.retireFailed.WithLabelValues(t, gaveUp)
		}
	}
}

// ObserveCodat counts a Codat API call (codat.Options.Observe).
func (m *Metrics) ObserveCodat(x codat.Exchange) {
	status := "error"
	if x.Status != 0 {
		status = strconv.Itoa(x.Status)
	}
	m.codatRequests.WithLabelValues(x.Op, status).Inc()
	m.codatLatency.WithLabelValues(x.Op).Observe(x.Duration.Seconds())
	if x.RateLimit != "" {
		m.rateLimited.WithLabelValues(x.RateLimit).Inc()
	}
}

// ObserveBudgetWait records how long a Codat request waited for the
// request budget (codat.BudgetOptions.OnWait).
func (m *Metrics) ObserveBudgetWait(d time.Duration) { m.budgetWait.Observe(d.Seconds()) }

// WatchBudget adds the gauges of the Codat request budget, read at each
// scrape from look (codat.Budget.State):
// codat_rotator_codat_budget_requests_per_minute (the setting, 0: none),
// codat_rotator_codat_budget_effective_per_minute (0 while an IP-limit
// 429's Retry-After runs, half while narrowed),
// codat_rotator_codat_budget_waiting and
// codat_rotator_codat_budget_narrowed_total.
func (m *Metrics) WatchBudget(look func() codat.BudgetState) {
	gauge := func(name, help string, v func(codat.BudgetState) int) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: name, Help: help},
			func() float64 { return float64(v(look())) })
	}
	m.reg.MustRegister(
		gauge("codat_budget_requests_per_minute", "The Codat request budget (codat_requests_per_minute); 0: none.",
			func(s codat.BudgetState) int { return s.PerMinute }),
		gauge("codat_budget_effective_per_minute", "Codat requests a minute allowed now: the budget, 0 while an IP-limit 429's Retry-After runs, half while narrowed after it.",
			func(s codat.BudgetState) int { return s.Effective }),
		gauge("codat_budget_waiting", "Codat requests waiting for the request budget.",
			func(s codat.BudgetState) int { return s.Waiting }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: ns, Name: "codat_budget_narrowed_total", Help: "IP-limit 429s that narrowed the Codat request budget.",
		}, func() float64 { return float64(look().Narrows) }),
	)
}

// ObserveVault counts a Vault call (vault.Config.Observe).
func (m *Metrics) ObserveVault(op string, err error, d time.Duration) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.vaultRequests.WithLabelValues(op, result).Inc()
	m.vaultLatency.WithLabelValues(op).Observe(d.Seconds())
}

// ObserveRotation counts a finished rotation of target and its wall time.
func (m *Metrics) ObserveRotation(target string, res rotation.Result, err error, took time.Duration) {
	result := "success"
	switch {
	case err != nil:
		result = "failed"
	case res.Recovered:
		result = "recovered"
	}
	m.rotations.WithLabelValues(target, result).Inc()
	m.duration.WithLabelValues(target).Observe(took.Seconds())
}

// ObserveRetire counts the keys a retirement pass deleted and, when it
// failed, the failure: gave_up="true" when the retry budget ran out.
func (m *Metrics) ObserveRetire(target string, deleted []string, err error) {
	m.retirements.WithLabelValues(target).Add(float64(len(deleted)))
	if err != nil {
		m.retireFailed.WithLabelValues(target, strconv.FormatBool(errors.Is(err, rotation.ErrRetireExhausted))).Inc()
	}
}

// stateCollector reads the per-target gauges from the state file.
type stateCollector struct {
	load    func(target string) (store.Target, error)
	targets func() []rotation.Target
	next    func(target string) time.Time

	lastSuccess, nextRotation, keys, maxKeys, freeSlots, halted, blocked, journal, interval *prometheus.Desc
	unclaimed, doubt                                                                        *prometheus.Desc
}

func newStateCollector(load func(string) (store.Target, error), targets func() []rotation.Target, next func(string) time.Time) *stateCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(ns+"_"+name, help, append([]string{"target"}, labels...), nil)
	}
	return &stateCollector{
		load: load, targets: targets, next: next,
		lastSuccess:  d("last_success_timestamp_seconds", "When the target last rotated successfully (unix seconds, 0 never)."),
		nextRotation: d("next_rotation_timestamp_seconds", "When the target next rotates on schedule (unix seconds)."),
		keys:         d("keys", "Keys the state file knows at Codat, by state (active, retiring, pending, foreign).", "state"),
		maxKeys:      d("max_keys", "Codat's key cap for the target (max_keys): every key at Codat counts against it."),
		freeSlots:    d("free_slots", "Codat key slots left for routine rotations (max_keys - reserve_slots - keys held)."),
		halted:       d("halted", "1 when the target is halted and waits for `codat-rotator resume`."),
		blocked:      d("blocked", "1 when another codat-rotator's state file owns the target: it rotates nothing until `codat-rotator takeover`."),
		journal:      d("rotation_in_flight", "1 while a rotation's journal is open (a crash left one if it stays)."),
		interval:     d("schedule_interval_seconds", "Shortest time between two scheduled rotations: no success for twice this means runs were missed."),
		unclaimed:    d("owner_unrecorded", "1 when the last publish could not record this state file as the secret's owner (no patch on the metadata path): nothing stops a second daemon on the target."),
		doubt:        d("served_key_in_doubt", "1 when the key Vault serves cannot be told for sure (key_id and api_key disagree, or api_key matches no known key): every key that may be it is kept."),
	}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.lastSuccess, c.nextRotation, c.keys, c.maxKeys, c.freeSlots, c.halted, c.blocked, c.journal, c.interval, c.unclaimed, c.doubt} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	for _, t := range c.targets() {
		st, err := c.load(t.Name)
		if err != nil {
			continue
		}
		last := 0.0
		if !st.LastSuccess.IsZero() {
			last = float64(st.LastSuccess.Unix())
		}
		ch <- prometheus.MustNewConstMetric(c.lastSuccess, prometheus.GaugeValue, last, t.Name)
		if next := c.next(t.Name); !next.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.nextRotation, prometheus.GaugeValue, float64(next.Unix()), t.Name)
		}
		counts := map[store.KeyState]int{store.KeyActive: 0, store.KeyRetiring: 0, store.KeyPending: 0, store.KeyForeign: 0}
		for _, k := range st.Keys {
			if k.State != store.KeyDeleted {
				counts[k.State]++
			}
		}
		for state, n := range counts {
			ch <- prometheus.MustNewConstMetric(c.keys, prometheus.GaugeValue, float64(n), t.Name, string(state))
		}
		ch <- prometheus.MustNewConstMetric(c.maxKeys, prometheus.GaugeValue, float64(t.MaxKeys), t.Name)
		if t.Interval > 0 {
			ch <- prometheus.MustNewConstMetric(c.interval, prometheus.GaugeValue, t.Interval.Seconds(), t.Name)
		}
		held := st.CodatKeys
		ch <- prometheus.MustNewConstMetric(c.freeSlots, prometheus.GaugeValue, float64(max(t.MaxKeys-t.ReserveSlots-held, 0)), t.Name)
		ch <- prometheus.MustNewConstMetric(c.halted, prometheus.GaugeValue, b2f(st.Halted), t.Name)
		ch <- prometheus.MustNewConstMetric(c.blocked, prometheus.GaugeValue, b2f(st.Blocked != ""), t.Name)
		ch <- prometheus.MustNewConstMetric(c.journal, prometheus.GaugeValue, b2f(st.Journal != nil), t.Name)
		ch <- prometheus.MustNewConstMetric(c.unclaimed, prometheus.GaugeValue, b2f(st.Unclaimed != ""), t.Name)
		ch <- prometheus.MustNewConstMetric(c.doubt, prometheus.GaugeValue, b2f(st.ServedDoubt != ""), t.Name)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
