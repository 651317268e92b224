package kubernetes

import (
	"os"
	"reflect"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"sigs.k8s.io/yaml"
)

// rulesFile is the Prometheus rule file the PrometheusRule carries
// (cmd/codat-rotator/monitoring_test.go runs promtool on it).
const rulesFile = "../prometheus/codat-rotator-rules.yaml"

// TestPrometheusRuleMatchesRulesFile: the PrometheusRule that kubectl
// apply -k creates holds exactly the groups of the rule file, decoded
// as strictly as the manifests (a misspelt field in either fails).
func TestPrometheusRuleMatchesRulesFile(t *testing.T) {
	raw, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []monitoringv1.RuleGroup `json:"groups"`
	}
	if err := unmarshalStrict(raw, &file); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	if len(file.Groups) == 0 || len(file.Groups[0].Rules) == 0 {
		t.Fatalf("%s: no rules", rulesFile)
	}
	got := buildWithRule(t).rules.Spec.Groups
	if !reflect.DeepEqual(got, file.Groups) {
		want, _ := yaml.Marshal(map[string]any{"groups": file.Groups})
		t.Errorf("prometheus-rule/prometheusrule.yaml spec.groups differ from %s; copy its groups under spec:\n%s", rulesFile, want)
	}
	for _, g := range got {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			if r.For == nil || *r.For == "" {
				t.Errorf("%s: no for:, so one bad scrape would page", r.Alert)
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if r.Annotations[a] == "" {
					t.Errorf("%s: no %s annotation", r.Alert, a)
				}
			}
		}
	}
}

// TestPrometheusRuleDecodingCatchesTypos: the comparison above has
// teeth: a misspelt field of a rule is refused.
func TestPrometheusRuleDecodingCatchesTypos(t *testing.T) {
	for _, doc := range []string{
		"groups: [{name: g, rules: [{alert: A, expr: up, fro: 5m}]}]",
		"groups: [{name: g, rules: [{alert: A, expr: up, annotation: {summary: s}}]}]",
	} {
		var file struct {
			Groups []monitoringv1.RuleGroup `json:"groups"`
		}
		if err := unmarshalStrict([]byte(doc), &file); err == nil {
			t.Errorf("%s: decoded without error", doc)
		}
	}
}
