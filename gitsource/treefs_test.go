package gitsource

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/drover-dev/drover/internal/command"
)

// treeUpstream commits a tree with every kind of entry drover meets.
func treeUpstream(t *testing.T) (*upstream, string, []byte) {
	u := newUpstream(t)
	u.write("README.md", "hello\n", 0o644)
	u.write("bin/run.sh", "#!/bin/sh\necho run\n", 0o755)
	u.write("site/index.html", "<h1>blog</h1>\n", 0o644)
	u.symlink("site/latest", "index.html")
	u.write("site/run.sh", "#!/bin/sh\n", 0o755)
	u.write("site/assets/app.js", "console.log(1)\n", 0o644)
	u.symlink("site/alias", "assets")
	u.write("site/nested/deeper/x.txt", "deep\n", 0o644)
	u.symlink("esc/up", "../README.md") // inside the commit, outside esc/
	u.symlink("abs", "/etc/passwd")
	u.symlink("loop1", "loop2")
	u.symlink("loop2", "loop1")
	u.symlink("dangling", "nothere")
	big := make([]byte, 3<<20) // above largeObject: streamed from the pack
	rand.Read(big)
	u.write("big.bin", string(big), 0o644)
	return u, u.commit("tree"), big
}

func fetchedTree(t *testing.T, u *upstream, rev, dir string) (*Repo, *TreeFS) {
	t.Helper()
	r := openRepo(t, Config{URL: u.fileURL()}, nil)
	if err := r.Fetch(ctxT(t), rev); err != nil {
		t.Fatal(err)
	}
	tree, err := r.Tree(ctxT(t), rev, dir)
	if err != nil {
		t.Fatal(err)
	}
	return r, tree
}

// TestTreeCopiesLikeGitArchive copies the TreeFS to disk with os.CopyFS
// (which uses ReadDir, Open, Stat and ReadLink) and compares the result,
// entry by entry, with what `git archive` of the same commit extracts to.
func TestTreeCopiesLikeGitArchive(t *testing.T) {
	t.Parallel()
	u, rev, _ := treeUpstream(t)
	_, tree := fetchedTree(t, u, rev, "")

	got := filepath.Join(t.TempDir(), "copy")
	if err := os.CopyFS(got, tree); err != nil {
		t.Fatal(err)
	}
	want := t.TempDir()
	_, err := command.Run(context.Background(), command.Cmd{
		Argv: []string{"sh", "-c", `git -C "$1" -c tar.umask=0022 archive "$2" | tar -x -C "$3"`, "sh", u.bare, rev, want},
		Env:  gitEnv,
	})
	if err != nil {
		t.Fatal(err)
	}
	g, w := describeDir(t, got), describeDir(t, want)
	for name, d := range w {
		if g[name] != d {
			t.Errorf("%s: copied %q, git archive %q", name, g[name], d)
		}
	}
	for name := range g {
		if _, ok := w[name]; !ok {
			t.Errorf("%s: copied but not in git archive", name)
		}
	}
	if len(w) < 15 {
		t.Fatalf("git archive extracted only %d entries", len(w))
	}
}

// describeDir maps each path below root to its type, permissions and
// content (or link target).
func describeDir(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		desc := fi.Mode().String()
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			desc += " -> " + target
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" %d bytes sha256 %x", len(b), sha256.Sum256(b))
		}
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestTreeFSPassesFSTest(t *testing.T) {
	t.Parallel()
	u, rev, _ := treeUpstream(t)
	_, tree := fetchedTree(t, u, rev, "site")
	if err := fstest.TestFS(tree, "index.html", "latest", "run.sh", "assets/app.js", "alias", "nested/deeper/x.txt"); err != nil {
		t.Fatal(err)
	}
}

func TestTreeFSModesAndSizes(t *testing.T) {
	t.Parallel()
	u, rev, big := treeUpstream(t)
	r, tree := fetchedTree(t, u, rev, "")
	c, err := r.Commit(ctxT(t), rev)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		mode fs.FileMode
		size int64
	}{
		{"README.md", 0o644, 6},
		{"bin/run.sh", 0o755, 19},
		{"bin", fs.ModeDir | 0o755, 0},
		{".", fs.ModeDir | 0o755, 0},
		{"site/latest", 0o644, 14}, // Stat follows the link
		{"big.bin", 0o644, int64(len(big))},
	} {
		fi, err := tree.Stat(tc.name)
		if err != nil {
			t.Errorf("Stat(%s): %v", tc.name, err)
			continue
		}
		if fi.Mode() != tc.mode || fi.Size() != tc.size {
			t.Errorf("Stat(%s) = %v %d bytes, want %v %d", tc.name, fi.Mode(), fi.Size(), tc.mode, tc.size)
		}
		if !fi.ModTime().Equal(c.When) {
			t.Errorf("Stat(%s).ModTime = %v, want the commit time %v", tc.name, fi.ModTime(), c.When)
		}
	}
	fi, err := tree.Lstat("site/latest")
	if err != nil || fi.Mode() != fs.ModeSymlink|0o777 || fi.Size() != int64(len("index.html")) {
		t.Errorf("Lstat(site/latest) = %v, %v", fi, err)
	}

	// A 3 MB blob reads the same whole and in small pieces.
	if got, err := tree.ReadFile("big.bin"); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("ReadFile(big.bin): %d bytes, %v", len(got), err)
	}
	f, err := tree.Open("big.bin")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := io.CopyBuffer(&buf, struct{ io.Reader }{f}, make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), big) {
		t.Fatal("big.bin read in pieces differs")
	}
	if _, err := f.Read(make([]byte, 1)); !errors.Is(err, fs.ErrClosed) {
		t.Errorf("Read after Close: %v", err)
	}
}

func TestTreeFSSymlinks(t *testing.T) {
	t.Parallel()
	u, rev, _ := treeUpstream(t)
	r, tree := fetchedTree(t, u, rev, "")
	read := func(fsys fs.FS, name string) (string, error) {
		b, err := fs.ReadFile(fsys, name)
		return string(b), err
	}
	for name, want := range map[string]string{
		"site/latest":       "<h1>blog</h1>\n",
		"site/alias/app.js": "console.log(1)\n", // through a link to a directory
		"esc/up":            "hello\n",          // climbs, but stays in the tree
	} {
		if got, err := read(tree, name); err != nil || got != want {
			t.Errorf("ReadFile(%s) = %q, %v; want %q", name, got, err, want)
		}
	}
	if ents, err := tree.ReadDir("site/alias"); err != nil || len(ents) != 1 || ents[0].Name() != "app.js" {
		t.Errorf("ReadDir(site/alias) = %v, %v", ents, err)
	}
	if target, err := tree.ReadLink("site/latest"); err != nil || target != "index.html" {
		t.Errorf("ReadLink(site/latest) = %q, %v", target, err)
	}
	for name, wantErr := range map[string]error{
		"abs":            ErrSymlinkEscapes,
		"dangling":       fs.ErrNotExist,
		"README.md/x":    errNotDir,
		"loop1":          errLinkLoop,
		"/etc/passwd":    fs.ErrInvalid,
		"site/../README": fs.ErrInvalid,
		"site/":          fs.ErrInvalid,
	} {
		_, err := tree.Open(name)
		var pe *fs.PathError
		if !errors.Is(err, wantErr) || !errors.As(err, &pe) || pe.Path != name {
			t.Errorf("Open(%s) = %v, want a *PathError for it wrapping %v", name, err, wantErr)
		}
	}
	if _, err := tree.ReadLink("README.md"); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("ReadLink of a regular file: %v", err)
	}
	if _, err := tree.Lstat("abs"); err != nil {
		t.Errorf("Lstat of a link leaving the tree: %v", err)
	}

	// Rooted at esc/, the same link leaves the TreeFS: Lstat and ReadLink
	// still describe it, so a consumer can copy it as a link.
	esc, err := r.Tree(ctxT(t), rev, "esc")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := esc.Open("up"); !errors.Is(err, ErrSymlinkEscapes) {
		t.Errorf("Open(up) in esc/: %v, want ErrSymlinkEscapes", err)
	}
	if target, err := esc.ReadLink("up"); err != nil || target != "../README.md" {
		t.Errorf("ReadLink(up) in esc/ = %q, %v", target, err)
	}

	// The subdir may itself be reached through a link.
	alias, err := r.Tree(ctxT(t), rev, "site/alias/")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := read(alias, "app.js"); err != nil || got != "console.log(1)\n" {
		t.Errorf("app.js under site/alias = %q, %v", got, err)
	}
	if _, err := r.Tree(ctxT(t), rev, "README.md"); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("Tree rooted at a file: %v", err)
	}
	if _, err := r.Tree(ctxT(t), rev, "nope"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Tree rooted at a missing dir: %v", err)
	}
}

func TestContentID(t *testing.T) {
	t.Parallel()
	u := newUpstream(t)
	u.write("a.txt", "same", 0o644)
	u.write("b.txt", "one", 0o644)
	u.symlink("l", "a.txt")
	r := openRepo(t, Config{URL: u.fileURL()}, nil)
	ctx := ctxT(t)
	c1 := u.commit("one")
	if err := r.Fetch(ctx, c1); err != nil {
		t.Fatal(err)
	}
	u.write("b.txt", "two", 0o644)
	c2 := u.commit("two")
	if err := r.Fetch(ctx, c2); err != nil {
		t.Fatal(err)
	}
	ids := map[string]map[string]string{}
	for _, rev := range []string{c1, c2} {
		tree, err := r.Tree(ctx, rev, "")
		if err != nil {
			t.Fatal(err)
		}
		ids[rev] = map[string]string{}
		for _, name := range []string{"a.txt", "b.txt"} {
			id, err := tree.ContentID(name)
			if err != nil {
				t.Fatal(err)
			}
			if want := git(t, u.bare, "rev-parse", rev+":"+name); id != want {
				t.Errorf("ContentID(%s) at %s = %s, git says %s", name, rev[:7], id, want)
			}
			ids[rev][name] = id
		}
		for _, name := range []string{"l", ".", "missing"} {
			if _, err := tree.ContentID(name); err == nil {
				t.Errorf("ContentID(%s) of a non-regular file succeeded", name)
			}
		}
	}
	if ids[c1]["a.txt"] != ids[c2]["a.txt"] || ids[c1]["b.txt"] == ids[c2]["b.txt"] {
		t.Errorf("ContentIDs across revisions: %v", ids)
	}
}

func TestSubmoduleIsRefusedNamingItsPath(t *testing.T) {
	t.Parallel()
	u := newUpstream(t)
	u.write("app/index.html", "x", 0o644)
	u.write("app/vendor/README", "x", 0o644)
	dep := u.commit("dep")
	git(t, u.work, "update-index", "--add", "--cacheinfo", "160000,"+dep+",app/vendor/lib")
	git(t, u.work, "commit", "-q", "-m", "with a gitlink")
	git(t, u.work, "push", "-q", "origin", "HEAD:main")
	rev := git(t, u.work, "rev-parse", "HEAD")
	r, tree := fetchedTree(t, u, rev, "")

	err := fs.WalkDir(tree, ".", func(_ string, _ fs.DirEntry, err error) error { return err })
	if !errors.Is(err, ErrSubmodule) || !strings.Contains(err.Error(), "app/vendor/lib") {
		t.Fatalf("WalkDir over a gitlink: %v", err)
	}
	if _, err := tree.Stat("app/vendor/lib/x"); !errors.Is(err, ErrSubmodule) {
		t.Fatalf("Stat through a gitlink: %v", err)
	}
	// Rooted below, the message still names the path in the commit.
	app, err := r.Tree(ctxT(t), rev, "app")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := app.ReadDir("vendor"); !errors.Is(err, ErrSubmodule) || !strings.Contains(err.Error(), "app/vendor/lib") {
		t.Fatalf("ReadDir(vendor) in app/: %v", err)
	}
	if got := mustRead(t, app, "index.html"); got != "x" {
		t.Fatalf("index.html next to the gitlink = %q", got)
	}
}

func TestTreeFSAfterCloseFails(t *testing.T) {
	t.Parallel()
	u, rev, _ := treeUpstream(t)
	r, tree := fetchedTree(t, u, rev, "")
	f, err := tree.Open("README.md")
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	done := make(chan error, 1)
	go func() { _, err := tree.ReadFile("README.md"); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("ReadFile after Close succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadFile after Close hangs")
	}
	if _, err := f.Read(make([]byte, 10)); err == nil {
		t.Fatal("Read after the Repo closed succeeded")
	}
}
