package shaping

import (
	"errors"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// pathKey renders a map key as a path element: ".google" for a plain name,
// `["192.0.2.1"]` for one with other characters.
func pathKey(k string) string {
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return "[" + strconv.Quote(k) + "]"
		}
	}
	if k == "" {
		return `[""]`
	}
	return "." + k
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// yaml.v3 type errors name a line and what went wrong there.
var (
	reUnknownField = regexp.MustCompile("^line (\\d+): field (.+) not found in type ")
	reCannot       = regexp.MustCompile("^line (\\d+): cannot unmarshal !!\\w+( `(.*)`)? into ")
)

// describe turns a decoding error into one naming the field's path, by
// finding the node the error speaks of in the document's tree.
func describe(doc []byte, err error) string {
	var te *yaml.TypeError
	if !errors.As(err, &te) || len(te.Errors) == 0 {
		return err.Error()
	}
	var root yaml.Node
	if yaml.Unmarshal(doc, &root) != nil {
		return err.Error()
	}
	msgs := make([]string, 0, len(te.Errors))
	for _, e := range te.Errors {
		msgs = append(msgs, describeOne(&root, e))
	}
	return strings.Join(msgs, "; ")
}

func describeOne(root *yaml.Node, e string) string {
	if m := reUnknownField.FindStringSubmatch(e); m != nil {
		line, _ := strconv.Atoi(m[1])
		if p, ok := find(root, "", line, m[2], key); ok {
			return p + ": unknown field (" + e + ")"
		}
	}
	if m := reCannot.FindStringSubmatch(e); m != nil {
		line, _ := strconv.Atoi(m[1])
		what := scalar
		if m[2] == "" {
			what = collection
		}
		if p, ok := find(root, "", line, m[3], what); ok {
			return p + ": " + strings.TrimPrefix(e, "line "+m[1]+": ")
		}
	}
	return e
}

// What find looks for.
const (
	key        = iota // a mapping key of that name
	scalar            // a scalar value
	collection        // a mapping or sequence value
)

// find walks the tree for the node at line that is what (named value, for
// a key or a scalar) and returns its path.
func find(n *yaml.Node, path string, line int, value string, what int) (string, bool) {
	if path != "" && n.Line == line && (what == scalar && n.Kind == yaml.ScalarNode && n.Value == value ||
		what == collection && (n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode)) {
		return strings.TrimPrefix(path, "."), true
	}
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			if p, ok := find(c, path, line, value, what); ok {
				return p, ok
			}
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := path + pathKey(k.Value)
			if what == key && k.Line == line && k.Value == value {
				return strings.TrimPrefix(p, "."), true
			}
			if p, ok := find(v, p, line, value, what); ok {
				return p, ok
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			if p, ok := find(c, path+"["+strconv.Itoa(i)+"]", line, value, what); ok {
				return p, ok
			}
		}
	}
	return "", false
}
