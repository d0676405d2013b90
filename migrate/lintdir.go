package migrate

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/drover-dev/drover/spec"
)

// LintDir loads the migrations of dir, a checkout of the config directory
// whose drover.yaml is sp, and returns Lint's warnings as "file:line:
// warning: why" lines, file named from dir as the operator gave it. A
// file that does not load is an error (one line per problem, each naming
// its file).
func LintDir(dir string, sp *spec.Spec) ([]string, error) {
	inDir := func(s string) string {
		if filepath.Clean(dir) == "." {
			return s
		}
		return filepath.Clean(dir) + string(filepath.Separator) + s
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	ms, err := Load(root.FS(), sp.Migrations.Dir)
	if err != nil {
		// Load joins one error per file under a "load migrations" prefix.
		var joined interface{ Unwrap() []error }
		if errors.As(err, &joined) {
			var errs []error
			for _, e := range joined.Unwrap() {
				errs = append(errs, errors.New(inDir(e.Error())))
			}
			return nil, errors.Join(errs...)
		}
		return nil, err
	}
	var out []string
	for _, w := range Lint(ms) {
		out = append(out, fmt.Sprintf("%s:%d: warning: %s", inDir(w.File), w.Line, w.Message))
	}
	return out, nil
}
