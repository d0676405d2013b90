package artifacts

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/drover-dev/drover/spec"
)

// maxImpliedDirs is how many directories an archive may imply (make
// without listing them) beyond two per file.
const maxImpliedDirs = 256

// limits bound what one tarball may extract to.
type limits struct {
	maxBytes int64
	maxFiles int
}

// extract unpacks the tar (or gzipped tar) archive into dir, which must not
// exist, stripping strip leading path elements from every name, and
// returns the entries it wrote. label names the archive in errors.
//
// Every name is checked before anything is written for it, and all writes
// go through an os.Root of dir, so that no entry lands outside dir even if
// a check were missed.
func extract(ctx context.Context, archive, label, dir string, strip int, lim limits, n *counts) ([]entry, error) {
	f, err := os.Open(archive)
	if err != nil {
		return nil, fmt.Errorf("extract %s: %w", label, err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 64<<10)
	var r io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("extract %s: %w", label, err)
		}
		defer zr.Close()
		r = zr
	}
	// Every byte of the tar stream counts, whatever it holds: file data,
	// data of entries stripped away, headers, padding.
	r = &streamLimit{r: r, left: streamBudget(lim)}
	if err := mkdir(dir); err != nil {
		return nil, fmt.Errorf("extract %s: %w", label, err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("extract %s: %w", label, err)
	}
	defer root.Close()
	x := &extraction{root: root, kinds: map[string]string{}, files: map[string]entry{}}
	tr := tar.NewReader(r)
	var total int64
	count := 0
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("extract %s: %w", label, err)
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("extract %s: %w", label, err)
		}
		bad := func(format string, args ...any) error {
			return fmt.Errorf("extract %s: entry %q: %s", label, hdr.Name, fmt.Sprintf(format, args...))
		}
		// Every entry counts against the file limit, and every directory
		// made for one (see extraction.mkdir): a small archive of deep
		// paths must not make millions of directories.
		if count++; count+x.dirs > lim.maxFiles {
			return nil, bad("the archive has more than %d entries and directories (the limit)", lim.maxFiles)
		}
		// The data of every entry counts against the size limit, also
		// of one stripped away: it is decompressed all the same.
		if hdr.Size > 0 {
			if total += hdr.Size; total > lim.maxBytes {
				return nil, bad("the archive holds more than %d bytes of files (the limit)", lim.maxBytes)
			}
		}
		name, why := entryName(hdr.Name, strip)
		if why != "" {
			return nil, bad("%s", why)
		}
		if name == "" {
			continue // the root, or stripped away
		}
		x.maxDirs = lim.maxFiles - count
		if err := x.parents(name); err != nil {
			return nil, bad("%v", err)
		}
		if k, ok := x.kinds[name]; ok && !(k == kindDir && hdr.Typeflag == tar.TypeDir) {
			return nil, bad("appears twice in the archive")
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if _, ok := x.kinds[name]; !ok {
				if err := x.mkdir(name); err != nil {
					return nil, bad("%v", err)
				}
			}
		case tar.TypeReg:
			e := entry{Path: name, Kind: kindFile, Mode: fileMode(hdr.FileInfo().Mode())}
			out, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, e.Mode)
			if err != nil {
				return nil, bad("%v", err)
			}
			if err := writeContent(out, tr, &e); err != nil {
				return nil, bad("%v", err)
			}
			x.add(e)
			n.copied.Add(1)
		case tar.TypeSymlink:
			if err := spec.CheckLink(name, hdr.Linkname); err != nil {
				return nil, bad("%v", err)
			}
			if err := root.Symlink(hdr.Linkname, name); err != nil {
				return nil, bad("%v", err)
			}
			x.add(entry{Path: name, Kind: kindSymlink, Target: hdr.Linkname})
		case tar.TypeLink:
			target, why := entryName(hdr.Linkname, strip)
			if why != "" || target == "" {
				return nil, bad("hard link to %q leaves the archive", hdr.Linkname)
			}
			te, ok := x.files[target]
			if !ok {
				return nil, bad("hard link to %q, which is not a file extracted before it", hdr.Linkname)
			}
			if err := root.Link(target, name); err != nil {
				return nil, bad("%v", err)
			}
			te.Path = name
			x.add(te)
			n.copied.Add(1)
		case tar.TypeChar, tar.TypeBlock:
			return nil, bad("is a device: only files, directories and symlinks can be deployed")
		case tar.TypeFifo:
			return nil, bad("is a fifo: only files, directories and symlinks can be deployed")
		default:
			return nil, bad("has unsupported type %q", hdr.Typeflag)
		}
	}
	return x.entries, nil
}

// extraction tracks what an archive created so far: the kind of every path,
// so that no entry is written through a symlink or over another entry.
type extraction struct {
	root    *os.Root
	kinds   map[string]string
	files   map[string]entry
	entries []entry
	// dirs counts the directories made; maxDirs is how many more the
	// file limit allows now.
	dirs, maxDirs int
}

func (x *extraction) add(e entry) {
	x.kinds[e.Path] = e.Kind
	if e.Kind == kindFile {
		x.files[e.Path] = e
	}
	x.entries = append(x.entries, e)
}

func (x *extraction) mkdir(name string) error {
	if err := x.root.Mkdir(name, dirMode); err != nil {
		return err
	}
	if err := x.root.Chmod(name, dirMode); err != nil {
		return err
	}
	x.add(entry{Path: name, Kind: kindDir})
	return nil
}

// parents creates the missing directories above name and refuses a name
// below a symlink or a file.
func (x *extraction) parents(name string) error {
	for i := 0; i < len(name); i++ {
		if name[i] != '/' {
			continue
		}
		p := name[:i]
		switch x.kinds[p] {
		case kindDir:
		case kindSymlink:
			return fmt.Errorf("goes through %q, a symlink earlier in the archive", p)
		case kindFile:
			return fmt.Errorf("goes through %q, a file earlier in the archive", p)
		default:
			// A directory the archive implies: it counts like an entry,
			// and an archive may imply only so many per entry it has
			// (a tar of a tree lists its directories; one that lists
			// only deep paths is a directory bomb), so that a bomb is
			// refused before it has made many.
			if x.dirs >= x.maxDirs {
				return fmt.Errorf("making directory %q passes the limit on entries and directories", p)
			}
			if x.dirs >= 2*len(x.files)+maxImpliedDirs {
				return fmt.Errorf("making directory %q: the archive implies more than %d directories beyond two per file it holds", p, maxImpliedDirs)
			}
			x.dirs++
			if err := x.mkdir(p); err != nil {
				return err
			}
		}
	}
	return nil
}

// entryName turns an archive name into a clean path relative to the
// extraction root with strip leading elements removed ("" when nothing is
// left), or says why the name is refused.
func entryName(name string, strip int) (string, string) {
	if name == "" {
		return "", "empty name"
	}
	if strings.HasPrefix(name, "/") {
		return "", "absolute path"
	}
	if strings.ContainsRune(name, 0) {
		return "", "NUL in name"
	}
	var els []string
	for _, el := range strings.Split(name, "/") {
		switch el {
		case "", ".":
		case "..":
			return "", `".." in path`
		default:
			els = append(els, el)
		}
	}
	if len(els) <= strip {
		return "", ""
	}
	p := path.Join(els[strip:]...)
	if !fs.ValidPath(p) {
		return "", "not a valid path"
	}
	return p, ""
}

// streamBudget is how many bytes of tar stream an archive within lim can
// take: its files' bytes plus, for each entry, room for a header, a long
// name or PAX record and padding.
func streamBudget(lim limits) int64 {
	return lim.maxBytes + int64(lim.maxFiles)*4096 + 1<<20
}

// streamLimit fails a read once more than left bytes were read: the
// decompressed stream is bounded, not just what is written.
type streamLimit struct {
	r    io.Reader
	left int64
}

func (l *streamLimit) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, fmt.Errorf("the archive decompresses to more than its limits allow")
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}
