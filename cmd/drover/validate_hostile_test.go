package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const hostileSpec = `version: 1
sites:
  - name: blog
    serverNames: [blog.example.com]
    source: site
`

// TestValidateReadsOnlyInsideDir: `drover validate DIR` refuses a
// drover.yaml that is a symlink out of DIR (it would otherwise judge, and
// print errors quoting, a file elsewhere), and a secretEnv linking out is
// not read either; the same spec copied into DIR is valid.
func TestValidateReadsOnlyInsideDir(t *testing.T) {
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "drover.yaml"), []byte(hostileSpec), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "site"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "drover.yaml"), filepath.Join(dir, "drover.yaml")); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"validate", dir}, &stdout, &stderr)
	if code == 0 || !strings.Contains(stderr.String(), filepath.Join(dir, "drover.yaml")+": is a symlink to a file outside") {
		t.Fatalf("validate of a drover.yaml linking outside DIR: exit %d\n%s%s", code, stdout.String(), stderr.String())
	}

	os.Remove(filepath.Join(dir, "drover.yaml"))
	if err := os.WriteFile(filepath.Join(dir, "drover.yaml"), []byte(hostileSpec), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout.Reset()
	stderr.Reset()
	if code := run(context.Background(), []string{"validate", dir}, &stdout, &stderr); code != 0 {
		t.Fatalf("the same spec inside DIR: exit %d\n%s", code, stderr.String())
	}

	// A secretEnv that links out of DIR is not read.
	if err := os.WriteFile(filepath.Join(outside, "api.env.age"), []byte("age-encryption.org/v1\n-> X25519 x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Symlink(filepath.Join(outside, "api.env.age"), filepath.Join(dir, "api.env.age"))
	os.Mkdir(filepath.Join(dir, "api"), 0o755)
	withSecret := hostileSpec + "workers:\n  - name: api\n    source: api\n    exec: [node, s.js]\n    port: 3000\n    health: {path: /healthz}\n    secretEnv: api.env.age\n"
	os.WriteFile(filepath.Join(dir, "drover.yaml"), []byte(withSecret), 0o644)
	stdout.Reset()
	stderr.Reset()
	code = run(context.Background(), []string{"validate", dir}, &stdout, &stderr)
	if code == 0 || !strings.Contains(stderr.String(), "workers[0].secretEnv") || !strings.Contains(stderr.String(), "escapes") {
		t.Fatalf("a secretEnv linking outside DIR: exit %d\n%s%s", code, stdout.String(), stderr.String())
	}
}
