package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// The monitoring files docs/metrics.md's "Alerts" and "Dashboard" sections
// describe, from this package's directory.
const (
	rulesFile     = repoRoot + "/deploy/prometheus/codat-rotator-rules.yaml"
	rulesTestFile = repoRoot + "/deploy/prometheus/codat-rotator-rules.test.yaml"
	dashboardFile = repoRoot + "/deploy/grafana/codat-rotator.json"
	metricsDoc    = repoRoot + "/docs/metrics.md"
)

// notYetExported are metrics the rules or the dashboard query before any
// daemon exports them, each with the reason. Delete an entry when its
// metric comes: TestMonitoringMetricsExported fails while an entry names
// a metric the daemon exports.
var notYetExported = map[string]string{}

// promtool finds promtool; its absence fails the test (Debian: apt-get
// install prometheus).
func promtool(tb testing.TB) string {
	tb.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		tb.Fatalf("promtool is needed to check the alert rules (apt-get install prometheus): %v", err)
	}
	return p
}

// ruleFile is a Prometheus rule file, as far as these tests read it.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readRules(tb testing.TB) ruleFile {
	tb.Helper()
	raw, err := os.ReadFile(rulesFile)
	if err != nil {
		tb.Fatal(err)
	}
	var rf ruleFile
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&rf); err != nil {
		tb.Fatalf("%s: %v", rulesFile, err)
	}
	if len(rf.Groups) == 0 || len(rf.Groups[0].Rules) == 0 {
		tb.Fatalf("%s: no rules", rulesFile)
	}
	return rf
}

// TestPrometheusRules runs promtool on the rule file and its unit tests:
// the rules parse, and each alert fires, and stays quiet, as its test
// series say.
func TestPrometheusRules(t *testing.T) {
	pt := promtool(t)
	for _, args := range [][]string{{"check", "rules", rulesFile}, {"test", "rules", rulesTestFile}} {
		out, err := exec.Command(pt, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
			continue
		}
		t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
	}
}

// TestAlertRulesComplete: every alert has a summary, a description, a
// runbook_url pointing at an anchor docs/metrics.md has, a severity and a
// for:; and the promtool tests cover each alert firing and not firing.
func TestAlertRulesComplete(t *testing.T) {
	rf := readRules(t)
	doc, err := os.ReadFile(metricsDoc)
	if err != nil {
		t.Fatal(err)
	}
	const runbooks = "https://github.com/codat-rotator/codat-rotator/blob/main/docs/metrics.md#"
	var alerts []string
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts = append(alerts, r.Alert)
			if d, err := time.ParseDuration(strings.Replace(r.For, "d", "h", 1)); err != nil || d < time.Minute {
				t.Errorf("%s: for: %q; want a duration of a minute or more, so that one bad scrape does not alert", r.Alert, r.For)
			}
			if r.Labels["severity"] == "" {
				t.Errorf("%s: no severity label", r.Alert)
			}
			for _, a := range []string{"summary", "description"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s: no %s", r.Alert, a)
				}
			}
			anchor, ok := strings.CutPrefix(r.Annotations["runbook_url"], runbooks)
			if !ok || !bytes.Contains(doc, []byte(`<a id="`+anchor+`"></a>`)) {
				t.Errorf("%s: runbook_url %q; want %s<anchor> with <a id=\"<anchor>\"></a> in docs/metrics.md", r.Alert, r.Annotations["runbook_url"], runbooks)
			}
		}
	}

	raw, err := os.ReadFile(rulesTestFile)
	if err != nil {
		t.Fatal(err)
	}
	var tests struct {
		RuleFiles []string `yaml:"rule_files"`
		Tests     []struct {
			AlertRuleTest []struct {
				Alertname string           `yaml:"alertname"`
				ExpAlerts []map[string]any `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal(raw, &tests); err != nil {
		t.Fatalf("%s: %v", rulesTestFile, err)
	}
	if want := []string{filepath.Base(rulesFile)}; !slices.Equal(tests.RuleFiles, want) {
		t.Errorf("%s: rule_files %q, want %q", rulesTestFile, tests.RuleFiles, want)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if !slices.Contains(alerts, a.Alertname) {
				t.Errorf("%s: a test of %q, which the rules do not have", rulesTestFile, a.Alertname)
			}
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	for _, a := range alerts {
		if !fires[a] || !quiet[a] {
			t.Errorf("%s: tested firing %v, not firing %v; want both", a, fires[a], quiet[a])
		}
	}
}

// dashboard reads the Grafana dashboard as plain JSON.
func dashboard(tb testing.TB) map[string]any {
	tb.Helper()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		tb.Fatal(err)
	}
	var d map[string]any
	if err := json.Unmarshal(raw, &d); err != nil {
		tb.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// strings walks v and calls f with every string in it and its key.
func walkStrings(v any, key string, f func(key, s string)) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			walkStrings(x, k, f)
		}
	case []any:
		for _, x := range v {
			walkStrings(x, key, f)
		}
	case string:
		f(key, v)
	}
}

// grafanaVars are the dashboard variables and Grafana's own, with a
// value that makes an expression plain PromQL.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$target", ".*")

// TestDashboard: the dashboard's queries are valid PromQL (promtool
// parses each as a recording rule), every panel reads the dashboard's
// data source, per-target queries follow the target selector, and it
// has the panels docs/metrics.md promises.
func TestDashboard(t *testing.T) {
	d := dashboard(t)
	if d["uid"] != "codat-rotator" || d["title"] != "codat-rotator" {
		t.Errorf("uid %v, title %v; want codat-rotator for both (links and provisioning use them)", d["uid"], d["title"])
	}
	var exprs []string
	walkStrings(d, "", func(key, s string) {
		if key == "expr" {
			exprs = append(exprs, s)
		}
	})
	if len(exprs) < 10 {
		t.Fatalf("%d queries in the dashboard, want the full set", len(exprs))
	}
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, e := range exprs {
		if strings.Contains(e, "target") && !strings.Contains(e, `target=~"$target"`) {
			t.Errorf("query %q: a per-target query without {target=~\"$target\"}", e)
		}
		q, _ := json.Marshal(grafanaVars.Replace(e))
		fmt.Fprintf(&rules, "      - record: dashboard:query_%d\n        expr: %s\n", i, q)
	}
	file := filepath.Join(t.TempDir(), "dashboard-queries.yaml")
	if err := os.WriteFile(file, []byte(rules.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool(t), "check", "rules", file).CombinedOutput(); err != nil {
		t.Errorf("the dashboard's queries are not all valid PromQL: %v\n%s", err, out)
	}

	var titles []string
	for _, p := range d["panels"].([]any) {
		p := p.(map[string]any)
		titles = append(titles, p["title"].(string))
		if p["type"] == "row" {
			continue
		}
		if ds, _ := p["datasource"].(map[string]any); ds["uid"] != "${datasource}" {
			t.Errorf("panel %q: datasource %v; want the dashboard's ${datasource}", p["title"], p["datasource"])
		}
		if desc, _ := p["description"].(string); desc == "" {
			t.Errorf("panel %q: no description", p["title"])
		}
	}
	for _, want := range []string{"Targets", "Last success age", "Next rotation in", "Keys at Codat by state, against the cap",
		"Free slots", "Rotations by result", "Rotation duration", "Codat requests", "Codat errors", "Codat latency",
		"Vault requests", "Vault errors", "Vault latency"} {
		if !slices.Contains(titles, want) {
			t.Errorf("no panel %q (panels: %q)", want, titles)
		}
	}
}

var metricName = regexp.MustCompile(`\bcodat_rotator_[a-z0-9_]+`)

// queriedMetrics is every codat_rotator_ metric the rules and the
// dashboard name, with where.
func queriedMetrics(t *testing.T) map[string][]string {
	t.Helper()
	names := map[string][]string{}
	add := func(where, s string) {
		for _, m := range metricName.FindAllString(s, -1) {
			if !slices.Contains(names[m], where) {
				names[m] = append(names[m], where)
			}
		}
	}
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			add(filepath.Base(rulesFile)+" "+r.Alert+r.Record, r.Expr)
		}
	}
	walkStrings(dashboard(t), "", func(_, s string) { add(filepath.Base(dashboardFile), s) })
	return names
}

// TestMonitoringMetricsExported scrapes a running daemon's /metrics
// after a rotation and checks that every metric the alert rules and the
// dashboard query is one it exports (histograms by their _bucket, _sum
// and _count series), but for the notYetExported ones.
func TestMonitoringMetricsExported(t *testing.T) {
	queried := queriedMetrics(t)
	if len(queried) < 10 {
		t.Fatalf("only %d metrics found in the rules and the dashboard: %v", len(queried), queried)
	}
	e := newDaemonEnv(t, "@every 1h", "1s")
	d := e.start(t, nil)
	d.waitRunning(t)
	d.waitRotations(t, 15*time.Second, 1) // the catch-up: Codat, Vault, a duration
	_, exposition := get(t, "http://"+e.metrics+"/metrics")
	d.stop(t)

	exported := map[string]bool{}
	for _, line := range strings.Split(exposition, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, _, _ := strings.Cut(line, "{")
		name, _, _ = strings.Cut(name, " ")
		exported[name] = true
	}
	var missing []string
	for name, where := range queried {
		_, excused := notYetExported[name]
		switch {
		case exported[name] && excused:
			t.Errorf("%s is exported now: remove it from notYetExported", name)
		case !exported[name] && !excused:
			missing = append(missing, fmt.Sprintf("%s (in %s)", name, strings.Join(where, ", ")))
		}
	}
	sort.Strings(missing)
	for _, m := range missing {
		t.Errorf("queried but not exported by the daemon: %s", m)
	}
	for name := range notYetExported {
		if _, ok := queried[name]; !ok {
			t.Errorf("notYetExported names %s, which nothing queries: remove it", name)
		}
	}
}
