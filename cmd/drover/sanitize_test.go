//go:build e2e

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStatusPrintsNoEscapes: what another party wrote (the status file of
// a node here; Redis in a cluster) reaches the terminal without its
// escape sequences.
func TestStatusPrintsNoEscapes(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	os.MkdirAll(state, 0o755)
	os.WriteFile(filepath.Join(state, "status.json"), []byte(`{"node":"n1","step":"idle","error":"boom\u001b]0;owned\u0007\u001b[2J\u009b1A hidden"}`), 0o644)
	os.WriteFile(filepath.Join(dir, "node.yaml"), []byte("name: n1\nstateDir: state\nrepo: {url: ./repo}\n"), 0o644)
	for _, format := range []string{"text", "json"} {
		out := runCLI(t, "status", "--config", filepath.Join(dir, "node.yaml"), "-o", format)
		if strings.ContainsAny(out, "\x1b\x07\u009b") {
			t.Errorf("drover status -o %s printed control characters: %q", format, out)
		}
		if format == "text" && !strings.Contains(out, "boom]0;owned[2J1A hidden") {
			t.Errorf("drover status lost the text around the escapes: %q", out)
		}
	}
}
