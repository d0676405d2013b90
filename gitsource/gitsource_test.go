package gitsource

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/testsvc"
)

func mustRead(t testing.TB, fsys fs.FS, name string) string {
	t.Helper()
	b, err := fs.ReadFile(fsys, name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestPollFetchesNothingUntilThePushOverHTTP(t *testing.T) {
	t.Parallel()
	u := newUpstream(t)
	u.write("drover.yaml", "version: 1\n", 0o644)
	c1 := u.commit("first")
	srv := serveHTTP(t, u.root)
	r := openRepo(t, Config{URL: srv.url()}, nil)
	ctx := ctxT(t)

	rev, err := r.Remote(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rev != c1 {
		t.Fatalf("Remote = %s, want %s", rev, c1)
	}
	if got, want := srv.counts(), map[string]int{"GET info/refs": 1}; !maps.Equal(got, want) {
		t.Fatalf("ls-remote made requests %v, want %v", got, want)
	}
	if err := r.Fetch(ctx, rev); err != nil {
		t.Fatal(err)
	}
	if got := srv.counts()["POST git-upload-pack"]; got != 1 {
		t.Fatalf("first fetch made %d upload-pack requests, want 1", got)
	}

	// Unchanged polls: one ref advertisement each, no objects; a Fetch of
	// the commit already here makes no request at all.
	before := r.Traffic()
	for range 3 {
		rev, err := r.Remote(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Fetch(ctx, rev); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := srv.counts(), map[string]int{"GET info/refs": 3}; !maps.Equal(got, want) {
		t.Fatalf("3 unchanged polls made requests %v, want %v", got, want)
	}
	tr := r.Traffic()
	if tr.Requests-before.Requests != 3 || tr.Sent != before.Sent {
		t.Fatalf("traffic of unchanged polls: %+v -> %+v", before, tr)
	}
	t.Logf("unchanged poll: %d bytes down", (tr.Received-before.Received)/3)

	u.write("drover.yaml", "version: 1\n# changed\n", 0o644)
	c2 := u.commit("second")
	rev, err = r.Remote(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rev != c2 {
		t.Fatalf("after push Remote = %s, want %s", rev, c2)
	}
	if _, err := r.Tree(ctx, c2, ""); !errors.Is(err, ErrNotFetched) {
		t.Fatalf("Tree before Fetch: %v, want ErrNotFetched", err)
	}
	if err := r.Fetch(ctx, rev); err != nil {
		t.Fatal(err)
	}
	tree, err := r.Tree(ctx, c2, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, tree, "drover.yaml"); got != "version: 1\n# changed\n" {
		t.Fatalf("drover.yaml = %q", got)
	}
	// The local store is a real git repository: the CLI agrees it is
	// shallow, at c2, on the branch.
	if got := git(t, r.cfg.Dir, "rev-parse", "refs/heads/main"); got != c2 {
		t.Fatalf("local refs/heads/main = %s, want %s", got, c2)
	}
	if got := git(t, r.cfg.Dir, "rev-parse", "--is-shallow-repository"); got != "true" {
		t.Fatalf("local repository shallow = %s", got)
	}
}

func TestIncrementalFetchTransfersOnlyNewObjects(t *testing.T) {
	t.Parallel()
	u := newUpstream(t)
	// 200 incompressible files of 2 KB in 10 directories.
	for i := range 200 {
		b := make([]byte, 1024)
		rand.Read(b)
		u.write(fmt.Sprintf("site/d%d/f%d.txt", i%10, i), hex.EncodeToString(b), 0o644)
	}
	c1 := u.commit("many files")
	srv := serveHTTP(t, u.root)
	r := openRepo(t, Config{URL: srv.url()}, nil)
	ctx := ctxT(t)
	if err := r.Fetch(ctx, c1); err != nil {
		t.Fatal(err)
	}
	first := r.Traffic().Received
	if first < 200*2048/2 {
		t.Fatalf("first fetch received %d bytes, less than the content", first)
	}

	u.write("site/d3/f3.txt", "changed", 0o644)
	c2 := u.commit("one file changed")
	if err := r.Fetch(ctx, c2); err != nil {
		t.Fatal(err)
	}
	second := r.Traffic().Received - first
	t.Logf("fetch of 200 files: %d bytes; of one changed file: %d bytes", first, second)
	if second > 8*1024 {
		t.Fatalf("incremental fetch of one changed file received %d bytes (first fetch %d)", second, first)
	}
	tree, err := r.Tree(ctx, c2, "site")
	if err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, tree, "d3/f3.txt"); got != "changed" {
		t.Fatalf("changed file reads %q", got)
	}
	if got := mustRead(t, tree, "d4/f4.txt"); len(got) != 2048 {
		t.Fatalf("unchanged file reads %d bytes", len(got))
	}
}

func TestForcePushedHistoryIsRecloned(t *testing.T) {
	t.Parallel()
	u := newUpstream(t)
	u.write("a.txt", "one", 0o644)
	u.write("keep/b.txt", "kept", 0o644)
	u.commit("one")
	u.write("a.txt", "two", 0o644)
	c2 := u.commit("two")
	srv := serveHTTP(t, u.root)
	r := openRepo(t, Config{URL: srv.url()}, nil)
	ctx := ctxT(t)
	if err := r.Fetch(ctx, c2); err != nil {
		t.Fatal(err)
	}

	// Rewrite history: a new root commit, force-pushed, the old objects
	// pruned from the server.
	git(t, u.work, "checkout", "-q", "--orphan", "rewritten")
	git(t, u.work, "rm", "-rq", "--cached", ".")
	os.RemoveAll(filepath.Join(u.work, "a.txt"))
	u.write("c.txt", "rewritten", 0o644)
	u.write("keep/b.txt", "kept", 0o644)
	git(t, u.work, "add", "c.txt", "keep")
	c3 := u.commit("rewritten")
	git(t, u.bare, "reflog", "expire", "--expire=now", "--all")
	git(t, u.bare, "gc", "-q", "--prune=now")

	rev, err := r.Remote(ctx)
	if err != nil || rev != c3 {
		t.Fatalf("Remote = %s, %v; want %s", rev, err, c3)
	}
	if err := r.Fetch(ctx, rev); err != nil {
		t.Fatal(err)
	}
	tree, err := r.Tree(ctx, c3, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, tree, "c.txt"); got != "rewritten" {
		t.Fatalf("c.txt = %q", got)
	}
	if _, err := tree.Stat("a.txt"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a.txt of the old history: %v, want not exist", err)
	}
	c, err := r.Commit(ctx, c3)
	if err != nil || c.Message != "rewritten" {
		t.Fatalf("Commit = %+v, %v", c, err)
	}
}

func TestDamagedStoreIsClonedAfresh(t *testing.T) {
	t.Parallel()
	u := newUpstream(t)
	for i := range 20 {
		u.write(fmt.Sprintf("dir%d/f.txt", i), fmt.Sprintf("file %d", i), 0o644)
	}
	c1 := u.commit("one")
	dir := filepath.Join(t.TempDir(), "git")
	r := openRepo(t, Config{URL: u.fileURL(), Dir: dir}, nil)
	ctx := ctxT(t)
	if err := r.Fetch(ctx, c1); err != nil {
		t.Fatal(err)
	}
	r.Close()

	// Truncate the local pack (the disk lost its tail while the agent was
	// down): the index still claims every object of c1, so the next fetch
	// leaves them out, and reading them fails.
	packs, _ := filepath.Glob(filepath.Join(dir, "objects", "pack", "*.pack"))
	if len(packs) != 1 {
		t.Fatalf("packs after first fetch: %v", packs)
	}
	if err := os.Truncate(packs[0], 40); err != nil {
		t.Fatal(err)
	}
	logs := &testsvc.LogBuffer{}
	r = openRepo(t, Config{URL: u.fileURL(), Dir: dir}, logs)
	u.write("dir0/f.txt", "changed", 0o644)
	c2 := u.commit("two")
	if err := r.Fetch(ctx, c2); err != nil {
		t.Fatalf("fetch into a damaged store: %v\nlog:\n%s", err, logs)
	}
	if !strings.Contains(logs.String(), "cloning afresh") {
		t.Fatalf("fetch succeeded without the re-clone; log:\n%s", logs)
	}
	tree, err := r.Tree(ctx, c2, "")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		want := fmt.Sprintf("file %d", i)
		if i == 0 {
			want = "changed"
		}
		if got := mustRead(t, tree, fmt.Sprintf("dir%d/f.txt", i)); got != want {
			t.Fatalf("dir%d/f.txt = %q, want %q", i, got, want)
		}
	}
	if _, err := os.Stat(cloneDir(r.cfg.Dir)); !os.IsNotExist(err) {
		t.Fatalf("clone dir left behind: %v", err)
	}
}

func TestStoreStaysBounded(t *testing.T) {
	t.Parallel()
	u := newUpstream(t)
	r := openRepo(t, Config{URL: u.fileURL()}, nil)
	// Each commit below brings 4 new objects (commit, root tree, dir
	// tree, blob); the first comes in a pack.
	r.maxLoose = 10
	ctx := ctxT(t)
	for i := range 12 {
		u.write("d/n.txt", fmt.Sprint(i), 0o644)
		rev := u.commit(fmt.Sprint(i))
		if err := r.Fetch(ctx, rev); err != nil {
			t.Fatal(err)
		}
		tree, err := r.Tree(ctx, rev, "")
		if err != nil {
			t.Fatal(err)
		}
		if got := mustRead(t, tree, "d/n.txt"); got != fmt.Sprint(i) {
			t.Fatalf("fetch %d: n.txt = %q", i, got)
		}
		packs, loose, err := r.storeSize()
		if err != nil {
			t.Fatal(err)
		}
		if packs > 1 || loose > r.maxLoose+4 {
			t.Fatalf("fetch %d: %d packs, %d loose objects, more than 1 and %d", i, packs, loose, r.maxLoose+4)
		}
		t.Logf("fetch %d: %d packs, %d loose objects", i, packs, loose)
	}
}

func TestMissingBranch(t *testing.T) {
	t.Parallel()
	u := newUpstream(t)
	ctx := ctxT(t)
	// An empty repository has no branch at all.
	empty := openRepo(t, Config{URL: u.fileURL()}, nil)
	if _, err := empty.Remote(ctx); !errors.Is(err, ErrBranchNotFound) {
		t.Fatalf("Remote of an empty repository: %v, want ErrBranchNotFound", err)
	}
	c1 := u.commit("one")
	r := openRepo(t, Config{URL: u.fileURL(), Branch: "production"}, nil)
	_, err := r.Remote(ctx)
	if !errors.Is(err, ErrBranchNotFound) || !strings.Contains(err.Error(), `"production"`) {
		t.Fatalf("Remote of a missing branch: %v", err)
	}
	if err := r.Fetch(ctx, c1); !errors.Is(err, ErrBranchNotFound) {
		t.Fatalf("Fetch on a missing branch: %v", err)
	}
}

func TestFetchOfACommitTheBranchLeft(t *testing.T) {
	t.Parallel()
	u := newUpstream(t)
	c1 := u.commit("one")
	u.commit("two")
	r := openRepo(t, Config{URL: u.fileURL()}, nil)
	err := r.Fetch(ctxT(t), c1)
	if !errors.Is(err, ErrBranchMoved) {
		t.Fatalf("Fetch of an older commit: %v, want ErrBranchMoved", err)
	}
	if _, err := os.Stat(cloneDir(r.cfg.Dir)); !os.IsNotExist(err) {
		t.Fatalf("a moved branch must not trigger a re-clone: %v", err)
	}
}

func TestCommit(t *testing.T) {
	t.Parallel()
	u := newUpstream(t)
	when := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	u.write("x", "x", 0o644)
	git(t, u.work, "add", "-A")
	git(t, u.work, "-c", "user.name=x", "commit", "-q", "-m", "Add worker feedback-api\n\nLonger body.",
		"--date", when.Format(time.RFC3339))
	git(t, u.work, "push", "-q", "origin", "HEAD:main")
	rev := git(t, u.work, "rev-parse", "HEAD")
	r := openRepo(t, Config{URL: u.fileURL()}, nil)
	ctx := ctxT(t)
	if _, err := r.Commit(ctx, rev); !errors.Is(err, ErrNotFetched) {
		t.Fatalf("Commit before Fetch: %v, want ErrNotFetched", err)
	}
	if err := r.Fetch(ctx, rev); err != nil {
		t.Fatal(err)
	}
	c, err := r.Commit(ctx, rev)
	if err != nil {
		t.Fatal(err)
	}
	want := Commit{Hash: rev, Author: "T Tester <t@example.com>", When: when, Message: "Add worker feedback-api"}
	if c.Hash != want.Hash || c.Author != want.Author || !c.When.Equal(want.When) || c.Message != want.Message {
		t.Fatalf("Commit = %+v, want %+v", c, want)
	}
	if _, err := r.Commit(ctx, "main"); err == nil {
		t.Fatal("Commit accepted a branch name for a commit id")
	}
}

func TestTokenAuth(t *testing.T) {
	t.Parallel()
	u := newUpstream(t)
	c1 := u.commit("one")
	srv := serveHTTP(t, u.root)
	token := "s3cret-token-value"
	srv.token.Store(&token)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	logs := &testsvc.LogBuffer{}
	r := openRepo(t, Config{URL: srv.url(), TokenFile: tokenFile}, logs)
	if rev, err := r.Remote(ctx); err != nil || rev != c1 {
		t.Fatalf("Remote with the token = %s, %v", rev, err)
	}
	if err := r.Fetch(ctx, c1); err != nil {
		t.Fatal(err)
	}

	// The file is read at each use: a rotated token on the server fails
	// until the file has it too, with no restart.
	rotated := "rotated-token"
	srv.token.Store(&rotated)
	if _, err := r.Remote(ctx); err == nil {
		t.Fatal("Remote with a stale token succeeded")
	}
	if err := os.WriteFile(tokenFile, []byte(rotated), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Remote(ctx); err != nil {
		t.Fatalf("Remote after the token file was rotated: %v", err)
	}

	anon := openRepo(t, Config{URL: srv.url()}, nil)
	if _, err := anon.Remote(ctx); err == nil {
		t.Fatal("Remote without a token succeeded")
	}
	for _, secret := range []string{token, rotated} {
		if strings.Contains(logs.String(), secret) {
			t.Fatalf("the token is in the log:\n%s", logs)
		}
	}

	_, err := Open(Config{URL: "http://git.example.com/x.git", Branch: "main", Dir: t.TempDir(), TokenFile: tokenFile}, testLogger(os.Stderr))
	if err == nil || !strings.Contains(err.Error(), "clear text") {
		t.Fatalf("Open with a token over plain http to a remote host: %v", err)
	}
}

func TestOpenValidatesEveryField(t *testing.T) {
	t.Parallel()
	_, err := Open(Config{}, testLogger(os.Stderr))
	for _, want := range []string{"url: required", "branch: required", "dir: required"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Open(empty config) = %v, want it to say %q", err, want)
		}
	}
	_, err = Open(Config{URL: "ssh://git@example.com/x.git", Branch: "bad..name", Dir: t.TempDir()}, testLogger(os.Stderr))
	for _, want := range []string{"sshKeyFile: required", "knownHostsFile: required", `"bad..name" is not a valid branch name`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Open(ssh config) = %v, want it to say %q", err, want)
		}
	}
	_, err = Open(Config{URL: "git://example.com/x.git", Branch: "main", Dir: t.TempDir()}, testLogger(os.Stderr))
	if err == nil || !strings.Contains(err.Error(), "unsupported scheme") {
		t.Errorf("Open(git://) = %v", err)
	}
	_, err = Open(Config{URL: "https://example.com/x.git", Branch: "main", Dir: t.TempDir(), TokenFile: "/nonexistent/token"}, testLogger(os.Stderr))
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/token") {
		t.Errorf("Open with a missing token file = %v", err)
	}
}

func TestOpenRecoversADamagedStore(t *testing.T) {
	t.Parallel()
	u := newUpstream(t)
	c1 := u.commit("one")
	dir := filepath.Join(t.TempDir(), "git")
	r := openRepo(t, Config{URL: u.fileURL(), Dir: dir}, nil)
	if err := r.Fetch(ctxT(t), c1); err != nil {
		t.Fatal(err)
	}
	r.Close()
	if err := os.WriteFile(filepath.Join(dir, "config"), []byte("[[[ torn write"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = openRepo(t, Config{URL: u.fileURL(), Dir: dir}, nil)
	if err := r.Fetch(ctxT(t), c1); err != nil {
		t.Fatal(err)
	}

	// A directory that is not a repository is never wiped.
	other := t.TempDir()
	os.WriteFile(filepath.Join(other, "precious"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(other, "config"), []byte("[[["), 0o644)
	if _, err := Open(Config{URL: u.fileURL(), Branch: "main", Dir: other}, testLogger(os.Stderr)); err == nil {
		t.Error("Open accepted a non-empty directory that is not a repository")
	}
	if _, err := os.Stat(filepath.Join(other, "precious")); err != nil {
		t.Fatalf("Open removed a file it did not create: %v", err)
	}
}

func TestCancelledPollReturns(t *testing.T) {
	t.Parallel()
	stuck := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		select {
		case <-stuck:
		case <-req.Context().Done():
		}
	}))
	t.Cleanup(func() { close(stuck); srv.Close() })
	r := openRepo(t, Config{URL: srv.URL + "/origin.git"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := r.Remote(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Remote against a hung server: %v, want DeadlineExceeded", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Remote took %v after its deadline", took)
	}
	if err := r.Fetch(ctx, strings.Repeat("a", 40)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Fetch with an expired context: %v", err)
	}
}

func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	u := newUpstream(t)
	u.write("n.txt", "0", 0o644)
	u.commit("0")
	r := openRepo(t, Config{URL: u.fileURL()}, nil)
	ctx := ctxT(t)

	var wg sync.WaitGroup
	errs := make(chan error, 100)
	stop := make(chan struct{})
	wg.Go(func() {
		defer close(stop)
		for i := 1; i <= 5; i++ {
			u.write("n.txt", fmt.Sprint(i), 0o644)
			u.commit(fmt.Sprint(i))
			time.Sleep(20 * time.Millisecond)
		}
	})
	for range 6 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				rev, err := r.Remote(ctx)
				if err != nil {
					errs <- err
					return
				}
				if err := r.Fetch(ctx, rev); errors.Is(err, ErrBranchMoved) {
					continue // a push between the two calls
				} else if err != nil {
					errs <- err
					return
				}
				if _, err := r.Commit(ctx, rev); err != nil {
					errs <- err
					return
				}
				tree, err := r.Tree(ctx, rev, "")
				if err != nil {
					errs <- err
					return
				}
				if _, err := fs.ReadFile(tree, "n.txt"); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	rev, err := r.Remote(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Fetch(ctx, rev); err != nil {
		t.Fatal(err)
	}
	tree, _ := r.Tree(ctx, rev, "")
	if got := mustRead(t, tree, "n.txt"); got != "5" {
		t.Fatalf("after the pushes n.txt = %q, want 5", got)
	}
}
