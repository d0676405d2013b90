//go:build e2e

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPrintableStripsControls(t *testing.T) {
	for in, want := range map[string]string{
		"plain\tline\n":           "plain\tline\n",
		"\x1b]0;pwned\x07title":   "]0;pwnedtitle",
		"red \x1b[31mtext\x1b[0m": "red [31mtext[0m",
		"csi \u009b31m c1":        "csi 31m c1",
		"cr\roverwrite":           "croverwrite",
		"del\x7f nul\x00 bs\b":    "del nul bs",
		"bad \xff utf8":           "bad \uFFFD utf8",
		"ok é ü 日本":               "ok é ü 日本",
		"line\u2028sep":           "linesep",
		strings.Repeat("x", maxPrintedLine+5) + "\nnext": strings.Repeat("x", maxPrintedLine) + "…\nnext",
	} {
		var b bytes.Buffer
		p := &printable{w: &b}
		// Byte by byte: runes and sequences split across writes.
		for i := range len(in) {
			if _, err := p.Write([]byte{in[i]}); err != nil {
				t.Fatal(err)
			}
		}
		if b.String() != want {
			t.Errorf("%q printed as %q, want %q", in, b.String(), want)
		}
	}
}

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
