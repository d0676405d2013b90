package artifacts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/drover-dev/drover/spec"
)

// ContentIDFS is a config directory that can name a file's content without
// reading it: gitsource's tree answers with the git blob id. When fsys has
// it, Prepare reads only the files whose content id is not in the base
// release.
type ContentIDFS interface {
	fs.FS
	ContentID(name string) (string, error)
}

const dirMode fs.FileMode = 0o755

// fileMode is the mode a release gives a file whose source mode is m: git's
// two modes, so nginx and the worker's user can read every file.
func fileMode(m fs.FileMode) fs.FileMode {
	if m&0o111 != 0 {
		return 0o755
	}
	return 0o644
}

// copyWorkers is how many files are linked or copied at once.
const copyWorkers = 4

// counts tallies how files reached a release.
type counts struct {
	linked, copied atomic.Int64
}

// materializeSource fills dir (which must not exist) with the repo
// directory src of fsys, linking from base what it can.
func materializeSource(ctx context.Context, fsys fs.FS, src, dir, treeDir string, base *linkIndex, n *counts) ([]entry, error) {
	type fileTask struct {
		name, rel, dst string
		mode           fs.FileMode
	}
	var entries []entry
	var files []fileTask
	err := fs.WalkDir(fsys, src, func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel := relTo(src, name)
		dst := filepath.Join(dir, filepath.FromSlash(rel))
		switch t := d.Type(); {
		case t.IsDir():
			if err := mkdir(dst); err != nil {
				return err
			}
			if rel != "" {
				entries = append(entries, entry{Path: rel, Kind: kindDir})
			}
		case t&fs.ModeSymlink != 0:
			target, err := fs.ReadLink(fsys, name)
			if err != nil {
				return err
			}
			if err := spec.CheckLink(name, target); err != nil {
				return err
			}
			if spec.CheckLink(rel, target) != nil {
				return fmt.Errorf("%s: symlink to %q leaves %s, so it would not point at the same file in the release", name, target, src)
			}
			if err := os.Symlink(target, dst); err != nil {
				return err
			}
			entries = append(entries, entry{Path: rel, Kind: kindSymlink, Target: target})
		case t.IsRegular():
			fi, err := d.Info()
			if err != nil {
				return err
			}
			files = append(files, fileTask{name, rel, dst, fileMode(fi.Mode())})
		default:
			return fmt.Errorf("%s is a %s: only files, directories and symlinks can be deployed", name, typeName(t))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("materialize %s: %w", src, err)
	}
	cid, _ := fsys.(ContentIDFS)
	fileEntries := make([]entry, len(files))
	err = forEach(ctx, len(files), copyWorkers, func(i int) error {
		t := files[i]
		e := entry{Path: t.rel, Kind: kindFile, Mode: t.mode}
		at := filepath.Join(filepath.FromSlash(treeDir), filepath.FromSlash(t.rel))
		if cid != nil {
			var err error
			if e.CID, err = cid.ContentID(t.name); err != nil {
				return fmt.Errorf("content id of %s: %w", t.name, err)
			}
		}
		if base != nil {
			var ok bool
			var err error
			if e.CID != "" {
				ok, err = linkFrom(base, &e, t.dst, contentKey("cid", e.CID, e.Mode), at)
			}
			// Without a content id known to the base, hash first, so
			// that an unchanged file is read once.
			if !ok && err == nil && (e.CID == "" || !base.allCID) {
				if e.Sum, err = hashFile(fsys, t.name); err == nil {
					ok, err = linkFrom(base, &e, t.dst, contentKey("sha256", e.Sum, e.Mode), at)
				}
			}
			if err != nil || ok {
				fileEntries[i] = e
				if ok {
					n.linked.Add(1)
				}
				return err
			}
		}
		in, err := fsys.Open(t.name)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(t.dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, t.mode)
		if err != nil {
			return err
		}
		if err := writeContent(out, in, &e); err != nil {
			return fmt.Errorf("copy %s: %w", t.name, err)
		}
		fileEntries[i] = e
		n.copied.Add(1)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("materialize %s: %w", src, err)
	}
	return append(entries, fileEntries...), nil
}

// relTo is name relative to the walk root src, "" for src itself.
func relTo(src, name string) string {
	if src == "." {
		if name == "." {
			return ""
		}
		return name
	}
	return strings.TrimPrefix(strings.TrimPrefix(name, src), "/")
}

func typeName(t fs.FileMode) string {
	switch {
	case t&fs.ModeNamedPipe != 0:
		return "fifo"
	case t&fs.ModeSocket != 0:
		return "socket"
	case t&fs.ModeCharDevice != 0:
		return "character device"
	case t&fs.ModeDevice != 0:
		return "device"
	}
	return fmt.Sprintf("special file (%v)", t)
}

func mkdir(dir string) error {
	if err := os.Mkdir(dir, dirMode); err != nil {
		return err
	}
	return os.Chmod(dir, dirMode) // whatever the umask
}

// linkFrom hard-links dst to an unchanged copy of the content key names in
// the base release (preferably the one at the OS path at, relative to the
// release), with e's mode, and fills in e from it. It reports false when
// there is none, or when the copy has too many links.
func linkFrom(base *linkIndex, e *entry, dst, key, at string) (bool, error) {
	p, c, ok := base.lookup(key, at)
	if !ok {
		return false, nil
	}
	if err := os.Link(p, dst); err != nil {
		if errors.Is(err, syscall.EMLINK) || errors.Is(err, syscall.EXDEV) {
			return false, nil
		}
		return false, err
	}
	e.Size, e.MTime = c.size, c.mtime
	if e.CID == "" {
		e.CID = c.cid
	}
	if e.Sum == "" {
		e.Sum = c.sum
	}
	return true, nil
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 128<<10); return &b }}

// writeContent copies r into out, sets e.Mode, records out's SHA-256,
// size and mtime in e, and closes out.
func writeContent(out *os.File, r io.Reader, e *entry) error {
	defer out.Close()
	h := sha256.New()
	bufp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bufp)
	// writerOnly hides out's ReadFrom, so that the copy uses the buffer.
	if _, err := io.CopyBuffer(writerOnly{out}, io.TeeReader(r, h), *bufp); err != nil {
		return err
	}
	if err := out.Chmod(e.Mode); err != nil {
		return err
	}
	fi, err := out.Stat()
	if err != nil {
		return err
	}
	e.Size, e.MTime, e.Sum = fi.Size(), fi.ModTime().UnixNano(), hex.EncodeToString(h.Sum(nil))
	return out.Close()
}

type writerOnly struct{ io.Writer }

func hashFile(fsys fs.FS, name string) (string, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	bufp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bufp)
	if _, err := io.CopyBuffer(h, f, *bufp); err != nil {
		return "", fmt.Errorf("hash %s: %w", name, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// relinkTree rebuilds a tree of the base release in dir from its entries,
// linking every file. It reports false, leaving dir partly filled, when a
// file of the base release is gone or was changed in place.
func relinkTree(ctx context.Context, base *linkIndex, t *tree, dir string, n *counts) ([]entry, bool, error) {
	if err := mkdir(dir); err != nil {
		return nil, false, err
	}
	entries := make([]entry, 0, len(t.Entries))
	// Entries are sorted by path, so a directory comes before its content.
	for _, e := range t.Entries {
		if err := ctx.Err(); err != nil {
			return nil, false, err
		}
		if e.Path == "" || path.Clean(e.Path) != e.Path || strings.HasPrefix(e.Path, "../") || e.Path == ".." {
			return nil, false, nil
		}
		dst := filepath.Join(dir, filepath.FromSlash(e.Path))
		switch e.Kind {
		case kindDir:
			if err := mkdir(dst); err != nil {
				return nil, false, err
			}
		case kindSymlink:
			if spec.CheckLink(e.Path, e.Target) != nil {
				return nil, false, nil
			}
			if err := os.Symlink(e.Target, dst); err != nil {
				return nil, false, err
			}
		case kindFile:
			key := contentKey("sha256", e.Sum, e.Mode)
			if e.CID != "" {
				key = contentKey("cid", e.CID, e.Mode)
			}
			ok, err := linkFrom(base, &e, dst, key, filepath.Join(filepath.FromSlash(t.Dir), filepath.FromSlash(e.Path)))
			if err != nil || !ok {
				return nil, false, err
			}
			n.linked.Add(1)
		default:
			return nil, false, nil
		}
		entries = append(entries, e)
	}
	return entries, true, nil
}

// forEach calls fn(i) for every i in [0, n) on up to workers goroutines,
// and returns the first error; no new call starts after an error or once
// ctx is done.
func forEach(ctx context.Context, n, workers int, fn func(i int) error) error {
	var (
		next  atomic.Int64
		stop  atomic.Bool
		once  sync.Once
		first error
		wg    sync.WaitGroup
	)
	fail := func(err error) {
		once.Do(func() { first = err })
		stop.Store(true)
	}
	for range min(workers, n) {
		wg.Go(func() {
			for !stop.Load() {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := ctx.Err(); err != nil {
					fail(err)
					return
				}
				if err := fn(i); err != nil {
					fail(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}
