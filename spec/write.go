package spec

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/drover-dev/drover/internal/atomicfile"
)

// NewFile is a file drover init writes beside node.yaml (a secret that
// node.yaml names), and its content.
type NewFile struct {
	Path string
	Data []byte
}

// WriteNode writes n as node.yaml at file, headed by a comment, and files,
// the secrets it names (0600, like node.yaml). It checks the file first
// as the agent would read it (ParseNode), and refuses a path that exists
// unless force: a bad value or a kept file changes nothing. Secrets are
// written first and node.yaml last, so node.yaml never names a file that
// was not written. It returns the paths written, in order.
func WriteNode(file string, n *Node, files []NewFile, force bool) ([]string, error) {
	dir, err := filepath.Abs(filepath.Dir(file))
	if err != nil {
		return nil, err
	}
	doc, err := MarshalNode(n)
	if err != nil {
		return nil, err
	}
	data := append([]byte(fmt.Sprintf("# %s: this node's drover settings, written by drover init.\n"+
		"# Every field: README.md, node.yaml reference; check with drover doctor.\n", filepath.Base(file))), doc...)
	if _, err := ParseNode(file, data, dir); err != nil {
		return nil, fmt.Errorf("the flags make an invalid node.yaml (nothing written):\n%w", err)
	}
	writes := append(files[:len(files):len(files)], NewFile{file, data})
	if !force {
		for _, w := range writes {
			if _, err := os.Lstat(w.Path); err == nil {
				return nil, fmt.Errorf("%s exists; nothing written (--force replaces it)", w.Path)
			} else if !errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("check %s: %w", w.Path, err)
			}
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	var written []string
	for _, w := range writes {
		if err := atomicfile.WriteFile(w.Path, w.Data, 0o600); err != nil {
			return written, err
		}
		written = append(written, w.Path)
	}
	return written, nil
}
