package spec

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
)

// CheckLink reports whether a symlink at name (a slash path relative to a
// root) pointing at target stays inside that root. Absolute targets never do.
func CheckLink(name, target string) error {
	if target == "" {
		return fmt.Errorf("%s: empty symlink", name)
	}
	if path.IsAbs(target) || strings.HasPrefix(target, `\`) {
		return fmt.Errorf("%s: symlink to absolute path %q leaves the repo", name, target)
	}
	joined := path.Join(path.Dir(name), target)
	if joined == ".." || strings.HasPrefix(joined, "../") {
		return fmt.Errorf("%s: symlink to %q leaves the repo", name, target)
	}
	return nil
}

// CheckTree checks what the spec refers to inside the config directory fsys:
// every source is a directory, no path goes through a symlink, and no symlink
// under a source points outside the config directory. specFile names
// drover.yaml in errors.
func CheckTree(specFile string, s *Spec, fsys fs.FS) error {
	var errs Errors
	add := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{File: specFile, Pos: s.posOf(field), Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	dir := func(field, p string) {
		if err := checkDirPath(fsys, p); err != nil {
			add(field, "%v", err)
			return
		}
		err := fs.WalkDir(fsys, p, func(name string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.Type()&fs.ModeSymlink == 0 {
				return nil
			}
			target, err := fs.ReadLink(fsys, name)
			if err != nil {
				return err
			}
			return CheckLink(name, target)
		})
		if err == nil {
			// Lexically fine is not enough: resolve every link as the
			// kernel would, inside the source (see CheckLinks).
			err = CheckLinks(fsys, p)
		}
		if err != nil {
			add(field, "%v", err)
		}
	}
	for i, site := range s.Sites {
		if site.Source != "" {
			dir(fmt.Sprintf("sites[%d].source", i), site.Source)
		}
	}
	for i, w := range s.Workers {
		if w.Source != "" {
			dir(fmt.Sprintf("workers[%d].source", i), w.Source)
		}
	}
	if s.Migrations != nil {
		if err := checkDirPath(fsys, s.Migrations.Dir); err != nil {
			add("migrations.dir", "%v", err)
		}
	}
	if len(errs) > 0 {
		return errs.sorted()
	}
	return nil
}

// checkDirPath requires p to be a directory reached without any symlink.
func checkDirPath(fsys fs.FS, p string) error {
	els := strings.Split(p, "/")
	for i := range els {
		sub := strings.Join(els[:i+1], "/")
		fi, err := fs.Lstat(fsys, sub)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s does not exist in the repo", sub)
		}
		if err != nil {
			return err
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return fmt.Errorf("%s is a symlink; sources must be real directories", sub)
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", sub)
		}
	}
	return nil
}
