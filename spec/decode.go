package spec

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Pos is a position in a YAML file, 1-based.
type Pos struct {
	Line, Col int
}

// FieldError is one problem with one field of one file: drover's one
// error type for a bad setting. Packages that check a Config built in code
// (lbdrain, cluster) use it too, with no File and the field named by its
// node.yaml key.
type FieldError struct {
	File  string // "" when the setting came from code, not a file
	Pos   Pos    // zero when the field is absent from the file
	Field string // path such as workers[1].port; empty for the whole file
	Msg   string
}

func (e *FieldError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Pos.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", e.Pos.Line, e.Pos.Col)
	}
	if e.File != "" || e.Pos.Line > 0 {
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in one or more files, sorted by file and
// position. Its Error method prints one problem per line.
type Errors []*FieldError

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

func (es Errors) sorted() Errors {
	sort.SliceStable(es, func(i, j int) bool {
		a, b := es[i], es[j]
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Pos.Line != b.Pos.Line {
			return a.Pos.Line < b.Pos.Line
		}
		return a.Pos.Col < b.Pos.Col
	})
	return es
}

// AsErrors returns the list of field errors inside err, if any.
func AsErrors(err error) (Errors, bool) {
	var es Errors
	if errors.As(err, &es) {
		return es, true
	}
	return nil, false
}

// Duration is a time.Duration written as "30s", "1m30s" in YAML.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText writes the duration as Go's time.Duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

var (
	durationType = reflect.TypeFor[Duration]()
	percentType  = reflect.TypeFor[Percent]()
)

// decoder walks a yaml.Node tree into a Go value, collecting every error with
// its position and field path instead of stopping at the first, and recording
// where each field was written so that later validation can point at it.
//
// It is deliberately small: structs (by `yaml` tag), pointers to structs,
// slices, map[string]string, strings, ints, bools and Duration are all the
// spec needs. Unknown keys and duplicate keys are errors.
type decoder struct {
	file string
	pos  map[string]Pos
	errs Errors
}

func (d *decoder) fail(n *yaml.Node, path, format string, args ...any) {
	e := &FieldError{File: d.file, Field: path, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		e.Pos = Pos{n.Line, n.Column}
	}
	d.errs = append(d.errs, e)
}

func joinPath(parent, field string) string {
	if parent == "" {
		return field
	}
	return parent + "." + field
}

func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	if !d.checkTag(n, path) {
		return
	}
	if n.Kind == yaml.AliasNode {
		d.fail(n, path, "YAML aliases are not allowed")
		return
	}
	d.pos[path] = Pos{n.Line, n.Column}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // leave the zero value (or default)
	}
	t := v.Type()
	switch {
	case t == durationType:
		if !d.scalar(n, path, "a duration such as 30s") {
			return
		}
		dur, err := time.ParseDuration(n.Value)
		if err != nil {
			d.fail(n, path, "%q is not a duration (write e.g. 30s, 2m, 1m30s)", n.Value)
			return
		}
		if dur < 0 {
			d.fail(n, path, "must not be negative")
			return
		}
		v.SetInt(int64(dur))
	case t == percentType:
		if !d.scalar(n, path, "a percentage such as 1%") {
			return
		}
		p, err := parsePercent(n.Value)
		if err != nil {
			d.fail(n, path, "%v", err)
			return
		}
		v.SetFloat(float64(p))
	case t.Kind() == reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(t.Elem()))
		}
		d.decode(n, v.Elem(), path)
	case t.Kind() == reflect.Struct:
		d.decodeStruct(n, v, path)
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.fail(n, path, "must be a list, not %s", kindName(n))
			return
		}
		s := reflect.MakeSlice(t, len(n.Content), len(n.Content))
		for i, c := range n.Content {
			d.decode(c, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	case t.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			d.fail(n, path, "must be a mapping, not %s", kindName(n))
			return
		}
		m := reflect.MakeMap(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				d.fail(k, path, "keys must be strings")
				continue
			}
			if !d.checkTag(k, path) {
				continue
			}
			kp := fmt.Sprintf("%s[%s]", path, strconv.Quote(k.Value))
			if m.MapIndex(reflect.ValueOf(k.Value)).IsValid() {
				d.fail(k, kp, "duplicate key")
				continue
			}
			d.pos[kp+".key"] = Pos{k.Line, k.Column}
			ev := reflect.New(t.Elem()).Elem()
			d.decode(val, ev, kp)
			m.SetMapIndex(reflect.ValueOf(k.Value), ev)
		}
		v.Set(m)
	case t.Kind() == reflect.String:
		if !d.scalar(n, path, "a string") {
			return
		}
		v.SetString(n.Value)
	case t.Kind() == reflect.Int:
		if !d.scalar(n, path, "an integer") {
			return
		}
		i, err := strconv.Atoi(n.Value)
		if err != nil || n.Tag != "!!int" {
			d.fail(n, path, "%q is not an integer", n.Value)
			return
		}
		v.SetInt(int64(i))
	case t.Kind() == reflect.Bool:
		if !d.scalar(n, path, "true or false") {
			return
		}
		if n.Tag != "!!bool" {
			d.fail(n, path, "%q is not true or false", n.Value)
			return
		}
		v.SetBool(n.Value == "true" || n.Value == "True" || n.Value == "TRUE")
	default:
		panic(fmt.Sprintf("spec: cannot decode into %s", t))
	}
}

func (d *decoder) scalar(n *yaml.Node, path, want string) bool {
	if n.Kind != yaml.ScalarNode {
		d.fail(n, path, "must be %s, not %s", want, kindName(n))
		return false
	}
	return true
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "must be a mapping, not %s", kindName(n))
		return
	}
	t := v.Type()
	fields := map[string]int{}
	var names []string
	for i := range t.NumField() {
		tag := t.Field(i).Tag.Get("yaml")
		name, _, _ := strings.Cut(tag, ",")
		if name == "" || name == "-" {
			continue
		}
		fields[name] = i
		names = append(names, name)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		fp := joinPath(path, k.Value)
		idx, ok := fields[k.Value]
		switch {
		case k.Kind != yaml.ScalarNode:
			d.fail(k, path, "keys must be strings")
			continue
		case !d.checkTag(k, fp):
			continue
		case !ok:
			d.fail(k, fp, "unknown field%s", suggest(k.Value, names))
			continue
		case seen[k.Value]:
			d.fail(k, fp, "duplicate field")
			continue
		}
		seen[k.Value] = true
		d.decode(val, v.Field(idx), fp)
	}
}

// suggest names the known field closest to an unknown one, for typos such as
// "serverName" or "instance".
func suggest(name string, known []string) string {
	best, bestDist := "", 3
	for _, k := range known {
		if dist := editDistance(strings.ToLower(name), strings.ToLower(k)); dist < bestDist {
			best, bestDist = k, dist
		}
	}
	if best == "" {
		return " (known fields: " + strings.Join(known, ", ") + ")"
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}

// mergeErrors joins decoding and validation errors. A field that could not be
// decoded holds its zero value, so what validation says of it (or of what is
// under it) is noise and is dropped.
func mergeErrors(decodeErrs, validateErrs Errors) Errors {
	all := append(Errors{}, decodeErrs...)
	for _, ve := range validateErrs {
		shadowed := false
		for _, de := range decodeErrs {
			if de.Field == "" || ve.Field == de.Field || strings.HasPrefix(ve.Field, de.Field+".") || strings.HasPrefix(ve.Field, de.Field+"[") {
				shadowed = true
				break
			}
		}
		if !shadowed {
			all = append(all, ve)
		}
	}
	if len(all) == 0 {
		return nil
	}
	return all.sorted()
}

// decodeFile parses data as one YAML document into out (a pointer to a
// struct holding its defaults) and returns the positions of every field seen;
// positions are nil when the file is not YAML at all.
func decodeFile(file string, data []byte, out any) (map[string]Pos, Errors) {
	d := &decoder{file: file, pos: map[string]Pos{}}
	if len(data) > MaxFileSize {
		return nil, tooLarge(file)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, Errors{yamlSyntaxError(file, err)}
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		d.fail(nil, "", "the file is empty")
		return nil, d.errs
	}
	// A second document would be dropped unread: refuse it rather than
	// apply half of what the file says.
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == nil:
		p := &next
		if len(next.Content) > 0 {
			p = next.Content[0]
		}
		d.fail(p, "", "a second YAML document (after ---) is not allowed: drover reads one document per file")
		return nil, d.errs
	case !errors.Is(err, io.EOF):
		return nil, Errors{yamlSyntaxError(file, err)}
	}
	d.decode(doc.Content[0], reflect.ValueOf(out).Elem(), "")
	return d.pos, d.errs
}

// yamlSyntaxError turns yaml.v3's "yaml: line 3: did not find expected key"
// into a positioned error.
func yamlSyntaxError(file string, err error) *FieldError {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	e := &FieldError{File: file, Msg: "invalid YAML: " + msg}
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		num, tail, _ := strings.Cut(rest, ":")
		if line, err := strconv.Atoi(num); err == nil {
			e.Pos = Pos{Line: line, Col: 1}
			e.Msg = "invalid YAML:" + tail
		}
	}
	return e
}
