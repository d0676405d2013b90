package artifacts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"time"

	"github.com/drover-dev/drover/internal/atomicfile"
	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/spec"
	"golang.org/x/sys/unix"
)

// Prepare builds the release of rev from its spec (sp, parsed from
// specBytes) and its config directory fsys, and returns it complete. fsys
// must implement fs.ReadLinkFS; it may implement ContentIDFS.
//
// Each site and worker bundle is materialized from its source directory or
// its pinned tarball, sharing unchanged files with the base release (see the
// package doc), then each worker's install step runs in its new bundle
// directory, bounded by its InstallTimeout; a failed step's output is in the
// error. A release that is already complete is returned as it is. Nothing
// live changes: the release is only published by Switch.
func (s *Store) Prepare(ctx context.Context, rev string, specBytes []byte, sp *spec.Spec, fsys fs.FS) (*Release, error) {
	if err := checkRev(rev); err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	if sp == nil {
		return nil, fmt.Errorf("prepare %s: no spec", rev)
	}
	// Nothing in drover waits forever: a stuck download or install step
	// ends here, and the revision is retried later.
	ctx, cancel := context.WithTimeout(ctx, s.opts.PrepareTimeout)
	defer cancel()
	select {
	case s.prep <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("prepare %s: %w", rev, ctx.Err())
	}
	defer func() { <-s.prep }()
	if r, err := s.Release(rev); err == nil {
		return r, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	if err := spec.CheckTree(spec.FileName, sp, fsys); err != nil {
		return nil, fmt.Errorf("prepare %s: %w", rev, err)
	}
	start := time.Now()
	b, done, err := s.startBuild(rev)
	if err != nil {
		return nil, fmt.Errorf("prepare %s: %w", rev, err)
	}
	defer done()
	r, err := b.run(ctx, specBytes, sp, fsys)
	if err != nil {
		s.log.Warn("release not prepared", "rev", rev, "took", time.Since(start), "err", err)
		return nil, fmt.Errorf("prepare %s: %w", rev, err)
	}
	s.log.Info("prepared release", "rev", rev, "took", time.Since(start),
		"linked", b.n.linked.Load(), "copied", b.n.copied.Load(), "base", b.baseRev, "sync", b.synced)
	return r, nil
}

// build is one Prepare in progress.
type build struct {
	s       *Store
	rev     string
	dir     string
	baseRev string
	base    *linkIndex
	n       counts
	m       manifest
	synced  time.Duration // how long the final sync took
}

// startBuild moves a leftover of rev aside, picks the base release (the
// live one, else the newest complete one) and marks both busy for Prune.
func (s *Store) startBuild(rev string) (*build, func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	dir := s.ReleaseDir(rev)
	cur, err := s.Current()
	if err != nil {
		return nil, nil, err
	}
	if _, err := os.Lstat(dir); err == nil {
		prev, err := s.Previous()
		if err != nil {
			return nil, nil, err
		}
		if rev == cur || rev == prev {
			return nil, nil, fmt.Errorf("%s is linked from %s but has no %s: refusing to rebuild a live release in place", dir, s.dir, markerFile)
		}
		s.log.Warn("rebuilding incomplete release left by a crash", "rev", rev, "dir", dir)
		if err := s.moveAside(dir); err != nil {
			return nil, nil, err
		}
	}
	b := &build{s: s, rev: rev, dir: dir, m: manifest{Version: manifestVersion, Rev: rev}}
	var digest string
	rs, err := s.complete()
	if err != nil {
		return nil, nil, err
	}
	for i, r := range rs {
		if r.rev == cur || (i == 0 && b.baseRev == "") {
			b.baseRev, digest = r.rev, r.m.Manifest
		}
	}
	paths := []string{layout.ReleasesDir + "/" + rev}
	if b.baseRev != "" {
		paths = append(paths, layout.ReleasesDir+"/"+b.baseRev)
		baseDir := s.ReleaseDir(b.baseRev)
		if m, err := readManifest(baseDir, digest); err != nil {
			s.log.Warn("copying every file: base release unreadable", "rev", rev, "base", b.baseRev, "err", err)
		} else {
			b.base = newLinkIndex(baseDir, m)
		}
	}
	return b, s.useLocked(paths...), nil
}

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$`)

func (b *build) run(ctx context.Context, specBytes []byte, sp *spec.Spec, fsys fs.FS) (*Release, error) {
	for _, d := range []string{b.dir, filepath.Join(b.dir, "sites"), filepath.Join(b.dir, "workers")} {
		if err := mkdir(d); err != nil {
			return nil, err
		}
	}
	specFile := filepath.Join(b.dir, spec.FileName)
	if err := os.WriteFile(specFile, specBytes, 0o644); err != nil {
		return nil, fmt.Errorf("write %s: %w", specFile, err)
	}
	for _, site := range sp.Sites {
		if _, err := b.tree(ctx, fsys, "sites", site.Name, site.Source, site.Artifact, nil); err != nil {
			return nil, fmt.Errorf("site %s: %w", site.Name, err)
		}
	}
	reused := map[string]bool{}
	for _, w := range sp.Workers {
		r, err := b.tree(ctx, fsys, "workers", w.Name, w.Source, w.Artifact, w.Install)
		if err != nil {
			return nil, fmt.Errorf("worker %s: %w", w.Name, err)
		}
		reused[w.Name] = r
	}
	// The migrations go with the release, so that `drover migrate` can
	// read the live revision's files without the git server.
	if sp.Migrations != nil {
		if err := mkdir(filepath.Join(b.dir, "db")); err != nil {
			return nil, err
		}
		if _, err := b.tree(ctx, fsys, "db", "migrations", sp.Migrations.Dir, nil, nil); err != nil {
			return nil, fmt.Errorf("migrations: %w", err)
		}
	}
	for _, w := range sp.Workers {
		if reused[w.Name] {
			continue
		}
		if err := b.install(ctx, &w); err != nil {
			return nil, err
		}
	}
	digest, err := writeManifest(b.dir, &b.m)
	if err != nil {
		return nil, err
	}
	// One syncfs instead of an fsync per file: a release is marked complete
	// only once everything in it is on disk.
	start := time.Now()
	if err := syncFS(b.dir); err != nil {
		return nil, err
	}
	b.synced = time.Since(start)
	mk := marker{Rev: b.rev, Completed: time.Now().UTC(), Manifest: digest}
	for _, t := range b.m.Trees {
		if t.Artifact != "" && !slices.Contains(mk.Artifacts, t.Artifact) {
			mk.Artifacts = append(mk.Artifacts, t.Artifact)
		}
	}
	data, err := json.Marshal(mk)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(filepath.Join(b.dir, markerFile), data, 0o644); err != nil {
		return nil, err
	}
	return &Release{Rev: b.rev, Dir: b.dir, Completed: mk.Completed}, nil
}

// tree materializes one site or worker directory of the release: kind is
// "sites" or "workers". A tree with an install step gets fresh copies of
// every file, so that its step cannot change a file of another release;
// then, when the base release has the same tree installed by the same
// step, that whole installed tree is linked instead and tree reports
// reused: the step need not run again.
func (b *build) tree(ctx context.Context, fsys fs.FS, kind, name, src string, a *spec.Artifact, install []string) (reused bool, err error) {
	if !nameRE.MatchString(name) {
		return false, fmt.Errorf("name %q is not 1-42 lowercase letters, digits and dashes", name)
	}
	installed := len(install) > 0
	t := tree{Dir: kind + "/" + name, Installed: installed, Install: install}
	dst := filepath.Join(b.dir, kind, name)
	base := b.base
	if installed {
		base = nil
	}
	switch {
	case src != "":
		t.Source = src
		t.Entries, err = materializeSource(ctx, fsys, src, dst, t.Dir, base, &b.n)
	case a != nil:
		t.Artifact, t.Strip = a.SHA256, a.StripComponents
		t.Entries, err = b.artifact(ctx, a, dst, base)
	default:
		err = errors.New("neither a source nor an artifact")
	}
	if err != nil {
		return false, err
	}
	if err := checkLinks(dst); err != nil {
		return false, err
	}
	if installed {
		if reused, err = b.reuseInstalled(ctx, &t, dst); err != nil {
			return false, err
		}
	}
	b.m.Trees = append(b.m.Trees, t)
	return reused, nil
}

// reuseInstalled replaces the freshly materialized installed tree t at dst
// by hardlinks of the base release's installed tree when both came from the
// same files and run the same install step: an unchanged worker keeps the
// very files (the same inodes) it runs from, so its instances need no
// restart (units compares bundles by inode), and its install step (npm ci,
// say) does not run again. The step is assumed to give the same result for
// the same input, as build caches keyed by a lockfile do; change anything
// in the bundle or the step to run it again.
func (b *build) reuseInstalled(ctx context.Context, t *tree, dst string) (bool, error) {
	if b.base == nil {
		return false, nil
	}
	bt := b.base.installed[t.Dir]
	if bt == nil || !slices.Equal(bt.Install, t.Install) || bt.Source != t.Source || bt.Artifact != t.Artifact ||
		bt.Strip != t.Strip || !sameContent(bt.Entries, t.Entries) {
		return false, nil
	}
	src := filepath.Join(b.base.dir, filepath.FromSlash(bt.Dir))
	tmp := dst + ".reuse"
	n, err := linkTree(ctx, src, tmp)
	if err != nil {
		b.s.log.Warn("installing again: the base release's installed bundle cannot be linked", "rev", b.rev, "tree", t.Dir, "err", err)
		_ = os.RemoveAll(tmp)
		return false, nil
	}
	if err := b.s.moveAside(dst); err != nil {
		return false, err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return false, fmt.Errorf("reuse %s: %w", t.Dir, err)
	}
	b.n.linked.Add(n)
	b.s.log.Info("reused the installed bundle of the base release", "rev", b.rev, "tree", t.Dir, "base", b.baseRev, "files", n)
	return true, nil
}

// sameContent reports whether two trees' entries name the same files with
// the same content, modes and link targets (not the same write times).
func sameContent(a, b []entry) bool {
	return slices.EqualFunc(a, b, func(x, y entry) bool {
		same := x.Path == y.Path && x.Kind == y.Kind && x.Mode == y.Mode && x.Size == y.Size && x.Target == y.Target
		switch {
		case !same:
			return false
		case x.CID != "" && y.CID != "":
			return x.CID == y.CID
		default:
			return x.Sum != "" && x.Sum == y.Sum
		}
	})
}

// linkTree recreates the directory tree src at dst (which must not exist)
// with every regular file hardlinked and every symlink copied; anything
// else is an error. It returns how many files it linked.
func linkTree(ctx context.Context, src, dst string) (int64, error) {
	var n int64
	// Directories get their modes once their contents are in: a read-only
	// directory would refuse them (to a user other than root).
	type dirMode struct {
		path string
		mode fs.FileMode
	}
	var dirs []dirMode
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			dirs = append(dirs, dirMode{to, info.Mode().Perm()})
			return os.Mkdir(to, 0o700)
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(target, to)
		case d.Type().IsRegular():
			n++
			return os.Link(p, to)
		default:
			return fmt.Errorf("%s: not a file, directory or symlink", p)
		}
	})
	for i := len(dirs) - 1; i >= 0 && err == nil; i-- {
		err = os.Chmod(dirs[i].path, dirs[i].mode)
	}
	return n, err
}

// artifact relinks the tree of the same tarball from the base release, or
// extracts the tarball, downloading it first unless it is in the cache.
func (b *build) artifact(ctx context.Context, a *spec.Artifact, dst string, base *linkIndex) ([]entry, error) {
	defer b.s.use("cache/" + a.SHA256)()
	if bt := base.treeOf(a); bt != nil {
		entries, ok, err := relinkTree(ctx, base, bt, dst, &b.n)
		if err != nil {
			return nil, fmt.Errorf("reuse %s from release %s: %w", bt.Dir, b.baseRev, err)
		}
		if ok {
			return entries, nil
		}
		b.s.log.Warn("files of the base release changed; extracting the artifact again", "rev", b.rev, "tree", bt.Dir)
		if err := b.s.moveAside(dst); err != nil {
			return nil, err
		}
	}
	file, err := b.s.fetch(ctx, a)
	if err != nil {
		return nil, err
	}
	label := a.URL
	if u, err := url.Parse(a.URL); err == nil {
		label = u.Redacted()
	}
	lim := limits{maxBytes: b.s.opts.MaxExtractedBytes, maxFiles: b.s.opts.MaxFiles}
	return extract(ctx, file, label, dst, a.StripComponents, lim, &b.n)
}

// treeOf finds the tree made from the same tarball in the base release.
func (ix *linkIndex) treeOf(a *spec.Artifact) *tree {
	if ix == nil {
		return nil
	}
	for _, t := range ix.trees {
		if t.Artifact == a.SHA256 && t.Strip == a.StripComponents {
			return t
		}
	}
	return nil
}

// syncFS flushes the whole filesystem that holds dir.
func syncFS(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
