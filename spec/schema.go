package spec

import (
	"encoding/json"
	"reflect"
	"strings"
)

// JSONSchema returns a JSON Schema (draft 2020-12) of drover.yaml, derived
// from the Go types so that it cannot drift from the parser, for editors
// (e.g. `# yaml-language-server: $schema=…`). It describes the shape and
// types; the validator remains the authority on every rule.
func JSONSchema() ([]byte, error) {
	root := schemaOf(reflect.TypeFor[Spec]())
	root["$schema"] = "https://json-schema.org/draft/2020-12/schema"
	root["title"] = "drover.yaml"
	root["required"] = []string{"version"}
	return json.MarshalIndent(root, "", "  ")
}

func schemaOf(t reflect.Type) map[string]any {
	if t == durationType {
		return map[string]any{"type": "string", "pattern": `^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`}
	}
	if t == percentType {
		return map[string]any{"type": "string", "pattern": `^-?[0-9]+(\.[0-9]+)?%$`}
	}
	switch t.Kind() {
	case reflect.Pointer:
		return schemaOf(t.Elem())
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Int:
		return map[string]any{"type": "integer"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Slice:
		return map[string]any{"type": "array", "items": schemaOf(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": schemaOf(t.Elem())}
	case reflect.Struct:
		props := map[string]any{}
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			props[name] = schemaOf(t.Field(i).Type)
		}
		return map[string]any{"type": "object", "properties": props, "additionalProperties": false}
	}
	panic("spec: no schema for " + t.String())
}
