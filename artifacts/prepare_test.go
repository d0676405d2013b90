package artifacts

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/testsvc"
)

const siteAndWorkerSpec = `version: 1
sites:
  - name: blog
    serverNames: [blog.example.com]
    source: sites/blog
workers:
  - name: api
    source: workers/api
    exec: [./run.sh]
    port: 3000
    health: {path: /healthz}
`

func TestPrepareMaterializesSources(t *testing.T) {
	t.Parallel()
	s := openStore(t, Options{})
	repo := t.TempDir()
	writeRepo(t, repo, map[string]string{
		"sites/blog/index.html":    "<h1>blog</h1>",
		"sites/blog/css/site.css":  "body{}",
		"sites/blog/latest.html":   "symlink:index.html",
		"sites/blog/css/again.css": "symlink:../css/site.css",
		"sites/blog/empty/":        "",
		"x:workers/api/run.sh":     "#!/bin/sh\necho hi\n",
		"workers/api/package.json": "{}",
		"unrelated/secret":         "not deployed",
	})
	// Stricter source modes still come out readable; exec bits survive.
	if err := os.Chmod(filepath.Join(repo, "sites/blog/css/site.css"), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := prepare(t, s, rev(1), repo, siteAndWorkerSpec)
	if err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{
		r.SiteDir("blog") + "/index.html":    "<h1>blog</h1>",
		r.SiteDir("blog") + "/latest.html":   "<h1>blog</h1>",
		r.SiteDir("blog") + "/css/again.css": "body{}",
		r.WorkerDir("api") + "/run.sh":       "#!/bin/sh\necho hi\n",
		r.SpecFile():                         siteAndWorkerSpec,
	} {
		if got := readFile(t, file); got != want {
			t.Errorf("%s = %q, want %q", file, got, want)
		}
	}
	for file, want := range map[string]fs.FileMode{
		r.SiteDir("blog") + "/index.html":   0o644,
		r.SiteDir("blog") + "/css/site.css": 0o644,
		r.SiteDir("blog") + "/empty":        fs.ModeDir | 0o755,
		r.WorkerDir("api") + "/run.sh":      0o755,
	} {
		fi, err := os.Lstat(file)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s has mode %v, want %v", file, fi.Mode(), want)
		}
	}
	if target, err := os.Readlink(r.SiteDir("blog") + "/latest.html"); err != nil || target != "index.html" {
		t.Errorf("latest.html -> %q (%v), want the relative link kept", target, err)
	}
	if _, err := os.Lstat(filepath.Join(r.Dir, "unrelated")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a directory no site or worker names was deployed")
	}
	// Through the live link, as nginx and systemd see it.
	if err := s.Switch(rev(1)); err != nil {
		t.Fatal(err)
	}
	assertLive(t, s, rev(1), "sites/blog/css/site.css", "body{}")
	if got := readFile(t, filepath.Join(s.LiveWorkerDir("api"), "run.sh")); got != "#!/bin/sh\necho hi\n" {
		t.Errorf("LiveWorkerDir: run.sh = %q", got)
	}
	if got := readFile(t, filepath.Join(s.LiveSiteDir("blog"), "index.html")); got != "<h1>blog</h1>" {
		t.Errorf("LiveSiteDir: index.html = %q", got)
	}
}

// Every refused source leaves the live release serving and no new release.
func TestPrepareRefusesBadSources(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		files map[string]string
		fifo  string
		want  []string
	}{
		{name: "symlink out of the repo", files: map[string]string{"sites/blog/passwd": "symlink:../../../etc/passwd"},
			want: []string{"sites/blog/passwd", "leaves the repo"}},
		{name: "absolute symlink", files: map[string]string{"sites/blog/passwd": "symlink:/etc/passwd"},
			want: []string{"sites/blog/passwd", "absolute"}},
		{name: "symlink out of the site", files: map[string]string{"sites/blog/env": "symlink:../../workers/api/.env", "workers/api/.env": "SECRET=1"},
			want: []string{"sites/blog/env", "resolves outside sites/blog"}},
		{name: "fifo", fifo: "sites/blog/pipe", want: []string{"sites/blog/pipe", "fifo"}},
		{name: "source is a symlink", files: map[string]string{"sites/blog": "symlink:/etc"},
			want: []string{"sites/blog", "symlink"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t, Options{})
			repo := t.TempDir()
			writeRepo(t, repo, map[string]string{"sites/blog/index.html": "v1"})
			live(t, s, rev(1), repo, blogSpec)

			if strings.HasPrefix(tc.files["sites/blog"], "symlink:") {
				os.RemoveAll(filepath.Join(repo, "sites/blog"))
			} else {
				writeRepo(t, repo, map[string]string{"sites/blog/index.html": "v2"})
			}
			writeRepo(t, repo, tc.files)
			if tc.fifo != "" {
				if err := syscall.Mkfifo(filepath.Join(repo, tc.fifo), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			_, err := prepare(t, s, rev(2), repo, blogSpec)
			wantErr(t, err, tc.want...)
			assertLive(t, s, rev(1), "sites/blog/index.html", "v1")
			if _, err := s.Release(rev(2)); err == nil {
				t.Fatal("the refused revision is a complete release")
			}
			wantErr(t, s.Switch(rev(2)), "not prepared")
		})
	}
}

// cidFS is a config directory that knows its files' git blob ids, like
// gitsource's tree, and records which files were opened.
type cidFS struct {
	fs.ReadLinkFS
	root   string
	mu     sync.Mutex
	opened map[string]bool
	// ids, when set, answers ContentID without reading, as git's tree
	// objects do.
	ids map[string]string
}

func newCIDFS(root string) *cidFS {
	return &cidFS{ReadLinkFS: os.DirFS(root).(fs.ReadLinkFS), root: root, opened: map[string]bool{}}
}

func (c *cidFS) Open(name string) (fs.File, error) {
	f, err := c.ReadLinkFS.Open(name)
	if err == nil {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			c.mu.Lock()
			c.opened[name] = true
			c.mu.Unlock()
		}
	}
	return f, err
}

func (c *cidFS) ContentID(name string) (string, error) {
	if c.ids != nil {
		if id, ok := c.ids[name]; ok {
			return id, nil
		}
		return "", fmt.Errorf("%s: no content id", name)
	}
	data, err := os.ReadFile(filepath.Join(c.root, filepath.FromSlash(name)))
	if err != nil {
		return "", err
	}
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", len(data))
	h.Write(data)
	return hex.EncodeToString(h.Sum(nil)), nil
}

var _ ContentIDFS = (*cidFS)(nil)

// Unchanged files share the inode of the live release's copy; changed,
// re-moded and in-place-modified files get their own.
func TestPrepareHardlinksUnchangedFiles(t *testing.T) {
	t.Parallel()
	for _, withCID := range []bool{false, true} {
		t.Run(fmt.Sprintf("contentID=%v", withCID), func(t *testing.T) {
			s := openStore(t, Options{})
			repo := t.TempDir()
			fsysFor := func() fs.FS {
				if withCID {
					return newCIDFS(repo)
				}
				return os.DirFS(repo)
			}
			prep := func(r string) (*Release, fs.FS) {
				t.Helper()
				fsys := fsysFor()
				rel, err := s.Prepare(context.Background(), r, []byte(blogSpec), parseSpec(t, blogSpec), fsys)
				if err != nil {
					t.Fatal(err)
				}
				if err := s.Switch(r); err != nil {
					t.Fatal(err)
				}
				return rel, fsys
			}
			writeRepo(t, repo, map[string]string{
				"sites/blog/same.css":    "unchanged",
				"sites/blog/changed.js":  "old",
				"sites/blog/script.sh":   "mode changes",
				"sites/blog/moved.txt":   "moved content",
				"sites/blog/touched.txt": "edited in place",
				// Two copies of one content: each stays linked to its own
				// inode, as a worker's bundle identity depends on it.
				"sites/blog/twin-a.txt": "twins",
				"sites/blog/twin-b.txt": "twins",
			})
			r1, _ := prep(rev(1))
			mtime1, _ := os.Stat(r1.SiteDir("blog") + "/same.css")

			writeRepo(t, repo, map[string]string{"sites/blog/changed.js": "new", "sites/blog/new/moved.txt": "moved content"})
			os.Remove(filepath.Join(repo, "sites/blog/moved.txt"))
			os.Chmod(filepath.Join(repo, "sites/blog/script.sh"), 0o755)
			r2, fsys := prep(rev(2))

			f1, f2 := r1.SiteDir("blog")+"/", r2.SiteDir("blog")+"/"
			if inode(t, f1+"same.css") != inode(t, f2+"same.css") {
				t.Error("same.css was copied, not linked")
			}
			for _, twin := range []string{"twin-a.txt", "twin-b.txt"} {
				if inode(t, f1+twin) != inode(t, f2+twin) {
					t.Errorf("%s was linked to another path's copy of its content, not its own", twin)
				}
			}
			if inode(t, f1+"moved.txt") != inode(t, f2+"new/moved.txt") {
				t.Error("a moved file was copied, not linked")
			}
			if inode(t, f1+"changed.js") == inode(t, f2+"changed.js") {
				t.Fatal("changed.js shares the previous release's inode")
			}
			if inode(t, f1+"script.sh") == inode(t, f2+"script.sh") {
				t.Fatal("a file whose mode changed shares the previous inode")
			}
			if got := readFile(t, f2+"changed.js"); got != "new" {
				t.Fatalf("changed.js = %q", got)
			}
			if fi, _ := os.Stat(f2 + "script.sh"); fi.Mode() != 0o755 {
				t.Fatalf("script.sh mode %v, want 0755", fi.Mode())
			}
			if fi, _ := os.Stat(f2 + "same.css"); !fi.ModTime().Equal(mtime1.ModTime()) {
				t.Error("a linked file's mtime changed: nginx would send a new ETag")
			}
			if c, ok := fsys.(*cidFS); ok {
				for _, name := range []string{"sites/blog/same.css", "sites/blog/new/moved.txt"} {
					if c.opened[name] {
						t.Errorf("%s was read although its content id was known", name)
					}
				}
				if !c.opened["sites/blog/changed.js"] {
					t.Error("changed.js was not read")
				}
			}

			// Something rewrote a live file in place (same size, new
			// content): it is no longer what the manifest says, so the
			// next release copies it from the repo instead of linking it.
			live := f2 + "touched.txt"
			if err := os.WriteFile(live, []byte("EDITED in place"), 0o644); err != nil {
				t.Fatal(err)
			}
			future := time.Now().Add(time.Hour)
			os.Chtimes(live, future, future)
			r3, _ := prep(rev(3))
			if inode(t, live) == inode(t, r3.SiteDir("blog")+"/touched.txt") {
				t.Fatal("a file modified in place was linked into the next release")
			}
			if got := readFile(t, r3.SiteDir("blog")+"/touched.txt"); got != "edited in place" {
				t.Fatalf("touched.txt = %q, want the repo's content", got)
			}
		})
	}
}

func TestPrepareIsIdempotent(t *testing.T) {
	t.Parallel()
	s := openStore(t, Options{})
	repo := t.TempDir()
	writeRepo(t, repo, map[string]string{"sites/blog/index.html": "v1"})
	r1, err := prepare(t, s, rev(1), repo, blogSpec)
	if err != nil {
		t.Fatal(err)
	}
	ino := inode(t, r1.SiteDir("blog")+"/index.html")
	writeRepo(t, repo, map[string]string{"sites/blog/index.html": "changed after"})
	r2, err := prepare(t, s, rev(1), repo, blogSpec)
	if err != nil {
		t.Fatal(err)
	}
	if !r2.Completed.Equal(r1.Completed) || inode(t, r2.SiteDir("blog")+"/index.html") != ino {
		t.Fatal("a complete release was rebuilt")
	}
}

// A release dir without its completion marker (the agent died while
// preparing it) is set aside and rebuilt, not trusted.
func TestPrepareRebuildsCrashLeftovers(t *testing.T) {
	t.Parallel()
	s := openStore(t, Options{})
	repo := t.TempDir()
	writeRepo(t, repo, map[string]string{"sites/blog/index.html": "full", "sites/blog/b.html": "b"})
	writeRepo(t, s.ReleaseDir(rev(1)), map[string]string{
		"sites/blog/index.html": "trunc",
		"sites/blog/junk.tmp":   "from the crash",
		markerFile + ".tmp":     "{",
	})
	r, err := prepare(t, s, rev(1), repo, blogSpec)
	if err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, r.SiteDir("blog")+"/index.html"); got != "full" {
		t.Fatalf("index.html = %q after rebuild", got)
	}
	if _, err := os.Lstat(r.SiteDir("blog") + "/junk.tmp"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("a leftover file survived the rebuild")
	}
	// A corrupt marker counts as incomplete too.
	writeRepo(t, s.ReleaseDir(rev(2)), map[string]string{"sites/blog/index.html": "trunc", markerFile: "{not json"})
	wantErr(t, s.Switch(rev(2)), "corrupt")
	if _, err := prepare(t, s, rev(2), repo, blogSpec); err != nil {
		t.Fatal(err)
	}
	if err := s.Switch(rev(2)); err != nil {
		t.Fatal(err)
	}
	assertLive(t, s, rev(2), "sites/blog/index.html", "full")

	// The live release losing its marker is not a crash leftover: it is
	// never moved aside under nginx's feet.
	if err := os.Remove(filepath.Join(s.ReleaseDir(rev(2)), markerFile)); err != nil {
		t.Fatal(err)
	}
	_, err = prepare(t, s, rev(2), repo, blogSpec)
	wantErr(t, err, "refusing to rebuild a live release")
	if got := readFile(t, filepath.Join(s.LiveDir(), "sites/blog/index.html")); got != "full" {
		t.Fatalf("live index.html = %q", got)
	}
}

const installSpec = `version: 1
workers:
  - name: api
    source: workers/api
    install: [sh, -c, %q]
    installTimeout: %s
    exec: [./server.sh]
    port: 3000
    health: {path: /healthz}
`

func TestPrepareRunsInstall(t *testing.T) {
	t.Parallel()
	s := openStore(t, Options{})
	repo := t.TempDir()
	writeRepo(t, repo, map[string]string{"workers/api/package.json": `{"name":"api"}`, "x:workers/api/server.sh": "#!/bin/sh\n"})
	// Like yarn: reads the bundle, writes node_modules, rewrites a file in place.
	yaml := fmt.Sprintf(installSpec, `test -f package.json && mkdir node_modules && pwd > node_modules/where && echo '{"name":"api","installed":1}' >> package.json`, "10s")
	r1 := live(t, s, rev(1), repo, yaml)
	w1 := r1.WorkerDir("api")
	if got := strings.TrimSpace(readFile(t, w1+"/node_modules/where")); got != w1 {
		t.Fatalf("install ran in %q, want the new bundle %q", got, w1)
	}
	// A changed bundle: the step runs again in the new release.
	writeRepo(t, repo, map[string]string{"x:workers/api/server.sh": "#!/bin/sh\n# v2\n"})
	r2, err := prepare(t, s, rev(2), repo, yaml)
	if err != nil {
		t.Fatal(err)
	}
	// The install step appended to package.json again: the live release's
	// copy must not have changed, which holds because installed bundles
	// are copied, never linked file by file.
	if inode(t, w1+"/package.json") == inode(t, r2.WorkerDir("api")+"/package.json") {
		t.Fatal("an installed bundle shares files with the live release")
	}
	if got := readFile(t, w1+"/package.json"); strings.Count(got, "installed") != 1 {
		t.Fatalf("the live package.json was changed by the next release's install: %q", got)
	}
}

// TestPrepareReusesAnUnchangedInstalledBundle: a release whose worker has
// the same files and the same install step as the base release's links the
// whole installed bundle (install outputs included) and does not run the
// step; changing the step, or a file, runs it again on fresh copies.
func TestPrepareReusesAnUnchangedInstalledBundle(t *testing.T) {
	t.Parallel()
	s := openStore(t, Options{})
	repo := t.TempDir()
	// The step runs as nobody: it writes where nobody may.
	runsDir := testsvc.WorldDir(t, "runs")
	if err := os.Chmod(runsDir, 0o777); err != nil {
		t.Fatal(err)
	}
	runs := filepath.Join(runsDir, "runs")
	writeRepo(t, repo, map[string]string{"workers/api/package.json": `{"name":"api"}`, "x:workers/api/server.sh": "#!/bin/sh\n",
		"sites/blog/index.html": "v1"})
	script := fmt.Sprintf(`echo run >> %s && mkdir -p node_modules/dep && echo dep > node_modules/dep/index.js && chmod 555 node_modules`, runs)
	yaml := fmt.Sprintf(installSpec, script, "10s") + "sites:\n  - {name: blog, serverNames: [blog.example.com], source: sites/blog}\n"
	r1 := live(t, s, rev(1), repo, yaml)
	writeRepo(t, repo, map[string]string{"sites/blog/index.html": "v2"}) // only the site changes
	r2, err := prepare(t, s, rev(2), repo, yaml)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(readFile(t, runs), "run"); n != 1 {
		t.Errorf("the install step ran %d times for an unchanged bundle, want once", n)
	}
	for _, f := range []string{"package.json", "server.sh", "node_modules/dep/index.js"} {
		if inode(t, r1.WorkerDir("api")+"/"+f) != inode(t, r2.WorkerDir("api")+"/"+f) {
			t.Errorf("%s of the unchanged bundle is not the base release's file", f)
		}
	}
	if st, err := os.Stat(r2.WorkerDir("api") + "/node_modules"); err != nil || st.Mode().Perm() != 0o555 {
		t.Errorf("node_modules mode not kept: %v %v", st, err)
	}
	if err := s.Switch(rev(2)); err != nil {
		t.Fatal(err)
	}
	// Another step: it runs again, on copies.
	yaml3 := strings.Replace(yaml, "mkdir -p", "mkdir -p  ", 1)
	r3, err := prepare(t, s, rev(3), repo, yaml3)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(readFile(t, runs), "run"); n != 2 {
		t.Errorf("the install step ran %d times after it changed, want twice", n)
	}
	if inode(t, r2.WorkerDir("api")+"/package.json") == inode(t, r3.WorkerDir("api")+"/package.json") {
		t.Error("a bundle whose install step changed shares files with the base release")
	}
}

func TestPrepareInstallFailureAndTimeout(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, script, timeout string
		want                  []string
	}{
		{"failure", "echo 'error: lockfile needs to be updated' >&2; exit 3", "10s",
			[]string{"install worker api", "exit status 3", "lockfile needs to be updated"}},
		{"timeout", "echo fetching; sleep 30", "300ms",
			[]string{"install worker api", "timed out", "fetching"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t, Options{})
			repo := t.TempDir()
			writeRepo(t, repo, map[string]string{"workers/api/server.sh": "v1"})
			live(t, s, rev(1), repo, fmt.Sprintf(installSpec, "true", "10s"))
			writeRepo(t, repo, map[string]string{"workers/api/server.sh": "v2"})
			start := time.Now()
			_, err := prepare(t, s, rev(2), repo, fmt.Sprintf(installSpec, tc.script, tc.timeout))
			wantErr(t, err, tc.want...)
			if took := time.Since(start); took > 10*time.Second {
				t.Errorf("Prepare returned after %s", took)
			}
			assertLive(t, s, rev(1), "workers/api/server.sh", "v1")
			wantErr(t, s.Switch(rev(2)), "not prepared")
		})
	}
}

func TestPrepareHonoursContext(t *testing.T) {
	t.Parallel()
	s := openStore(t, Options{})
	repo := t.TempDir()
	writeRepo(t, repo, map[string]string{"workers/api/server.sh": "v1"})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	yaml := fmt.Sprintf(installSpec, "sleep 30", "1h")
	_, err := s.Prepare(ctx, rev(1), []byte(yaml), parseSpec(t, yaml), os.DirFS(repo))
	wantErr(t, err, "timed out")
}

// A release made without content ids (hashes only) still lends its files
// to one made with them, and the other way round.
func TestPrepareLinksAcrossContentIDKinds(t *testing.T) {
	t.Parallel()
	s := openStore(t, Options{})
	repo := t.TempDir()
	writeRepo(t, repo, map[string]string{"sites/blog/a.css": "a", "sites/blog/b.css": "b"})
	fss := []fs.FS{os.DirFS(repo), newCIDFS(repo), os.DirFS(repo)}
	var prev *Release
	for i, fsys := range fss {
		r, err := s.Prepare(context.Background(), rev(i), []byte(blogSpec), parseSpec(t, blogSpec), fsys)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Switch(rev(i)); err != nil {
			t.Fatal(err)
		}
		if prev != nil && inode(t, prev.SiteDir("blog")+"/a.css") != inode(t, r.SiteDir("blog")+"/a.css") {
			t.Errorf("release %d (%T) copied a.css instead of linking it", i, fsys)
		}
		prev = r
	}
}

// TestPrepareHasADeadline: with no deadline from the caller, Prepare still
// ends (Options.PrepareTimeout), here inside an install step whose own
// installTimeout is longer.
func TestPrepareHasADeadline(t *testing.T) {
	t.Parallel()
	s := openStore(t, Options{PrepareTimeout: 300 * time.Millisecond})
	repo := t.TempDir()
	writeRepo(t, repo, map[string]string{"workers/api/server.sh": "v1"})
	yaml := fmt.Sprintf(installSpec, "sleep 30", "1h")
	_, err := s.Prepare(context.Background(), rev(1), []byte(yaml), parseSpec(t, yaml), os.DirFS(repo))
	wantErr(t, err, "timed out")
}
