package artifacts

import (
	"archive/tar"
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/drover-dev/drover/gitsource"
)

// chain is the link chain of issue 19 at a depth that reaches / from any
// state dir: l, deep in d/…/d, points up to the site's root (lexically
// fine), and x goes through l and up again: lexically <site>/etc, but the
// node's /etc when the kernel resolves it.
func chain() (l, lTarget, xTarget string) {
	const depth = 16 // deeper than any test's temp dir, so that R/../… is /
	d := strings.Repeat("d/", depth)
	l = d + "l"
	lTarget = strings.TrimSuffix(strings.Repeat("../", depth), "/")
	// depth+1 times "..": l's own name and each d, so lexically x stays in.
	return l, lTarget, l + "/" + strings.Repeat("../", depth+1) + "etc"
}

// TestLinkChainFromGitRefused commits the chain to a real git repository,
// reads the revision through gitsource's tree (as the agent does) and
// prepares it: refused with the link named, nothing published.
func TestLinkChainFromGitRefused(t *testing.T) {
	t.Parallel()
	work := t.TempDir()
	gitRun := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.com", "-C", work}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	gitRun("init", "-q", "-b", "main")
	writeRepo(t, work, map[string]string{"sites/blog/index.html": "hi", "drover.yaml": blogSpec})
	l, lt, xt := chain()
	site := filepath.Join(work, "sites/blog")
	if err := os.MkdirAll(filepath.Dir(filepath.Join(site, l)), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{l: lt, "x": xt} {
		if err := os.Symlink(target, filepath.Join(site, name)); err != nil {
			t.Fatal(err)
		}
	}
	// The chain really does reach the node's /etc: this is what nginx
	// served before.
	if _, err := os.Stat(filepath.Join(site, "x", "passwd")); err != nil {
		t.Fatalf("the chain does not reach /etc/passwd here, so this test shows nothing: %v", err)
	}
	gitRun("add", "-A")
	gitRun("commit", "-q", "-m", "chain")
	head := gitRun("rev-parse", "HEAD")

	repo, err := gitsource.Open(gitsource.Config{URL: "file://" + work, Branch: "main", Dir: filepath.Join(t.TempDir(), "git")}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { repo.Close() })
	ctx := context.Background()
	if err := repo.Fetch(ctx, head); err != nil {
		t.Fatal(err)
	}
	tree, err := repo.Tree(ctx, head, "")
	if err != nil {
		t.Fatal(err)
	}
	s := openStore(t, Options{})
	_, err = s.Prepare(ctx, head, []byte(blogSpec), parseSpec(t, blogSpec), tree)
	wantErr(t, err, "sites[0].source: sites/blog/x: symlink to", "resolves outside sites/blog (through "+l+")")
	if _, err := s.Release(head); err == nil {
		t.Fatal("the refused revision is a complete release")
	}
}

// TestLinkChainFromTarballRefused: the same chain from a real tarball
// (packed by tar) is refused once extracted, through an os.Root of the
// site, with the link named; the live release stays.
func TestLinkChainFromTarballRefused(t *testing.T) {
	t.Parallel()
	l, lt, xt := chain()
	data := realTarball(t, map[string]string{"index.html": "<app>", l: "symlink:" + lt, "x": "symlink:" + xt}, "-z")
	ts := newTarServer(t)
	s := openStore(t, Options{HTTPClient: ts.Client()})
	repo := t.TempDir()
	writeRepo(t, repo, map[string]string{"sites/blog/index.html": "v1"})
	live(t, s, rev(1), repo, blogSpec)

	url, sum := ts.put("app.tgz", data)
	_, err := prepare(t, s, rev(2), repo, artifactSpec(url, sum, 1))
	wantErr(t, err, "site app: check symlinks of", `x: symlink to "`+xt+`" resolves outside . (through `+l+`)`)
	assertLive(t, s, rev(1), "sites/blog/index.html", "v1")
	wantErr(t, s.Switch(rev(2)), "not prepared")

	// A crafted archive (links before the dirs they sit in) is refused too.
	crafted := craftedTarball(t, true,
		&tar.Header{Name: "x", Typeflag: tar.TypeSymlink, Linkname: xt},
		&tar.Header{Name: l, Typeflag: tar.TypeSymlink, Linkname: lt},
		file("index.html", 3))
	url, sum = ts.put("crafted.tgz", crafted)
	_, err = prepare(t, s, rev(3), repo, artifactSpec(url, sum, 0))
	wantErr(t, err, `x: symlink to "`+xt+`" resolves outside .`)
}
