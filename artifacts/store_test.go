package artifacts

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/testsvc"
	"github.com/drover-dev/drover/spec"
)

// rev is a made-up commit id.
func rev(n int) string { return fmt.Sprintf("%040x", 0xc0ffee00+n) }

func openStore(t *testing.T, opts Options) *Store {
	t.Helper()
	// A dir others can traverse, as a node's /var/lib is: install steps
	// run as nobody.
	s, err := Open(filepath.Join(testsvc.WorldDir(t, "artifacts"), "state"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// writeRepo creates files under dir. A key ending in "/" is an empty
// directory; a value "symlink:T" is a symlink to T; a key starting with
// "x:" is an executable file.
func writeRepo(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		mode := os.FileMode(0o644)
		if n, ok := strings.CutPrefix(name, "x:"); ok {
			name, mode = n, 0o755
		}
		p := filepath.Join(dir, filepath.FromSlash(name))
		if strings.HasSuffix(name, "/") {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		os.Remove(p)
		if target, ok := strings.CutPrefix(content, "symlink:"); ok {
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
}

const blogSpec = `version: 1
sites:
  - name: blog
    serverNames: [blog.example.com]
    source: sites/blog
`

func parseSpec(t testing.TB, yaml string) *spec.Spec {
	t.Helper()
	sp, err := spec.Parse(spec.FileName, []byte(yaml))
	if err != nil {
		t.Fatalf("test spec: %v", err)
	}
	return sp
}

// prepare prepares rev from the config directory repo.
func prepare(t testing.TB, s *Store, r, repo, yaml string) (*Release, error) {
	t.Helper()
	return s.Prepare(context.Background(), r, []byte(yaml), parseSpec(t, yaml), os.DirFS(repo))
}

// live prepares rev from repo and switches to it.
func live(t testing.TB, s *Store, r, repo, yaml string) *Release {
	t.Helper()
	rel, err := prepare(t, s, r, repo, yaml)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Switch(r); err != nil {
		t.Fatal(err)
	}
	return rel
}

func readFile(t testing.TB, p string) string {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// assertLive checks that rev is still live and serves file with content.
func assertLive(t testing.TB, s *Store, r, file, content string) {
	t.Helper()
	cur, err := s.Current()
	if err != nil || cur != r {
		t.Fatalf("current is %q (%v), want %s", cur, err, r)
	}
	if got := readFile(t, filepath.Join(s.LiveDir(), file)); got != content {
		t.Fatalf("live %s is %q, want %q", file, got, content)
	}
}

func inode(t testing.TB, p string) uint64 {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func wantErr(t testing.TB, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one containing %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not contain %q", err, p)
		}
	}
}

func TestOpenLocksTheStateDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(dir, Options{})
	wantErr(t, err, "another drover process")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(dir, Options{})
	if err != nil {
		t.Fatalf("open after close: %v", err)
	}
	s2.Close()
}

func TestRevisionsMustBeCommitIDs(t *testing.T) {
	t.Parallel()
	s := openStore(t, Options{})
	repo := t.TempDir()
	writeRepo(t, repo, map[string]string{"sites/blog/index.html": "hi"})
	for _, bad := range []string{"", "HEAD", "../../etc", strings.Repeat("a", 39), strings.Repeat("A", 40), strings.Repeat("a", 41), strings.Repeat("a", 38) + "/."} {
		if _, err := prepare(t, s, bad, repo, blogSpec); err == nil || !strings.Contains(err.Error(), "not a commit id") {
			t.Errorf("Prepare(%q): %v, want a refusal", bad, err)
		}
		if err := s.Switch(bad); err == nil {
			t.Errorf("Switch(%q) succeeded", bad)
		}
	}
	des, _ := os.ReadDir(filepath.Join(s.Dir(), "releases"))
	if len(des) != 0 {
		t.Fatalf("refused revisions left %d entries in releases/", len(des))
	}
}

func TestSwitchRefusesIncompleteReleases(t *testing.T) {
	t.Parallel()
	s := openStore(t, Options{})
	repo := t.TempDir()
	writeRepo(t, repo, map[string]string{"sites/blog/index.html": "v1"})
	live(t, s, rev(1), repo, blogSpec)

	// A crash left rev 2 half-built; rev 3 was never prepared.
	writeRepo(t, s.ReleaseDir(rev(2)), map[string]string{"sites/blog/index.html": "half"})
	wantErr(t, s.Switch(rev(2)), "not prepared", rev(2))
	wantErr(t, s.Switch(rev(3)), "not prepared")
	if _, err := s.Release(rev(2)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Release of an incomplete release: %v, want fs.ErrNotExist", err)
	}
	assertLive(t, s, rev(1), "sites/blog/index.html", "v1")
	if rs, _ := s.Releases(); !slices.Equal(rs, []string{rev(1)}) {
		t.Fatalf("Releases() = %v, want only %s", rs, rev(1))
	}
}

func TestCurrentPreviousAndReleases(t *testing.T) {
	t.Parallel()
	s := openStore(t, Options{})
	if cur, err := s.Current(); cur != "" || err != nil {
		t.Fatalf("Current of an empty store = %q, %v", cur, err)
	}
	repo := t.TempDir()
	writeRepo(t, repo, map[string]string{"sites/blog/index.html": "v"})
	for i := 1; i <= 3; i++ {
		if _, err := prepare(t, s, rev(i), repo, blogSpec); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond) // distinct completion times
	}
	rs, err := s.Releases()
	if err != nil || !slices.Equal(rs, []string{rev(3), rev(2), rev(1)}) {
		t.Fatalf("Releases() = %v, %v; want newest first", rs, err)
	}
	for _, r := range []string{rev(2), rev(3), rev(3), rev(1)} {
		if err := s.Switch(r); err != nil {
			t.Fatal(err)
		}
	}
	cur, _ := s.Current()
	prev, _ := s.Previous()
	if cur != rev(1) || prev != rev(3) {
		t.Fatalf("current %s previous %s, want %s and %s", cur, prev, rev(1), rev(3))
	}
	if target, _ := os.Readlink(s.LiveDir()); target != "releases/"+rev(1) {
		t.Fatalf("current -> %q, want a relative link to releases/%s", target, rev(1))
	}
}

// A reader resolving paths through S/current, as nginx does, never finds it
// missing while releases are switched back and forth.
func TestSwitchIsAtomicForReaders(t *testing.T) {
	t.Parallel()
	s := openStore(t, Options{})
	repo := t.TempDir()
	writeRepo(t, repo, map[string]string{"sites/blog/index.html": "same"})
	live(t, s, rev(1), repo, blogSpec)
	if _, err := prepare(t, s, rev(2), repo, blogSpec); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var reads, misses atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	wg.Go(func() {
		p := filepath.Join(s.LiveDir(), "sites/blog/index.html")
		for !stop.Load() {
			if _, err := os.Stat(p); err != nil {
				misses.Add(1)
				firstErr.CompareAndSwap(nil, err)
			}
			reads.Add(1)
		}
	})
	for i := range 200 {
		if err := s.Switch(rev(1 + i%2)); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if misses.Load() > 0 {
		t.Fatalf("%d of %d reads failed during 200 switches, first: %v", misses.Load(), reads.Load(), firstErr.Load())
	}
	t.Logf("%d reads during 200 switches, none failed", reads.Load())
}

func TestPruneKeepsWhatItMust(t *testing.T) {
	t.Parallel()
	s := openStore(t, Options{})
	repo := t.TempDir()
	writeRepo(t, repo, map[string]string{"sites/blog/index.html": "v"})
	for i := 1; i <= 6; i++ {
		if _, err := prepare(t, s, rev(i), repo, blogSpec); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	// Live is rev 2, switched from rev 1; rev 6 and 5 are the newest.
	for _, r := range []string{rev(1), rev(2)} {
		if err := s.Switch(r); err != nil {
			t.Fatal(err)
		}
	}
	// A crash left an incomplete release behind.
	writeRepo(t, s.ReleaseDir(rev(7)), map[string]string{"sites/blog/index.html": "half"})
	if err := s.Prune(context.Background(), 2); err != nil {
		t.Fatal(err)
	}
	rs, _ := s.Releases()
	slices.Sort(rs)
	if want := []string{rev(1), rev(2), rev(5), rev(6)}; !slices.Equal(rs, want) {
		t.Fatalf("after Prune(2): %v, want %v", rs, want)
	}
	for _, r := range []string{rev(3), rev(4), rev(7)} {
		if _, err := os.Lstat(s.ReleaseDir(r)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s survived Prune: %v", r, err)
		}
	}
	if des, _ := os.ReadDir(filepath.Join(s.Dir(), "trash")); len(des) != 0 {
		t.Errorf("trash not emptied: %d entries", len(des))
	}
	assertLive(t, s, rev(2), "sites/blog/index.html", "v")

	// keep 0 still keeps the live release and the one it replaced.
	if err := s.Prune(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	rs, _ = s.Releases()
	slices.Sort(rs)
	if want := []string{rev(1), rev(2)}; !slices.Equal(rs, want) {
		t.Fatalf("after Prune(0): %v, want %v", rs, want)
	}
	wantErr(t, s.Prune(context.Background(), -1), "negative")
}
