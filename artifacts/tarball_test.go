package artifacts

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/drover-dev/drover/spec"
)

// tarServer serves tarballs by path over https (the only scheme a spec may
// name) and counts the requests; its Client trusts its certificate.
type tarServer struct {
	*httptest.Server
	files map[string][]byte
	hits  atomic.Int64
}

func newTarServer(t *testing.T) *tarServer {
	ts := &tarServer{files: map[string][]byte{}}
	ts.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ts.hits.Add(1)
		data, ok := ts.files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(data)
	}))
	t.Cleanup(ts.Close)
	return ts
}

// put serves data at /name and returns its URL and digest.
func (ts *tarServer) put(name string, data []byte) (string, string) {
	ts.files["/"+name] = data
	sum := sha256.Sum256(data)
	return ts.URL + "/" + name, hex.EncodeToString(sum[:])
}

func artifactSpec(url, sum string, strip int) string {
	return fmt.Sprintf(`version: 1
sites:
  - name: app
    serverNames: [app.example.com]
    artifact: {url: %q, sha256: %q, stripComponents: %d}
`, url, sum, strip)
}

// realTarball packs files with the tar program, as a CI job would.
func realTarball(t *testing.T, files map[string]string, flags ...string) []byte {
	t.Helper()
	dir := t.TempDir()
	writeRepo(t, filepath.Join(dir, "app-1.4.2"), files)
	out := filepath.Join(t.TempDir(), "app.tar")
	cmd := exec.Command("tar", append(append([]string{"-C", dir, "-cf", out}, flags...), "app-1.4.2")...)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tar: %v: %s", err, msg)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// craftedTarball writes headers as given, to build archives tar would not.
func craftedTarball(t *testing.T, gz bool, hdrs ...*tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hdrs {
		if h.Typeflag == tar.TypeReg && h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write(bytes.Repeat([]byte("x"), int(h.Size)))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if !gz {
		return buf.Bytes()
	}
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write(buf.Bytes())
	zw.Close()
	return z.Bytes()
}

func file(name string, size int64) *tar.Header {
	return &tar.Header{Name: name, Typeflag: tar.TypeReg, Size: size}
}

func TestTarballSite(t *testing.T) {
	t.Parallel()
	ts := newTarServer(t)
	s := openStore(t, Options{HTTPClient: ts.Client()})
	data := realTarball(t, map[string]string{
		"index.html":       "<app>",
		"assets/app.js":    "js",
		"x:bin/tool":       "#!/bin/sh\n",
		"assets/latest.js": "symlink:app.js",
		"assets/empty/":    "",
	}, "-z")
	url, sum := ts.put("app.tgz", data)
	yaml := artifactSpec(url, sum, 1)
	r1 := live(t, s, rev(1), t.TempDir(), yaml)
	site := r1.SiteDir("app")
	for file, want := range map[string]string{"index.html": "<app>", "assets/app.js": "js", "assets/latest.js": "js", "bin/tool": "#!/bin/sh\n"} {
		if got := readFile(t, filepath.Join(site, file)); got != want {
			t.Errorf("%s = %q, want %q", file, got, want)
		}
	}
	if fi, _ := os.Stat(filepath.Join(site, "bin/tool")); fi == nil || fi.Mode() != 0o755 {
		t.Errorf("bin/tool lost its exec bit: %v", fi)
	}
	if fi, _ := os.Stat(filepath.Join(site, "assets/empty")); fi == nil || !fi.IsDir() {
		t.Error("empty directory not extracted")
	}
	assertLive(t, s, rev(1), "sites/app/index.html", "<app>")

	// The next revision pins the same tarball: no download, no extraction,
	// every file linked.
	r2, err := prepare(t, s, rev(2), t.TempDir(), yaml)
	if err != nil {
		t.Fatal(err)
	}
	if n := ts.hits.Load(); n != 1 {
		t.Errorf("%d downloads, want 1", n)
	}
	if inode(t, filepath.Join(site, "index.html")) != inode(t, filepath.Join(r2.SiteDir("app"), "index.html")) {
		t.Error("the same tarball was extracted again instead of linked")
	}
	if target, _ := os.Readlink(filepath.Join(r2.SiteDir("app"), "assets/latest.js")); target != "app.js" {
		t.Errorf("relinked symlink -> %q", target)
	}

	// A corrupt cache entry is noticed and downloaded again.
	os.WriteFile(filepath.Join(s.Dir(), "cache", sum), []byte("bit rot"), 0o644)
	if err := s.Prune(t.Context(), 0); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(s.Dir(), "cache", sum), []byte("bit rot"), 0o644)
	yaml3 := strings.Replace(artifactSpec(url, sum, 0), "app.example.com", "app2.example.com", 1)
	r3, err := prepare(t, s, rev(3), t.TempDir(), yaml3)
	if err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(r3.SiteDir("app"), "app-1.4.2/index.html")); got != "<app>" {
		t.Errorf("stripComponents 0: index.html = %q", got)
	}
	if n := ts.hits.Load(); n != 2 {
		t.Errorf("%d downloads after the cache rotted, want 2", n)
	}
}

// TestTarballFileURLRefused: a file:// artifact would read the node's own
// files (/etc/drover/webhook.secret) into a site nginx serves. The spec
// refuses it (spec/policy.go), and the store, as a second line, fetches
// nothing but https.
func TestTarballFileURLRefused(t *testing.T) {
	t.Parallel()
	s := openStore(t, Options{})
	p := filepath.Join(t.TempDir(), "webhook.secret")
	os.WriteFile(p, []byte("s3cret"), 0o600)
	sum := sha256.Sum256([]byte("s3cret"))
	yaml := artifactSpec("file://"+p, hex.EncodeToString(sum[:]), 0)
	if _, err := spec.Parse(spec.FileName, []byte(yaml)); err == nil || !strings.Contains(err.Error(), "is not an https:// URL") {
		t.Fatalf("spec accepted a file:// artifact: %v", err)
	}
	_, err := s.fetch(context.Background(), &spec.Artifact{URL: "file://" + p, SHA256: hex.EncodeToString(sum[:])})
	wantErr(t, err, `scheme "file": this node fetches artifacts over https only`)
	if _, err := os.Stat(filepath.Join(s.dir, "cache", hex.EncodeToString(sum[:]))); err == nil {
		t.Fatal("the node-local file reached the artifact cache")
	}
	// Nor when the node's policy allows http too.
	s = openStore(t, Options{ArtifactSchemes: []string{"https", "http"}})
	_, err = s.fetch(context.Background(), &spec.Artifact{URL: "file://" + p, SHA256: hex.EncodeToString(sum[:])})
	wantErr(t, err, `scheme "file": this node fetches artifacts over https, http only`)
}

// TestTarballHTTPByPolicy: an http:// artifact is fetched only by a store
// whose node policy allows http (Options.ArtifactSchemes), and a redirect
// may not leave the node's schemes.
func TestTarballHTTPByPolicy(t *testing.T) {
	t.Parallel()
	data := realTarball(t, map[string]string{"index.html": "plain"})
	sum := sha256.Sum256(data)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/moved" {
			http.Redirect(w, r, "https://127.0.0.1:1/a.tgz", http.StatusFound)
			return
		}
		w.Write(data)
	}))
	t.Cleanup(srv.Close)
	a := &spec.Artifact{URL: srv.URL + "/a.tgz", SHA256: hex.EncodeToString(sum[:])}

	_, err := openStore(t, Options{}).fetch(context.Background(), a)
	wantErr(t, err, `scheme "http": this node fetches artifacts over https only`)

	s := openStore(t, Options{ArtifactSchemes: []string{"https", "http"}})
	file, err := s.fetch(context.Background(), a)
	if err != nil {
		t.Fatalf("http artifact with http allowed: %v", err)
	}
	if got, _ := hashPath(file); got != a.SHA256 {
		t.Fatalf("cached %s, want %s", got, a.SHA256)
	}

	httpOnly := openStore(t, Options{ArtifactSchemes: []string{"http"}})
	_, err = httpOnly.fetch(context.Background(), &spec.Artifact{URL: srv.URL + "/moved", SHA256: strings.Repeat("b", 64)})
	wantErr(t, err, "redirected to https://127.0.0.1:1/a.tgz, a scheme this node does not fetch over")
}

func TestTarballHardLinkKept(t *testing.T) {
	t.Parallel()
	ts := newTarServer(t)
	s := openStore(t, Options{HTTPClient: ts.Client()})
	data := craftedTarball(t, false, file("app/index.html", 5), &tar.Header{Name: "app/copy.html", Typeflag: tar.TypeLink, Linkname: "app/index.html"})
	url, sum := ts.put("app.tar", data)
	r, err := prepare(t, s, rev(1), t.TempDir(), artifactSpec(url, sum, 1))
	if err != nil {
		t.Fatal(err)
	}
	if inode(t, r.SiteDir("app")+"/index.html") != inode(t, r.SiteDir("app")+"/copy.html") {
		t.Error("the archive's hard link was not kept")
	}
}

func TestTarballWrongDigest(t *testing.T) {
	t.Parallel()
	ts := newTarServer(t)
	s := openStore(t, Options{HTTPClient: ts.Client()})
	repo := t.TempDir()
	writeRepo(t, repo, map[string]string{"sites/blog/index.html": "v1"})
	live(t, s, rev(1), repo, blogSpec)

	good := craftedTarball(t, true, file("index.html", 3))
	url, sum := ts.put("app.tgz", craftedTarball(t, true, file("index.html", 4)))
	goodSum := sha256.Sum256(good)
	pinned := hex.EncodeToString(goodSum[:])
	_, err := prepare(t, s, rev(2), repo, artifactSpec(url, pinned, 0))
	wantErr(t, err, "sha256 is "+sum, "pins "+pinned, url)
	if _, err := os.Lstat(filepath.Join(s.ReleaseDir(rev(2)), "sites/app")); !errors.Is(err, fs.ErrNotExist) {
		t.Error("something was extracted from a tarball with the wrong digest")
	}
	if des, _ := os.ReadDir(filepath.Join(s.Dir(), "cache")); len(des) != 0 {
		t.Errorf("the refused download stayed in the cache: %v", des)
	}
	assertLive(t, s, rev(1), "sites/blog/index.html", "v1")
}

// Each bad archive is refused with the entry named, nothing lands outside
// the extraction root, and the live release keeps serving.
func TestTarballBadEntries(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		opts  Options
		hdrs  []*tar.Header
		want  []string
		plain bool // not gzipped
	}{
		{name: "dot-dot", hdrs: []*tar.Header{file("ok.html", 1), file("../evil.html", 1)},
			want: []string{`entry "../evil.html"`, `".." in path`}},
		{name: "dot-dot inside", hdrs: []*tar.Header{file("a/../../evil.html", 1)},
			want: []string{`entry "a/../../evil.html"`, `".."`}},
		{name: "absolute", hdrs: []*tar.Header{file("/tmp/evil.html", 1)},
			want: []string{`entry "/tmp/evil.html"`, "absolute path"}},
		{name: "symlink out", hdrs: []*tar.Header{{Name: "out", Typeflag: tar.TypeSymlink, Linkname: "../.."}},
			want: []string{`entry "out"`, "leaves the repo"}},
		{name: "write through symlink", hdrs: []*tar.Header{
			{Name: "a/", Typeflag: tar.TypeDir, Mode: 0o755},
			{Name: "a/b", Typeflag: tar.TypeSymlink, Linkname: ".."},
			{Name: "a/b/c", Typeflag: tar.TypeSymlink, Linkname: ".."},
			file("a/b/c/evil.html", 1),
		}, want: []string{`entry "a/b/c"`, `through "a/b", a symlink`}},
		{name: "write through inner symlink", hdrs: []*tar.Header{
			{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "."},
			file("link/evil.html", 1),
		}, want: []string{`entry "link/evil.html"`, "symlink earlier in the archive"}},
		{name: "replace file by symlink", hdrs: []*tar.Header{
			file("index.html", 1),
			{Name: "index.html", Typeflag: tar.TypeSymlink, Linkname: "x"},
		}, want: []string{`entry "index.html"`, "twice"}},
		{name: "char device", hdrs: []*tar.Header{{Name: "null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}},
			want: []string{`entry "null"`, "device"}},
		{name: "block device", hdrs: []*tar.Header{{Name: "sda", Typeflag: tar.TypeBlock, Devmajor: 8}},
			want: []string{`entry "sda"`, "device"}},
		{name: "fifo", hdrs: []*tar.Header{{Name: "pipe", Typeflag: tar.TypeFifo}},
			want: []string{`entry "pipe"`, "fifo"}},
		{name: "hard link out", hdrs: []*tar.Header{{Name: "passwd", Typeflag: tar.TypeLink, Linkname: "../../etc/passwd"}},
			want: []string{`entry "passwd"`, "leaves the archive"}},
		{name: "hard link to nothing", hdrs: []*tar.Header{{Name: "passwd", Typeflag: tar.TypeLink, Linkname: "etc/passwd"}},
			want: []string{`entry "passwd"`, "not a file extracted before it"}},
		{name: "too many bytes", opts: Options{MaxExtractedBytes: 1000}, hdrs: []*tar.Header{file("a", 600), file("b", 600)},
			want: []string{`entry "b"`, "more than 1000 bytes"}},
		{name: "too many files", opts: Options{MaxFiles: 3}, hdrs: []*tar.Header{file("a", 1), file("b", 1), file("c", 1), file("d", 1)},
			want: []string{`entry "d"`, "more than 3 entries"}},
		{name: "download too big", opts: Options{MaxTarballBytes: 2048}, hdrs: []*tar.Header{file("a", 4096)}, plain: true,
			want: []string{"larger than 2048 bytes"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTarServer(t)
			tc.opts.HTTPClient = ts.Client()
			s := openStore(t, tc.opts)
			repo := t.TempDir()
			writeRepo(t, repo, map[string]string{"sites/blog/index.html": "v1"})
			live(t, s, rev(1), repo, blogSpec)

			url, sum := ts.put("app.tgz", craftedTarball(t, !tc.plain, tc.hdrs...))
			_, err := prepare(t, s, rev(2), repo, artifactSpec(url, sum, 0))
			wantErr(t, err, tc.want...)
			assertLive(t, s, rev(1), "sites/blog/index.html", "v1")
			wantErr(t, s.Switch(rev(2)), "not prepared")
			// Nothing escaped: evil.html appears nowhere in the state dir
			// outside the site's own directory.
			filepath.WalkDir(s.Dir(), func(p string, d fs.DirEntry, err error) error {
				if d != nil && d.Name() == "evil.html" && !strings.Contains(p, "/sites/app/") {
					t.Errorf("an entry escaped to %s", p)
				}
				return nil
			})
		})
	}
}

func TestTarballNotAnArchive(t *testing.T) {
	t.Parallel()
	ts := newTarServer(t)
	s := openStore(t, Options{HTTPClient: ts.Client()})
	url, sum := ts.put("app.tgz", []byte("<html>this is an error page, not a tarball</html>"))
	_, err := prepare(t, s, rev(1), t.TempDir(), artifactSpec(url, sum, 0))
	wantErr(t, err, "extract "+url)
	url, sum = ts.put("missing.tgz", nil)
	delete(ts.files, "/missing.tgz")
	_, err = prepare(t, s, rev(2), t.TempDir(), artifactSpec(url, sum, 0))
	wantErr(t, err, "download "+url, "404")
}
