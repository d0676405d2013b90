package gitsource

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

var (
	// ErrSubmodule is returned for a path that is, goes through, or lists a
	// submodule (gitlink): drover does not follow them.
	ErrSubmodule = errors.New("submodule (gitlink) not supported")
	// ErrSymlinkEscapes is returned when following a symbolic link would
	// leave the TreeFS root: absolute targets, or ".." past the root.
	ErrSymlinkEscapes = errors.New("symbolic link leaves the tree")
)

var (
	errNotDir    = errors.New("not a directory")
	errIsDir     = errors.New("is a directory")
	errLinkLoop  = errors.New("too many levels of symbolic links")
	errNotFile   = errors.New("not a regular file")
	errClosedFS  = errors.New("repository closed")
	errBadObject = errors.New("unsupported tree entry mode")
)

// maxLinks bounds the symbolic links followed in one lookup, as Linux does.
const maxLinks = 40

// TreeFS is a read-only view of one revision's tree, rooted at a directory
// of it, read from the object store without a worktree. It implements
// fs.FS, fs.ReadDirFS, fs.ReadFileFS, fs.StatFS and fs.ReadLinkFS.
//
//   - Modes: directories fs.ModeDir|0755; regular files 0644, or 0755 when
//     git records them executable; symbolic links fs.ModeSymlink|0777.
//     ModTime is the commit's committer time for every entry.
//   - Open, ReadFile, ReadDir and Stat follow symbolic links whose target
//     stays inside the TreeFS root; a target is resolved lexically against
//     the link's directory, like path.Join. A link to an absolute path, or
//     one that climbs above the root, fails with ErrSymlinkEscapes. Lstat
//     and ReadLink do not follow; a consumer copying the tree uses them to
//     recreate links as links.
//   - A path that is or goes through a submodule, and a ReadDir of a
//     directory that holds one, fail with ErrSubmodule naming its path.
//   - Every call, including each Read of an open file, takes the Repo's
//     lock: safe for concurrent use, one call at a time.
//   - It reads the store as it is at the call: objects of a revision stay
//     until a later Fetch replaces the store (see the package doc).
//
// It caches the directories it has read; drop it when done.
type TreeFS struct {
	r       *Repo
	rev     plumbing.Hash
	root    plumbing.Hash // tree of the FS root
	prefix  string        // the root's path in the commit, for messages
	modTime time.Time
	trees   map[plumbing.Hash]*dirTree // guarded by r.mu
}

type dirTree struct {
	entries []object.TreeEntry
	byName  map[string]int
}

// node is one resolved tree entry.
type node struct {
	name string // base name; "." for the root
	mode filemode.FileMode
	hash plumbing.Hash
}

func (n node) isDir() bool { return n.mode == filemode.Dir }

// Rev returns the commit id the TreeFS reads.
func (t *TreeFS) Rev() string { return t.rev.String() }

// lock takes the Repo's lock and returns the store; the caller unlocks.
func (t *TreeFS) lock() (*filesystem.Storage, error) {
	t.r.mu.Lock()
	if t.r.closed || t.r.st == nil {
		return nil, errClosedFS
	}
	return t.r.st, nil
}

func (t *TreeFS) unlock() { t.r.mu.Unlock() }

func (t *TreeFS) tree(st *filesystem.Storage, h plumbing.Hash) (*dirTree, error) {
	if d, ok := t.trees[h]; ok {
		return d, nil
	}
	tr, err := object.GetTree(st, h)
	if err != nil {
		return nil, fmt.Errorf("read tree %s: %w", h, err)
	}
	d := &dirTree{entries: tr.Entries, byName: make(map[string]int, len(tr.Entries))}
	for i, e := range tr.Entries {
		d.byName[e.Name] = i
	}
	t.trees[h] = d
	return d, nil
}

// resolve finds name below the root; follow says whether a symbolic link
// as the last element is followed (links before it always are). The
// caller holds the lock.
func (t *TreeFS) resolve(op, name string, follow bool) (node, error) {
	st := t.r.st
	if st == nil || t.r.closed {
		return node{}, &fs.PathError{Op: op, Path: name, Err: errClosedFS}
	}
	if !fs.ValidPath(name) {
		return node{}, &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	fail := func(err error) (node, error) { return node{}, &fs.PathError{Op: op, Path: name, Err: err} }
	rest := name
	links := 0
restart:
	cur := node{name: ".", mode: filemode.Dir, hash: t.root}
	var walked []string
	for rest != "." && rest != "" {
		elem, more, _ := strings.Cut(rest, "/")
		if !cur.isDir() {
			return fail(errNotDir)
		}
		d, err := t.tree(st, cur.hash)
		if err != nil {
			return fail(err)
		}
		i, ok := d.byName[elem]
		if !ok {
			return fail(fs.ErrNotExist)
		}
		e := d.entries[i]
		walked = append(walked, elem)
		switch e.Mode {
		case filemode.Submodule:
			return fail(fmt.Errorf("%w at %s", ErrSubmodule, path.Join(t.prefix, path.Join(walked...))))
		case filemode.Symlink:
			if more == "" && !follow {
				return node{name: elem, mode: e.Mode, hash: e.Hash}, nil
			}
			if links++; links > maxLinks {
				return fail(errLinkLoop)
			}
			target, err := readBlob(st, e.Hash, 4096)
			if err != nil {
				return fail(err)
			}
			if path.IsAbs(target) {
				return fail(fmt.Errorf("%w: %s -> %s", ErrSymlinkEscapes, path.Join(walked...), target))
			}
			next := path.Join(path.Join(walked[:len(walked)-1]...), target, more)
			if next == ".." || strings.HasPrefix(next, "../") {
				return fail(fmt.Errorf("%w: %s -> %s", ErrSymlinkEscapes, path.Join(walked...), target))
			}
			rest = next
			goto restart
		}
		cur = node{name: elem, mode: e.Mode, hash: e.Hash}
		rest = more
	}
	return cur, nil
}

func readBlob(st *filesystem.Storage, h plumbing.Hash, limit int64) (string, error) {
	o, err := st.EncodedObject(plumbing.BlobObject, h)
	if err != nil {
		return "", fmt.Errorf("read blob %s: %w", h, err)
	}
	if limit > 0 && o.Size() > limit {
		return "", fmt.Errorf("read blob %s: %d bytes, more than %d", h, o.Size(), limit)
	}
	rd, err := o.Reader()
	if err != nil {
		return "", fmt.Errorf("read blob %s: %w", h, err)
	}
	defer rd.Close()
	b, err := io.ReadAll(rd)
	if err != nil {
		return "", fmt.Errorf("read blob %s: %w", h, err)
	}
	return string(b), nil
}

func fileMode(m filemode.FileMode) (fs.FileMode, error) {
	switch m {
	case filemode.Dir:
		return fs.ModeDir | 0o755, nil
	case filemode.Regular, filemode.Deprecated:
		return 0o644, nil
	case filemode.Executable:
		return 0o755, nil
	case filemode.Symlink:
		return fs.ModeSymlink | 0o777, nil
	case filemode.Submodule:
		return 0, ErrSubmodule
	}
	return 0, fmt.Errorf("%w: %o", errBadObject, uint32(m))
}

// info describes n; the caller holds the lock.
func (t *TreeFS) info(st *filesystem.Storage, n node) (*fileInfo, error) {
	mode, err := fileMode(n.mode)
	if err != nil {
		return nil, err
	}
	fi := &fileInfo{name: n.name, mode: mode, modTime: t.modTime}
	if !n.isDir() {
		if fi.size, err = st.EncodedObjectSize(n.hash); err != nil {
			return nil, fmt.Errorf("read blob %s: %w", n.hash, err)
		}
	}
	return fi, nil
}

// stat is Stat (follow) or Lstat.
func (t *TreeFS) stat(op, name string, follow bool) (fs.FileInfo, error) {
	st, err := t.lock()
	defer t.unlock()
	if err != nil {
		return nil, &fs.PathError{Op: op, Path: name, Err: err}
	}
	n, err := t.resolve(op, name, follow)
	if err != nil {
		return nil, err
	}
	fi, err := t.info(st, n)
	if err != nil {
		return nil, &fs.PathError{Op: op, Path: name, Err: err}
	}
	return fi, nil
}

// Stat describes the named file, following symbolic links.
func (t *TreeFS) Stat(name string) (fs.FileInfo, error) { return t.stat("stat", name, true) }

// Lstat describes the named file; a symbolic link is described itself.
func (t *TreeFS) Lstat(name string) (fs.FileInfo, error) { return t.stat("lstat", name, false) }

// ReadLink returns the target of the named symbolic link, as stored.
func (t *TreeFS) ReadLink(name string) (string, error) {
	st, err := t.lock()
	defer t.unlock()
	if err != nil {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: err}
	}
	n, err := t.resolve("readlink", name, false)
	if err != nil {
		return "", err
	}
	if n.mode != filemode.Symlink {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: fs.ErrInvalid}
	}
	target, err := readBlob(st, n.hash, 4096)
	if err != nil {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: err}
	}
	return target, nil
}

// ContentID returns the git blob id of the named regular file without
// reading it: equal ids mean equal content (and the executable bit is in
// Lstat's mode). It does not follow symbolic links.
func (t *TreeFS) ContentID(name string) (string, error) {
	_, err := t.lock()
	defer t.unlock()
	if err != nil {
		return "", &fs.PathError{Op: "contentid", Path: name, Err: err}
	}
	n, err := t.resolve("contentid", name, false)
	if err != nil {
		return "", err
	}
	if n.mode != filemode.Regular && n.mode != filemode.Executable && n.mode != filemode.Deprecated {
		return "", &fs.PathError{Op: "contentid", Path: name, Err: errNotFile}
	}
	return n.hash.String(), nil
}

// ReadFile returns the content of the named file.
func (t *TreeFS) ReadFile(name string) ([]byte, error) {
	st, err := t.lock()
	defer t.unlock()
	if err != nil {
		return nil, &fs.PathError{Op: "readfile", Path: name, Err: err}
	}
	n, err := t.resolve("readfile", name, true)
	if err != nil {
		return nil, err
	}
	if n.isDir() {
		return nil, &fs.PathError{Op: "readfile", Path: name, Err: errIsDir}
	}
	s, err := readBlob(st, n.hash, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "readfile", Path: name, Err: err}
	}
	return []byte(s), nil
}

// ReadDir lists the named directory, sorted by name.
func (t *TreeFS) ReadDir(name string) ([]fs.DirEntry, error) {
	_, err := t.lock()
	defer t.unlock()
	if err != nil {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: err}
	}
	n, err := t.resolve("readdir", name, true)
	if err != nil {
		return nil, err
	}
	return t.readDir(name, n)
}

// readDir lists directory n found at name; the caller holds the lock.
func (t *TreeFS) readDir(name string, n node) ([]fs.DirEntry, error) {
	if !n.isDir() {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: errNotDir}
	}
	d, err := t.tree(t.r.st, n.hash)
	if err != nil {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: err}
	}
	list := make([]fs.DirEntry, 0, len(d.entries))
	for _, e := range d.entries {
		mode, err := fileMode(e.Mode)
		if errors.Is(err, ErrSubmodule) {
			err = fmt.Errorf("%w at %s", ErrSubmodule, path.Join(t.prefix, name, e.Name))
		}
		if err != nil {
			return nil, &fs.PathError{Op: "readdir", Path: name, Err: err}
		}
		list = append(list, &dirEntry{t: t, n: node{name: e.Name, mode: e.Mode, hash: e.Hash}, typ: mode.Type()})
	}
	slices.SortFunc(list, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return list, nil
}

// Open opens the named file or directory, following symbolic links.
func (t *TreeFS) Open(name string) (fs.File, error) {
	st, err := t.lock()
	defer t.unlock()
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	n, err := t.resolve("open", name, true)
	if err != nil {
		return nil, err
	}
	fi, err := t.info(st, n)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	if n.isDir() {
		return &dirFile{t: t, name: name, n: n, fi: fi}, nil
	}
	return &blobFile{t: t, name: name, n: n, fi: fi}, nil
}

type fileInfo struct {
	name    string
	size    int64
	mode    fs.FileMode
	modTime time.Time
}

func (fi *fileInfo) Name() string       { return fi.name }
func (fi *fileInfo) Size() int64        { return fi.size }
func (fi *fileInfo) Mode() fs.FileMode  { return fi.mode }
func (fi *fileInfo) ModTime() time.Time { return fi.modTime }
func (fi *fileInfo) IsDir() bool        { return fi.mode.IsDir() }
func (fi *fileInfo) Sys() any           { return nil }

type dirEntry struct {
	t   *TreeFS
	n   node
	typ fs.FileMode
}

func (e *dirEntry) Name() string               { return e.n.name }
func (e *dirEntry) IsDir() bool                { return e.typ.IsDir() }
func (e *dirEntry) Type() fs.FileMode          { return e.typ }
func (e *dirEntry) String() string             { return fs.FormatDirEntry(e) }
func (e *dirEntry) Info() (fs.FileInfo, error) { return e.info() }

func (e *dirEntry) info() (fs.FileInfo, error) {
	st, err := e.t.lock()
	defer e.t.unlock()
	if err != nil {
		return nil, err
	}
	return e.t.info(st, e.n)
}

// blobFile is an open file; each Read takes the Repo's lock, so large
// blobs stream from the pack without being held in memory.
type blobFile struct {
	t    *TreeFS
	name string
	n    node
	fi   *fileInfo
	rd   io.ReadCloser
	done bool
}

func (f *blobFile) Stat() (fs.FileInfo, error) { return f.fi, nil }

func (f *blobFile) Read(p []byte) (int, error) {
	st, err := f.t.lock()
	defer f.t.unlock()
	if f.done {
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: fs.ErrClosed}
	}
	if err != nil {
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: err}
	}
	if f.rd == nil {
		o, err := st.EncodedObject(plumbing.BlobObject, f.n.hash)
		if err != nil {
			return 0, &fs.PathError{Op: "read", Path: f.name, Err: err}
		}
		if f.rd, err = o.Reader(); err != nil {
			return 0, &fs.PathError{Op: "read", Path: f.name, Err: err}
		}
	}
	n, err := f.rd.Read(p)
	if err != nil && err != io.EOF {
		err = &fs.PathError{Op: "read", Path: f.name, Err: err}
	}
	return n, err
}

func (f *blobFile) Close() error {
	f.t.r.mu.Lock()
	defer f.t.r.mu.Unlock()
	if f.done {
		return &fs.PathError{Op: "close", Path: f.name, Err: fs.ErrClosed}
	}
	f.done = true
	if f.rd != nil {
		return f.rd.Close()
	}
	return nil
}

type dirFile struct {
	t       *TreeFS
	name    string
	n       node
	fi      *fileInfo
	entries []fs.DirEntry
	read    bool
	off     int
}

func (d *dirFile) Stat() (fs.FileInfo, error) { return d.fi, nil }

func (d *dirFile) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.name, Err: errIsDir}
}

func (d *dirFile) Close() error { return nil }

func (d *dirFile) ReadDir(count int) ([]fs.DirEntry, error) {
	if !d.read {
		_, err := d.t.lock()
		if err == nil {
			d.entries, err = d.t.readDir(d.name, d.n)
		}
		d.t.unlock()
		if err != nil {
			return nil, err
		}
		d.read = true
	}
	rest := d.entries[d.off:]
	if count <= 0 {
		d.off = len(d.entries)
		return rest, nil
	}
	if len(rest) == 0 {
		return nil, io.EOF
	}
	count = min(count, len(rest))
	d.off += count
	return rest[:count:count], nil
}

var (
	_ fs.ReadDirFS   = (*TreeFS)(nil)
	_ fs.ReadFileFS  = (*TreeFS)(nil)
	_ fs.StatFS      = (*TreeFS)(nil)
	_ fs.ReadLinkFS  = (*TreeFS)(nil)
	_ fs.ReadDirFile = (*dirFile)(nil)
)
