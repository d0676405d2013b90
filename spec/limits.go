package spec

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"go.yaml.in/yaml/v3"
)

// MaxFileSize bounds drover.yaml and node.yaml: 1 MiB, some hundred times
// the largest real spec. The YAML parser's memory grows with its input many
// times over (a 50 MB spec made validate grow to 2.4 GB), and a pushed spec
// must not be able to take a node's memory: a larger file is refused before
// it is parsed, and readers never read more than MaxFileSize+1 bytes of it.
const MaxFileSize = 1 << 20

// ReadLimited reads r to its end, or refuses it once it passes MaxFileSize;
// file names it in the error.
func ReadLimited(file string, r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	if len(data) > MaxFileSize {
		return nil, tooLarge(file)
	}
	return data, nil
}

// readFileLimited reads the file at path, bounded as ReadLimited.
func readFileLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadLimited(path, f)
}

// ReadFS reads name from fsys, bounded as ReadLimited; file names it in
// errors (the repo path, e.g. env/prod/drover.yaml).
func ReadFS(fsys fs.FS, name, file string) ([]byte, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadLimited(file, f)
}

func tooLarge(file string) Errors {
	return Errors{{File: file, Msg: fmt.Sprintf("larger than %d bytes (1 MiB), the most drover reads of a config file", MaxFileSize)}}
}

// ReadInRoot reads name (a slash path) inside the directory root, refusing
// a name that is, or goes through, a symlink leading outside root: `drover
// validate DIR` judges DIR, and must not report on (or read) a file
// elsewhere that DIR's drover.yaml links to. file names it in errors.
func ReadInRoot(root *os.Root, name, file string) ([]byte, error) {
	f, err := root.Open(name)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) && strings.Contains(err.Error(), "escapes") {
			return nil, Errors{{File: file, Msg: "is a symlink to a file outside " + root.Name() + "; drover reads only inside the config directory"}}
		}
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, Errors{{File: file, Msg: "is not a regular file"}}
	}
	return ReadLimited(file, f)
}

// checkTag refuses a YAML tag the decoder would otherwise drop: `!include
// x` or `!secret x` would decode as the plain string "x", silently losing
// what the author meant. Only YAML's own tags (!!str, !!int, …, which the
// parser resolves itself) are accepted.
func (d *decoder) checkTag(n *yaml.Node, path string) bool {
	if n.Tag == "" || strings.HasPrefix(n.Tag, "!!") {
		return true
	}
	d.fail(n, path, "YAML tag %s is not supported: drover expands no tags (no includes, no secrets), and would read the value as plain text", n.Tag)
	return false
}

// posOf is where field (or its nearest written parent) is in the file the
// spec was parsed from; zero for a spec not made by Parse.
func (s *Spec) posOf(field string) Pos {
	v := validator{pos: s.pos}
	return v.posOf(field)
}

// wholeRepo reports a source that names the config directory itself:
// published as a site, it would serve .git, the migrations and every other
// file of the repo.
func wholeRepo(src string) bool {
	return path.Clean(src) == "."
}
