package boundaries

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/codat-rotator/codat-rotator"

// adapters speak to one outside system each; rotation/ joins them.
var adapters = []string{"codat", "vault", "store"}

// above are the packages that wire the adapters; no adapter imports them.
// "rotation" covers rotation/adapt, which fits codat/ and vault/ to the
// engine.
var above = []string{"rotation", "admin", "notify", "metrics", "cmd"}

// engine speaks its own types: it imports none of these adapters, which
// rotation/adapt translates for it.
const engine = "rotation"

var engineNeverImports = []string{"codat", "vault"}

// leaves are shared by the adapters, so they import nothing of the module.
var leaves = []string{"secret", "internal/clock", "internal/isotime", "internal/sentinel", "internal/secretfile"}

// consumers is the package applications import to call Codat with the
// key the daemon keeps current: it knows the daemon only through the
// secret's layout, so of this module it imports the secret type alone.
const consumers = "codatauth"

var consumersMayImport = []string{"secret"}

// under reports whether the import path pkg is dir or below it.
func under(pkg, dir string) bool {
	p := module + "/" + dir
	return pkg == p || strings.HasPrefix(pkg, p+"/")
}

// deps maps every package of the module to its transitive imports, as
// `go list -deps` sees them for the build (test files excluded).
func deps(tb testing.TB) map[string][]string {
	tb.Helper()
	// go test puts its own go first on PATH.
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Deps \" \"}}", module+"/...").Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			tb.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		tb.Fatalf("go list: %v", err)
	}
	m := map[string][]string{}
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) > 0 {
			m[f[0]] = f[1:]
		}
	}
	return m
}

// violations lists "pkg imports dep" for every dependency the layout forbids.
func violations(graph map[string][]string) []string {
	var bad []string
	for pkg, ds := range graph {
		for _, d := range ds {
			if !strings.HasPrefix(d, module+"/") {
				continue
			}
			for _, leaf := range leaves {
				if under(pkg, leaf) {
					bad = append(bad, pkg+" imports "+d+" (a shared leaf imports nothing of the module)")
				}
			}
			if under(pkg, consumers) && !slices.ContainsFunc(consumersMayImport, func(dir string) bool { return under(d, dir) }) {
				bad = append(bad, pkg+" imports "+d+" (the consumers' package knows the daemon only through secret/ and the secret's layout)")
			}
			if pkg == module+"/"+engine {
				for _, a := range engineNeverImports {
					if under(d, a) {
						bad = append(bad, pkg+" imports "+d+" (the engine speaks its own types; rotation/adapt translates "+a+"/)")
					}
				}
			}
			for _, a := range adapters {
				if !under(pkg, a) {
					continue
				}
				for _, other := range append(append([]string(nil), adapters...), above...) {
					if other != a && under(d, other) {
						bad = append(bad, pkg+" imports "+d+" (adapter "+a+"/ must not depend on "+other+"/)")
					}
				}
			}
		}
	}
	return bad
}

func TestAdaptersDoNotImportEachOther(t *testing.T) {
	graph := deps(t)
	for _, dir := range append(append([]string{consumers}, adapters...), leaves...) {
		if _, ok := graph[module+"/"+dir]; !ok {
			t.Fatalf("go list did not report %s/%s: the layout this test guards has changed", module, dir)
		}
	}
	for _, v := range violations(graph) {
		t.Error(v)
	}
}

// TestViolationsCatches checks the rule itself on a made-up graph, so that
// a broken rule cannot pass TestAdaptersDoNotImportEachOther by saying
// nothing.
func TestViolationsCatches(t *testing.T) {
	graph := map[string][]string{
		module + "/vault":           {"context", module + "/secret", module + "/codat"},
		module + "/codat/emulator":  {module + "/store"},
		module + "/store":           {module + "/rotation"},
		module + "/secret":          {module + "/codat"},
		module + "/rotation":        {module + "/codat", module + "/vault", module + "/store"},
		module + "/rotation/adapt":  {module + "/rotation", module + "/codat", module + "/vault"},
		module + "/codat":           {module + "/secret", module + "/internal/isotime"},
		module + "/vault/vaulttest": {module + "/rotation/adapt"},
		module + "/codatauth":       {module + "/secret", module + "/vault"},
	}
	got := violations(graph)
	want := []string{
		module + "/vault imports " + module + "/codat",
		module + "/codat/emulator imports " + module + "/store",
		module + "/store imports " + module + "/rotation",
		module + "/secret imports " + module + "/codat",
		module + "/rotation imports " + module + "/codat",
		module + "/rotation imports " + module + "/vault",
		module + "/vault/vaulttest imports " + module + "/rotation/adapt",
		module + "/codatauth imports " + module + "/vault",
	}
	if len(got) != len(want) {
		t.Errorf("got %d violations, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for _, w := range want {
		found := false
		for _, g := range got {
			found = found || strings.HasPrefix(g, w+" ")
		}
		if !found {
			t.Errorf("missing violation %q in:\n%s", w, strings.Join(got, "\n"))
		}
	}
}
