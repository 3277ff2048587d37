package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"strconv"
	"strings"

	yamlv3 "go.yaml.in/yaml/v3"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// document is the configuration file twice: as the decoder reads it (JSON, objects as
// map[string]any and numbers as json.Number) and as it is written (the YAML nodes, which keep
// the spelling and the quotes that the conversion to JSON loses: 6.10 becomes 6.1, yes true).
type document struct {
	tree any
	src  *yamlv3.Node
}

func newDocument(data, jsonData []byte) document {
	var d document
	dec := json.NewDecoder(bytes.NewReader(jsonData))
	dec.UseNumber()
	if err := dec.Decode(&d.tree); err != nil {
		d.tree = nil
	}
	var root yamlv3.Node
	if err := yamlv3.Unmarshal(data, &root); err == nil && root.Kind == yamlv3.DocumentNode && len(root.Content) == 1 {
		d.src = root.Content[0]
	}
	return d
}

var (
	configType      = reflect.TypeFor[Config]()
	durationType    = reflect.TypeFor[Duration]()
	intOrStringType = reflect.TypeFor[intstr.IntOrString]()
)

// typeErrors walks the document alongside the configuration's Go types and reports every value
// the decoder cannot store, by its full path (list index and map key included), as the file
// writes it, and with what to write instead. The decoder names only the first such value, by a
// path without index or key, and not the value itself ("taint.value: expected string, got bool").
// It follows the decoder's rules, so that it finds nothing in a document the decoder reads, but
// map values left empty (`pool: {nodeSelector: {pool: }}`): the decoder reads them as "", which
// selects only the nodes whose label value is empty, far more likely a value left out than meant.
// A null anywhere else keeps the default, as the decoder does (the chart renders unset values so).
func typeErrors(doc any, src *yamlv3.Node, t reflect.Type, p *field.Path) field.ErrorList {
	if doc == nil {
		return nil
	}
	switch t {
	case durationType:
		return nil // never fails to decode: Duration.validate reports a bad one
	case intOrStringType:
		if _, ok := doc.(string); ok || isNumber(doc, reflect.Int32) {
			return nil
		}
		return wrongType(p, doc, src, t)
	}
	switch t.Kind() {
	case reflect.Pointer:
		return typeErrors(doc, src, t.Elem(), p)
	case reflect.Struct:
		m, ok := doc.(map[string]any)
		if !ok {
			return wrongType(p, doc, src, t)
		}
		var errs field.ErrorList
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
			if v, ok := m[name]; ok && name != "" && name != "-" {
				errs = append(errs, typeErrors(v, mapValue(src, name, 0), t.Field(i).Type, p.Child(name))...)
			}
		}
		return errs
	case reflect.Map:
		m, ok := doc.(map[string]any)
		if !ok {
			return wrongType(p, doc, src, t)
		}
		errs := renamedKeys(src, p)
		for _, k := range sortedKeys(m) {
			if m[k] == nil && t.Elem().Kind() == reflect.String {
				errs = append(errs, field.Invalid(p.Key(k), nil, "has no value; write '' (quoted) if an empty label value is meant"))
				continue
			}
			errs = append(errs, typeErrors(m[k], mapValue(src, k, 0), t.Elem(), p.Key(k))...)
		}
		return errs
	case reflect.Slice:
		l, ok := doc.([]any)
		if !ok {
			return wrongType(p, doc, src, t)
		}
		items := resolve(src)
		if items == nil || items.Kind != yamlv3.SequenceNode || len(items.Content) != len(l) {
			items = nil
		}
		var errs field.ErrorList
		for i, v := range l {
			var item *yamlv3.Node
			if items != nil {
				item = items.Content[i]
			}
			errs = append(errs, typeErrors(v, item, t.Elem(), p.Index(i))...)
		}
		return errs
	case reflect.String:
		if _, ok := doc.(string); ok {
			return nil
		}
	case reflect.Bool:
		if _, ok := doc.(bool); ok {
			return nil
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		if isNumber(doc, t.Kind()) {
			return nil
		}
	default:
		return nil
	}
	return wrongType(p, doc, src, t)
}

// wrongType reports doc, of another type than t, as written, and says what to write instead.
func wrongType(p *field.Path, doc any, src *yamlv3.Node, t reflect.Type) field.ErrorList {
	w, want := written(doc, src), describeType(t)
	detail := "must be " + want + ", not " + describeValue(doc)
	s, isString := doc.(string)
	_, isNum := doc.(json.Number)
	switch {
	case t.Kind() == reflect.String && isScalar(doc):
		detail = "must be " + want + ", and YAML reads " + w + " unquoted as " + describeValue(doc) + ": quote it (" + strconv.Quote(w) + ")"
	case isString && t.Kind() == reflect.Bool && (s == "true" || s == "false"),
		isString && isNumber(json.Number(s), t.Kind()):
		detail = "must be " + want + ", written without quotes (" + s + ")"
	case isNum && (t == intOrStringType || isNumber(json.Number("0"), t.Kind())):
		// A number out of range, or a fraction where an integer is expected.
		kind := t.Kind()
		if t == intOrStringType {
			kind = reflect.Int32
		}
		detail = "must be " + want + ", " + numberProblem(doc.(json.Number), kind)
	}
	// The value goes in the detail: field.Error would print a string quoted, and the point may be
	// that the file does not quote it.
	return field.ErrorList{field.Invalid(p, field.OmitValueType{}, w+": "+detail)}
}

// numberProblem says why n, a number, does not fit a field of kind k: a fraction where a whole
// number is wanted, or a number outside the kind's range (named). The configuration's integers
// are int (int64 here) and int32 (an IntOrString's number).
func numberProblem(n json.Number, k reflect.Kind) string {
	f, ok := new(big.Float).SetString(string(n))
	switch {
	case !ok || k == reflect.Float32 || k == reflect.Float64:
		return "out of range"
	case !f.IsInt():
		return "not a fraction"
	case k == reflect.Int32:
		return fmt.Sprintf("from %d to %d", math.MinInt32, math.MaxInt32)
	default:
		return fmt.Sprintf("from %d to %d", math.MinInt64, math.MaxInt64)
	}
}

func isScalar(doc any) bool {
	switch doc.(type) {
	case bool, json.Number:
		return true
	}
	return false
}

// isNumber tells whether the decoder stores doc in a number of kind k.
func isNumber(doc any, k reflect.Kind) bool {
	n, ok := doc.(json.Number)
	if !ok {
		return false
	}
	var err error
	switch k {
	case reflect.Int, reflect.Int64:
		_, err = strconv.ParseInt(string(n), 10, 64)
	case reflect.Int8:
		_, err = strconv.ParseInt(string(n), 10, 8)
	case reflect.Int16:
		_, err = strconv.ParseInt(string(n), 10, 16)
	case reflect.Int32:
		_, err = strconv.ParseInt(string(n), 10, 32)
	case reflect.Uint, reflect.Uint64:
		_, err = strconv.ParseUint(string(n), 10, 64)
	case reflect.Uint8:
		_, err = strconv.ParseUint(string(n), 10, 8)
	case reflect.Uint16:
		_, err = strconv.ParseUint(string(n), 10, 16)
	case reflect.Uint32:
		_, err = strconv.ParseUint(string(n), 10, 32)
	case reflect.Float32:
		_, err = strconv.ParseFloat(string(n), 32)
	case reflect.Float64:
		_, err = strconv.ParseFloat(string(n), 64)
	default:
		return false
	}
	return err == nil
}

func describeType(t reflect.Type) string {
	if t == intOrStringType {
		return "an integer or a percentage such as 25%"
	}
	switch t.Kind() {
	case reflect.Struct:
		return "a map of fields (name: value)"
	case reflect.Map:
		return "a map (key: value)"
	case reflect.Slice:
		return "a list"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Float32, reflect.Float64:
		return "a number"
	default:
		return "an integer"
	}
}

func describeValue(doc any) string {
	switch doc.(type) {
	case map[string]any:
		return "a map"
	case []any:
		return "a list"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	}
	return "null"
}

// maxWritten bounds a value quoted in an error message.
const maxWritten = 60

// written is doc as the file writes it: its YAML node in flow style, or its JSON form when the
// node could not be found (the conversion to JSON expands merge keys, for one).
func written(doc any, src *yamlv3.Node) string {
	var s string
	if src != nil {
		var b strings.Builder
		writeNode(&b, src, 0)
		s = b.String()
	} else {
		j, _ := json.Marshal(doc)
		s = string(j)
	}
	if r := []rune(s); len(r) > maxWritten {
		s = string(r[:maxWritten]) + "..."
	}
	return s
}

func writeNode(b *strings.Builder, n *yamlv3.Node, depth int) {
	n = resolve(n)
	if n == nil || b.Len() > maxWritten || depth > 8 {
		b.WriteString("...")
		return
	}
	switch n.Kind {
	case yamlv3.ScalarNode:
		switch {
		case n.Style&yamlv3.SingleQuotedStyle != 0:
			b.WriteString("'" + strings.ReplaceAll(n.Value, "'", "''") + "'")
		case n.Style&(yamlv3.DoubleQuotedStyle|yamlv3.LiteralStyle|yamlv3.FoldedStyle) != 0:
			b.WriteString(strconv.Quote(n.Value))
		default:
			b.WriteString(n.Value)
		}
	case yamlv3.SequenceNode:
		b.WriteString("[")
		for i, c := range n.Content {
			if i > 0 {
				b.WriteString(", ")
			}
			writeNode(b, c, depth+1)
		}
		b.WriteString("]")
	case yamlv3.MappingNode:
		b.WriteString("{")
		for i := 0; i+1 < len(n.Content); i += 2 {
			if i > 0 {
				b.WriteString(", ")
			}
			writeNode(b, n.Content[i], depth+1)
			b.WriteString(": ")
			writeNode(b, n.Content[i+1], depth+1)
		}
		b.WriteString("}")
	}
}

// yaml11Booleans are the words YAML 1.1, which the decoder follows, reads unquoted as a
// boolean, but true and false themselves.
var yaml11Booleans = map[string]string{
	"y": "true", "Y": "true", "yes": "true", "Yes": "true", "YES": "true", "on": "true", "On": "true", "ON": "true",
	"True": "true", "TRUE": "true",
	"n": "false", "N": "false", "no": "false", "No": "false", "NO": "false", "off": "false", "Off": "false", "OFF": "false",
	"False": "false", "FALSE": "false",
}

// renamedKeys reports the keys of mapping n (the map at p) that the decoder reads as another key
// than the file writes: an unquoted on, yes or n is the boolean true or false, whose key is
// then "true" or "false" (`pool.nodeSelector: {on: x}` would select the label true=x).
func renamedKeys(n *yamlv3.Node, p *field.Path) field.ErrorList {
	n = resolve(n)
	if n == nil || n.Kind != yamlv3.MappingNode {
		return nil
	}
	var errs field.ErrorList
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if k.Kind != yamlv3.ScalarNode || k.Style&(yamlv3.SingleQuotedStyle|yamlv3.DoubleQuotedStyle|yamlv3.TaggedStyle) != 0 {
			continue // quoted, or tagged (!!str on) as the file wants it read
		}
		if as, ok := yaml11Booleans[k.Value]; ok {
			errs = append(errs, field.Invalid(p, field.OmitValueType{}, fmt.Sprintf(
				"key %s: YAML reads it unquoted as the boolean %s, so the key would be %q: quote it ('%s')", k.Value, as, as, k.Value)))
		}
	}
	return errs
}

// resolve follows an alias to its anchored node.
func resolve(n *yamlv3.Node) *yamlv3.Node {
	for i := 0; n != nil && n.Kind == yamlv3.AliasNode && i < 8; i++ {
		n = n.Alias
	}
	if n != nil && n.Kind == yamlv3.AliasNode {
		return nil
	}
	return n
}

// mapValue returns the node of key in mapping n, looking in merged mappings (<<) after n's own keys.
func mapValue(n *yamlv3.Node, key string, depth int) *yamlv3.Node {
	n = resolve(n)
	if n == nil || n.Kind != yamlv3.MappingNode || depth > 8 {
		return nil
	}
	var merged []*yamlv3.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch {
		case k.Kind == yamlv3.ScalarNode && k.ShortTag() == "!!merge":
			if v = resolve(v); v != nil && v.Kind == yamlv3.SequenceNode {
				merged = append(merged, v.Content...)
			} else {
				merged = append(merged, v)
			}
		case k.Kind == yamlv3.ScalarNode && k.Value == key:
			return v
		}
	}
	for _, m := range merged {
		if v := mapValue(m, key, depth+1); v != nil {
			return v
		}
	}
	return nil
}

// chartOnlyValues are the top-level keys of the chart's values (charts/image-prewarmer/values.yaml)
// that the configuration does not have: a file with one of them is most likely the chart's values.
var chartOnlyValues = []string{"fullnameOverride", "images", "nameOverride", "orchestrator", "prewarm", "schedule", "securityContext", "serviceAccount"}

// chartValuesHint is the hint line added to the errors about a file that looks like the chart's
// values.
const chartValuesHint = "this looks like the chart's values: the orchestrator reads the config.yaml that the chart renders " +
	"from them into its ConfigMap: " + SaveCommand

func looksLikeChartValues(doc any) bool {
	m, _ := doc.(map[string]any)
	for _, k := range chartOnlyValues {
		if _, ok := m[k]; ok {
			return true
		}
	}
	return false
}
