package spec

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
)

// endless is /dev/zero as a reader, counting what was read from it.
type endless struct{ n int64 }

func (e *endless) Read(p []byte) (int, error) {
	clear(p)
	e.n += int64(len(p))
	return len(p), nil
}

// TestOversizedFilesAreRefusedUnread: a spec or node.yaml past 1 MiB is
// refused naming the file, Parse refuses it before the YAML parser sees it,
// and a reader that never ends (a spec linked to /dev/zero) is read no
// further than the limit.
func TestOversizedFilesAreRefusedUnread(t *testing.T) {
	big := base + "# " + strings.Repeat("x", MaxFileSize) + "\n"
	if _, err := Parse("drover.yaml", []byte(big)); err == nil || !strings.Contains(err.Error(), "drover.yaml: larger than 1048576 bytes") {
		t.Fatalf("an oversized spec was not refused by size: %v", err)
	}
	if _, err := Parse("drover.yaml", []byte(base+"# "+strings.Repeat("x", 1000)+"\n")); err != nil {
		t.Fatalf("a spec under the limit was refused: %v", err)
	}

	zero := &endless{}
	if _, err := ReadLimited("drover.yaml", zero); err == nil || !strings.Contains(err.Error(), "drover.yaml: larger than") {
		t.Fatalf("an endless file was not refused: %v", err)
	}
	if zero.n > 2*MaxFileSize { // io.ReadAll reads in growing chunks: a bound, not an exact count
		t.Fatalf("read %d bytes of an endless file, want about %d", zero.n, MaxFileSize)
	}

	node := filepath.Join(t.TempDir(), "node.yaml")
	if err := os.WriteFile(node, []byte("name: web1\n#"+strings.Repeat("x", MaxFileSize)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadNode(node); err == nil || !strings.Contains(err.Error(), node+": larger than") {
		t.Fatalf("an oversized node.yaml was not refused naming it: %v", err)
	}
}

// TestSecondDocumentAndTags: what the decoder would silently drop (a second
// document, a custom tag's meaning) is an error at its line.
func TestSecondDocumentAndTags(t *testing.T) {
	for _, c := range []struct {
		name, yaml, want string
	}{
		{"second document", base + "---\nversion: 1\nsites: []\n", "drover.yaml:14:1: a second YAML document"},
		{"second empty-ish document", base + "---\nfoo\n", "drover.yaml:14:1: a second YAML document"},
		{"include", strings.Replace(base, "source: sites/blog", "source: !include sites.yaml", 1), "drover.yaml:5:13: sites[0].source: YAML tag !include is not supported"},
		{"secret", base + "    env: {TOKEN: !secret api-token}\n", "drover.yaml:13:18: workers[0].env[\"TOKEN\"]: YAML tag !secret is not supported"},
		{"tagged mapping", strings.Replace(base, "health: {path: /healthz}", "health: !vault {path: /healthz}", 1), "drover.yaml:12:13: workers[0].health: YAML tag !vault is not supported"},
		{"tagged key", strings.Replace(base, "    port: 3000", "    !k port: 3000", 1), "drover.yaml:10:5: workers[0].port: YAML tag !k is not supported"},
		{"tagged map key", base + "    env: {!k TOKEN: x}\n", "drover.yaml:13:11: workers[0].env: YAML tag !k is not supported"},
		{"tagged root", "!doc\n" + base, "drover.yaml:1:1: YAML tag !doc is not supported"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("drover.yaml", []byte(c.yaml))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error with %q", err, c.want)
			}
		})
	}
	// YAML's own tags are resolved by the parser and stay accepted.
	if _, err := Parse("drover.yaml", []byte(strings.Replace(base, "port: 3000", "port: !!int 3000", 1))); err != nil {
		t.Fatalf("a !!int tag was refused: %v", err)
	}
	if _, err := ParseNode("node.yaml", []byte("name: web1\n---\nname: web2\n"), "/"); err == nil || !strings.Contains(err.Error(), "node.yaml:3:1: a second YAML document") {
		t.Fatalf("node.yaml's second document was not refused: %v", err)
	}
}

// TestTreeErrorsArePositioned: a path error found in the tree points at the
// line and column of the field that named the path.
func TestTreeErrorsArePositioned(t *testing.T) {
	s, err := Parse("drover.yaml", []byte(base+"migrations: {dir: db}\n"))
	if err != nil {
		t.Fatal(err)
	}
	fsys := fstest.MapFS{
		"sites/blog":            {Data: []byte("../../etc"), Mode: 0o777 | os.ModeSymlink},
		"workers/api/server.js": {Data: []byte("x")},
		"workers/api/up":        {Data: []byte("../../.."), Mode: 0o777 | os.ModeSymlink},
		"db":                    {Data: []byte("not a dir")},
	}
	err = CheckTree("drover.yaml", s, fsys)
	for _, want := range []string{
		"drover.yaml:5:13: sites[0].source: sites/blog is a symlink",
		"drover.yaml:8:13: workers[0].source: workers/api/up: symlink to \"../../..\" leaves the repo",
		"drover.yaml:13:19: migrations.dir: db is not a directory",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want a line %q", err, want)
		}
	}
	missing, err := Parse("drover.yaml", []byte(strings.Replace(base, "source: workers/api", "source: workers/gone", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckTree("drover.yaml", missing, fstest.MapFS{"sites/blog/i.html": {}, "workers/api/s.js": {}}); err == nil || !strings.Contains(err.Error(), "drover.yaml:8:13: workers[0].source: workers/gone does not exist") {
		t.Fatalf("missing source not positioned: %v", err)
	}
}

// TestWholeRepoSource: the config directory itself is never a source.
func TestWholeRepoSource(t *testing.T) {
	for _, src := range []string{".", "./"} {
		_, err := Parse("drover.yaml", []byte(strings.Replace(base, "source: sites/blog", "source: '"+src+"'", 1)))
		if err == nil || !strings.Contains(err.Error(), "drover.yaml:5:13: sites[0].source: \""+src+"\" is the whole config directory") {
			t.Fatalf("source %q: got %v", src, err)
		}
	}
}

// TestReadInRoot: a drover.yaml that links outside the directory is
// refused, one that links inside is read.
func TestReadInRoot(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "secret.yaml")
	if err := os.WriteFile(outside, []byte(base), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(dir, FileName)); err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if _, err := ReadInRoot(root, FileName, "cfg/drover.yaml"); err == nil || !strings.Contains(err.Error(), "cfg/drover.yaml: is a symlink to a file outside") {
		t.Fatalf("a drover.yaml linking outside was read: %v", err)
	}
	inside := t.TempDir()
	os.WriteFile(filepath.Join(inside, "real.yaml"), []byte(base), 0o600)
	os.Symlink("real.yaml", filepath.Join(inside, FileName))
	r2, err := os.OpenRoot(inside)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if data, err := ReadInRoot(r2, FileName, FileName); err != nil || string(data) != base {
		t.Fatalf("a link inside the directory: %q, %v", data, err)
	}
	var _ io.Reader = (*endless)(nil)
}
