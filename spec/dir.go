package spec

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// LoadDir parses dir/drover.yaml against a node's policy and checks the
// tree it refers to: drover validate DIR, and drover migrate --dir DIR.
func LoadDir(dir string, policy Policy) (*Spec, error) {
	file := filepath.Join(dir, FileName)
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	// Read through the root: a drover.yaml linking outside DIR is refused,
	// not judged (validate reads only inside DIR, as the agent reads only
	// the repo's tree).
	data, err := ReadInRoot(root, FileName, file)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: not found; drover validate DIR expects DIR/%s", file, FileName)
		}
		return nil, err
	}
	sp, err := ParseFor(file, data, policy)
	if err != nil {
		return nil, err
	}
	if err := CheckTree(file, sp, root.FS()); err != nil {
		return nil, err
	}
	return sp, nil
}
