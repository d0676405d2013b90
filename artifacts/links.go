package artifacts

import (
	"fmt"
	"os"

	"github.com/drover-dev/drover/spec"
)

// checkLinks resolves every symlink of the materialized tree dir inside
// dir, through an os.Root of it, and refuses the tree when one leaves it
// (see spec.CheckLinks). It runs on what is on disk, so trees from git,
// from a tarball and relinked from the base release get the same check;
// the lexical checks made while writing them cannot see a chain of links.
func checkLinks(dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("check symlinks: %w", err)
	}
	defer root.Close()
	if err := spec.CheckLinks(root.FS(), "."); err != nil {
		return fmt.Errorf("check symlinks of %s: %w", dir, err)
	}
	return nil
}
