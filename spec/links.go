package spec

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
)

// maxLinkHops bounds how many symlinks one resolution follows, as the
// kernel's own limit (40) does: a loop is refused, not followed forever.
const maxLinkHops = 40

// CheckLinks resolves every symlink under the directory root of fsys the
// way the kernel would when a process opens it, following each link it
// meets, component by component, and refuses the first one whose
// resolution leaves root, naming it.
//
// A lexical check is not enough: with l at d/d/l pointing at ../.. (root
// itself, lexically fine), x pointing at d/d/l/../../../etc is lexically
// root/etc, but the kernel resolves d/d/l first, to root, and then goes
// above it. Here every ".." applies to the directory actually reached.
//
// fsys must implement fs.ReadLinkFS (gitsource's trees and os.Root's FS
// do). A link whose resolution stops at a missing name is left alone:
// opening it fails on any node.
func CheckLinks(fsys fs.FS, root string) error {
	return fs.WalkDir(fsys, root, func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink == 0 {
			return nil
		}
		rel := relPath(root, name)
		if err := resolveLink(fsys, root, rel); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	})
}

// resolveLink resolves the link at rel (relative to root) inside root.
func resolveLink(fsys fs.FS, root, rel string) error {
	target, err := fs.ReadLink(fsys, path.Join(root, rel))
	if err != nil {
		return err
	}
	cur := splitPath(path.Dir(rel)) // the link's directory: real dirs, reached by the walk
	pending := splitPath(target)
	if path.IsAbs(target) {
		return fmt.Errorf("symlink to absolute path %q leaves %s", target, root)
	}
	hops := 1
	via := rel
	for len(pending) > 0 {
		el := pending[0]
		pending = pending[1:]
		switch el {
		case "", ".":
			continue
		case "..":
			if len(cur) == 0 {
				return fmt.Errorf("symlink to %q resolves outside %s (through %s)", target, root, via)
			}
			cur = cur[:len(cur)-1]
			continue
		}
		next := path.Join(append(append([]string{root}, cur...), el)...)
		fi, err := fs.Lstat(fsys, next)
		if errors.Is(err, fs.ErrNotExist) {
			return nil // dangling: nothing to open, on any node
		}
		if err != nil {
			return err
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			if hops++; hops > maxLinkHops {
				return fmt.Errorf("symlink to %q goes through more than %d symlinks", target, maxLinkHops)
			}
			t, err := fs.ReadLink(fsys, next)
			if err != nil {
				return err
			}
			if path.IsAbs(t) {
				return fmt.Errorf("symlink to %q goes through %s, a symlink to absolute path %q", target, relPath(root, next), t)
			}
			via = relPath(root, next)
			pending = append(splitPath(t), pending...)
		case fi.IsDir():
			cur = append(cur, el)
		default:
			if len(pending) > 0 {
				return nil // a file with more path after it: ENOTDIR
			}
			cur = append(cur, el)
		}
	}
	return nil
}

func splitPath(p string) []string {
	if p == "." || p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

// relPath is name relative to the walk root.
func relPath(root, name string) string {
	if root == "." {
		return name
	}
	return strings.TrimPrefix(strings.TrimPrefix(name, root), "/")
}
