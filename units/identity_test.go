package units

import (
	"os"
	"path/filepath"
	"testing"
)

// TestBundleID: a bundle whose files are hard links of another's has the
// same identity; adding, removing or replacing a file, changing a mode or a
// symlink's target gives another one, and so does a copy with the same
// bytes (a new file: the conservative side).
func TestBundleID(t *testing.T) {
	root := t.TempDir()
	mk := func(name string) string {
		dir := filepath.Join(root, name)
		for p, content := range map[string]string{"server.js": "s", "lib/a.js": "a", "VERSION": "1"} {
			p = filepath.Join(dir, p)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Symlink("lib/a.js", filepath.Join(dir, "main.js")); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	orig := mk("orig")
	id := bundleID(orig)
	linked := func(name string) string {
		t.Helper()
		dir := filepath.Join(root, name)
		for _, d := range []string{"", "lib"} {
			if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for _, f := range []string{"server.js", "lib/a.js", "VERSION"} {
			if err := os.Link(filepath.Join(orig, f), filepath.Join(dir, f)); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Symlink("lib/a.js", filepath.Join(dir, "main.js")); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	if got := bundleID(linked("same")); got != id {
		t.Errorf("a bundle of hard links has another identity")
	}
	changes := map[string]func(dir string) error{
		"a file replaced": func(dir string) error {
			p := filepath.Join(dir, "VERSION")
			os.Remove(p)
			return os.WriteFile(p, []byte("1"), 0o644) // same bytes, new file
		},
		"a file added":   func(dir string) error { return os.WriteFile(filepath.Join(dir, "lib/b.js"), nil, 0o644) },
		"a file removed": func(dir string) error { return os.Remove(filepath.Join(dir, "lib/a.js")) },
		"a dir added":    func(dir string) error { return os.Mkdir(filepath.Join(dir, "empty"), 0o755) },
		"a symlink retargeted": func(dir string) error {
			p := filepath.Join(dir, "main.js")
			os.Remove(p)
			return os.Symlink("server.js", p)
		},
	}
	for what, change := range changes {
		dir := linked(what)
		if err := change(dir); err != nil {
			t.Fatal(err)
		}
		if bundleID(dir) == id {
			t.Errorf("%s: same identity", what)
		}
	}
	// A mode change is seen by every link of the file: check it on its own.
	if err := os.Chmod(filepath.Join(orig, "server.js"), 0o755); err != nil {
		t.Fatal(err)
	}
	if bundleID(orig) == id {
		t.Error("a mode change: same identity")
	}
	if got := bundleID(filepath.Join(root, "absent")); got != "missing" || bundleID(filepath.Join(root, "absent2")) != got {
		t.Errorf("a missing bundle: %q", got)
	}
}
