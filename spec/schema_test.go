package spec

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

// The committed schema must be what the types say; regenerate with
// go test ./spec -update.
func TestJSONSchemaIsCurrent(t *testing.T) {
	got, err := JSONSchema()
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	file := filepath.Join("..", "docs", "drover.schema.json")
	if *update {
		if err := os.WriteFile(file, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (run go test ./spec -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is stale: run go test ./spec -update", file)
	}
	for _, field := range []string{`"maxUnavailable"`, `"serverNames"`, `"additionalProperties": false`} {
		if !bytes.Contains(got, []byte(field)) {
			t.Errorf("schema lacks %s", field)
		}
	}
}
