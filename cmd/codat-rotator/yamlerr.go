package main

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The YAML decoder's errors, worded for an operator: each with the line
// of the mistake and the path of the field (targets[0].max_keys), what
// the field wants and what it got, never a Go type name.

var (
	lineMsg      = regexp.MustCompile(`^line (\d+): (.*)$`)
	unknownField = regexp.MustCompile(`^field (\S+) not found in type (\S+)$`)
	cannotDecode = regexp.MustCompile("^cannot unmarshal !!(\\w+)(?: `(.*)`)? into (\\S+)$")
)

// yamlError words err, the decoder's error for raw, for an operator.
// orig is the file before ${NAME} expansion: a line quoted from it shows
// the ${NAME}, not its value.
func yamlError(err error, raw, orig []byte) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return syntaxError(err, raw, orig)
	}
	var root yaml.Node
	_ = yaml.Unmarshal(raw, &root) // it parsed: only types were wrong
	fields := yamlFields(&root, "", nil)
	msgs := make([]string, len(te.Errors))
	for i, m := range te.Errors {
		msgs[i] = wordTypeError(m, fields)
	}
	return errors.New(strings.Join(msgs, "\n"))
}

// syntaxError gives a YAML syntax error the line of the mistake. The
// decoder names the line where the enclosing block starts (counted from
// 0 at that), not the line that breaks it: the first prefix of whole
// lines that does not parse ends on that line.
func syntaxError(err error, raw, orig []byte) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if m := lineMsg.FindStringSubmatch(msg); m != nil {
		msg = m[2]
	}
	lines := strings.SplitAfter(string(raw), "\n")
	fails := func(n int) bool {
		var v yaml.Node
		return yaml.Unmarshal([]byte(strings.Join(lines[:n], "")), &v) != nil
	}
	if !fails(len(lines)) {
		return fmt.Errorf("%s", msg)
	}
	// Once broken a document stays broken: search for the first prefix
	// that fails.
	n := sort.Search(len(lines), func(n int) bool { return n > 0 && fails(n) })
	if n == 0 || n > len(lines) {
		return fmt.Errorf("%s", msg)
	}
	text := strings.TrimRight(lines[n-1], "\r\n")
	if strings.Contains(text[:len(text)-len(strings.TrimLeft(text, " \t"))], "\t") {
		msg += " (a tab: YAML indents with spaces only)"
	}
	// The line as written, ${NAME} and all: its expansion may be a secret.
	written := strings.SplitAfter(string(orig), "\n")
	if len(written) != len(lines) {
		return fmt.Errorf("line %d: %s", n, msg) // a value spanning lines: no line to quote
	}
	return fmt.Errorf("line %d: %s, in: %s", n, msg, strings.TrimSpace(strings.TrimRight(written[n-1], "\r\n")))
}

// yamlField is a key (nil for a list item) and its value, at path.
type yamlField struct {
	path       string
	key, value *yaml.Node
}

// yamlFields lists every field and list item under n, outermost first.
func yamlFields(n *yaml.Node, path string, out []yamlField) []yamlField {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			out = yamlFields(c, path, out)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			out = append(out, yamlField{path: p, key: k, value: v})
			out = yamlFields(v, p, out)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			out = append(out, yamlField{path: p, value: c})
			out = yamlFields(c, p, out)
		}
	}
	return out
}

// wordTypeError words one of the decoder's per-field errors.
func wordTypeError(msg string, fields []yamlField) string {
	m := lineMsg.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	line, _ := strconv.Atoi(m[1])
	text := m[2]
	if u := unknownField.FindStringSubmatch(text); u != nil {
		for _, f := range fields {
			if f.key != nil && f.key.Line == line && f.key.Value == u[1] {
				parent := strings.TrimSuffix(strings.TrimSuffix(f.path, u[1]), ".")
				where := parent + ": "
				if parent == "" {
					where = "top level: "
				}
				return fmt.Sprintf("line %d: %sunknown field %s%s", line, where, u[1], suggestField(u[1], u[2]))
			}
		}
		return fmt.Sprintf("line %d: unknown field %s%s", line, u[1], suggestField(u[1], u[2]))
	}
	if c := cannotDecode.FindStringSubmatch(text); c != nil {
		tag, shown, goType := c[1], strings.TrimSuffix(c[2], "..."), c[3]
		for _, f := range fields {
			v := f.value
			if v.Line != line || !nodeMatches(v, tag, shown) {
				continue
			}
			return fmt.Sprintf("line %d: %s: want %s, got %s", line, f.path, wantOf(goType), gotOf(v))
		}
		return fmt.Sprintf("line %d: want %s", line, wantOf(goType))
	}
	// An UnmarshalYAML of ours (a duration): name the field it is about.
	for _, f := range fields {
		if f.key != nil && f.value.Kind == yaml.ScalarNode && f.value.Line == line && strings.Contains(text, strconv.Quote(f.value.Value)) {
			return fmt.Sprintf("line %d: %s: %s", line, f.path, text)
		}
	}
	return msg
}

func nodeMatches(n *yaml.Node, tag, shown string) bool {
	switch tag {
	case "map":
		return n.Kind == yaml.MappingNode
	case "seq":
		return n.Kind == yaml.SequenceNode
	}
	return n.Kind == yaml.ScalarNode && strings.HasPrefix(n.Value, shown)
}

// wantOf says in an operator's words what a Go type holds.
func wantOf(goType string) string {
	t := strings.TrimPrefix(goType, "*")
	switch {
	case strings.HasPrefix(t, "[]"):
		return "a list"
	case strings.HasPrefix(t, "map["):
		return "a mapping"
	case t == "bool":
		return "true or false"
	case t == "string":
		return "text"
	case strings.HasPrefix(t, "int") || strings.HasPrefix(t, "uint"):
		return "a whole number"
	case strings.HasPrefix(t, "float"):
		return "a number"
	case t == "main.Duration":
		return "a duration such as 30s, 10m, 24h or 7d"
	}
	return "a mapping of fields"
}

// gotOf says what the document holds at n.
func gotOf(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return strconv.Quote(n.Value)
}

// configFields are the field names of each type of the config, keyed as
// the decoder names the type (main.TargetConfig), for suggestions.
var configFields = func() map[string][]string {
	out := map[string][]string{}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		name := t.String()
		if t.Kind() != reflect.Struct || out[name] != nil {
			return
		}
		out[name] = []string{}
		for i := range t.NumField() {
			f := t.Field(i)
			if tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); tag != "" && tag != "-" {
				out[name] = append(out[name], tag)
				walk(f.Type)
			}
		}
	}
	walk(reflect.TypeFor[Config]())
	return out
}()

// suggestField is " (did you mean X?)" for a misspelt field of goType,
// or the fields it has.
func suggestField(name, goType string) string {
	known := configFields[goType]
	if len(known) == 0 {
		return ""
	}
	best, dist := "", len(name)
	for _, k := range known {
		if d := editDistance(name, k); d < dist {
			best, dist = k, d
		}
	}
	if best != "" && dist <= max(2, len(name)/3) {
		return " (did you mean " + best + "?)"
	}
	sorted := slices.Sorted(slices.Values(known))
	return " (the fields here: " + strings.Join(sorted, ", ") + ")"
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
