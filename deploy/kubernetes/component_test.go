package kubernetes

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// ruleComponentLines are kustomization.yaml's commented reference to the
// prometheus-rule component, and what an operator uncomments them to.
const (
	ruleComponentCommented   = "# components:\n#   - prometheus-rule\n"
	ruleComponentUncommented = "components:\n  - prometheus-rule\n"
)

// withRuleComponent copies the kustomization in dir to a temporary
// directory with the prometheus-rule component uncommented, as the
// kustomization's comment tells an operator on a cluster with the
// Prometheus Operator, and returns the copy's path.
func withRuleComponent(tb testing.TB, dir string) string {
	tb.Helper()
	out := tb.TempDir()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(out, rel), 0o755)
		}
		if !strings.HasSuffix(p, ".yaml") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if rel == "kustomization.yaml" {
			s := string(b)
			if !strings.Contains(s, ruleComponentCommented) {
				tb.Fatalf("%s: no %q to uncomment", p, ruleComponentCommented)
			}
			b = []byte(strings.Replace(s, ruleComponentCommented, ruleComponentUncommented, 1))
		}
		return os.WriteFile(filepath.Join(out, rel), b, 0o644)
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}
