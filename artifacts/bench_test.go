package artifacts

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/testsvc"
)

// benchSettle is how long the benchmark waits after writing its data and
// before timing: on ext4 without a journal, file creation stays slow for a
// while after mass deletes (TESTING.md), such as the previous run's cleanup.
// DROVER_BENCH_SETTLE=0s skips the wait for a quick look.
func benchSettle(b *testing.B) time.Duration {
	d := 61 * time.Second
	if v := os.Getenv("DROVER_BENCH_SETTLE"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			b.Fatalf("DROVER_BENCH_SETTLE: %v", err)
		}
	}
	return d
}

// BenchmarkMaterialize times the second release of a 10,000-file site
// (~100 MB, ~10 KB a file) in which 1% of the files changed, as Prepare
// builds it (hashing every file, and with content ids as from git), next to
// `rsync -a --link-dest` of the same trees, and reports the extra disk each
// used: the blocks of the new release's files that have a link count of 1.
func BenchmarkMaterialize(b *testing.B) {
	const files, perDir, changeEvery = 10_000, 100, 100
	rsync := testsvc.Bin(b, "rsync")
	root := b.TempDir()
	repo1, repo2 := filepath.Join(root, "repo1"), filepath.Join(root, "repo2")
	site := "sites/blog"
	var total int64
	for i := range files {
		p := filepath.Join(repo1, site, fmt.Sprintf("d%02d/f%04d.bin", i/perDir, i))
		size := 8<<10 + rand.N(4<<10)
		total += int64(size)
		writeRandom(b, p, size, uint64(i))
	}
	// The first revision was checked out an hour ago: without that, rsync's
	// quick check (size and mtime to the second) takes some changed files
	// of the same size for unchanged ones and links stale content.
	hourAgo := time.Now().Add(-time.Hour)
	err := filepath.WalkDir(repo1, func(p string, d fs.DirEntry, err error) error {
		if err == nil {
			err = os.Chtimes(p, hourAgo, hourAgo)
		}
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	run(b, "cp", "-al", repo1, repo2)
	for i := 0; i < files; i += changeEvery {
		p := filepath.Join(repo2, site, fmt.Sprintf("d%02d/f%04d.bin", i/perDir, i))
		fi, err := os.Stat(p)
		if err != nil {
			b.Fatal(err)
		}
		os.Remove(p) // a new file, as git checkout writes it
		writeRandom(b, p, int(fi.Size()), uint64(i)+1e9)
	}

	var opts Options
	var s *Store
	if testing.Verbose() {
		opts.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	s, err = Open(filepath.Join(root, "state"), opts)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	sp := parseSpec(b, blogSpec)
	if _, err := s.Prepare(ctx, rev(0), []byte(blogSpec), sp, os.DirFS(repo1)); err != nil {
		b.Fatal(err)
	}
	if err := s.Switch(rev(0)); err != nil {
		b.Fatal(err)
	}
	prev := filepath.Join(root, "rsync", "prev")
	if err := os.MkdirAll(filepath.Dir(prev), 0o755); err != nil {
		b.Fatal(err)
	}
	run(b, rsync, "-a", filepath.Join(repo1, site)+"/", prev+"/")

	// Content ids known up front, as git's tree objects give them.
	gitFS := newCIDFS(repo2)
	ids := map[string]string{}
	err = fs.WalkDir(gitFS, site, func(name string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			ids[name], err = gitFS.ContentID(name)
		}
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	gitFS.ids = ids

	syscall.Sync()
	if d := benchSettle(b); d > 0 {
		b.Logf("data written (%d files, %.1f MB); settling %s before timing", files, float64(total)/1e6, d)
		time.Sleep(d)
	}

	var hashed, cid, rs, rsSync time.Duration
	var r1, r2 *Release
	var rsyncDst string
	n := 0
	for b.Loop() {
		start := time.Now()
		r1, err = s.Prepare(ctx, rev(1000+2*n), []byte(blogSpec), sp, os.DirFS(repo2))
		if err != nil {
			b.Fatal(err)
		}
		hashed += time.Since(start)

		b.StopTimer()
		start = time.Now()
		r2, err = s.Prepare(ctx, rev(1001+2*n), []byte(blogSpec), sp, gitFS)
		if err != nil {
			b.Fatal(err)
		}
		cid += time.Since(start)

		rsyncDst = filepath.Join(root, "rsync", fmt.Sprint(n))
		start = time.Now()
		run(b, rsync, "-a", "--link-dest="+prev, filepath.Join(repo2, site)+"/", rsyncDst+"/")
		rs += time.Since(start)
		syscall.Sync()
		rsSync += time.Since(start)
		n++
		b.StartTimer()
	}
	b.StopTimer()
	for _, dir := range []string{r1.SiteDir("blog"), r2.SiteDir("blog")} {
		if bad := differing(b, filepath.Join(repo2, site), dir); bad > 0 {
			b.Fatalf("%s: %d files differ from the repo", dir, bad)
		}
	}
	if bad := differing(b, filepath.Join(repo2, site), rsyncDst); bad > 0 {
		b.Fatalf("rsync: %d files differ from the repo", bad)
	}
	b.ReportMetric(hashed.Seconds()/float64(n), "drover-s/release")
	b.ReportMetric(cid.Seconds()/float64(n), "drover-contentid-s/release")
	b.ReportMetric(rs.Seconds()/float64(n), "rsync-s/op")
	b.ReportMetric(rsSync.Seconds()/float64(n), "rsync+sync-s/op")
	b.ReportMetric(uniqueMB(b, r1.Dir), "drover-extra-MB")
	b.ReportMetric(uniqueMB(b, r2.Dir), "drover-contentid-extra-MB")
	b.ReportMetric(uniqueMB(b, rsyncDst), "rsync-extra-MB")
	b.ReportMetric(float64(total)/1e6, "site-MB")
}

// writeRandom writes size incompressible bytes, the same for the same seed.
func writeRandom(b *testing.B, p string, size int, seed uint64) {
	var key [32]byte
	key[0], key[1], key[2], key[3], key[4] = byte(seed), byte(seed>>8), byte(seed>>16), byte(seed>>24), byte(seed>>32)
	data := make([]byte, size)
	rand.NewChaCha8(key).Read(data)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		b.Fatal(err)
	}
}

func run(b *testing.B, argv ...string) {
	b.Helper()
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		b.Fatalf("%v: %v: %s", argv, err, out)
	}
}

// uniqueMB is the disk used by files under dir that no other tree shares.
func uniqueMB(b *testing.B, dir string) float64 {
	var blocks int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Nlink == 1 {
			blocks += st.Blocks
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return float64(blocks*512) / 1e6
}

// differing counts the files under want whose content differs in got.
func differing(b *testing.B, want, got string) int {
	bad := 0
	err := filepath.WalkDir(want, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		a, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		c, err := os.ReadFile(filepath.Join(got, rel))
		if err != nil || !bytes.Equal(a, c) {
			bad++
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return bad
}
