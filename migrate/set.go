package migrate

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/internal/revid"
	"github.com/drover-dev/drover/spec"
)

// Set is the migrations a command works on, with the spec they came with
// (whose migrations section sets the timeouts, see SpecConfig).
type Set struct {
	// Revision is what the ledger records as the revision that applied
	// them: a commit id, or "dir:" and the absolute path of a checkout.
	Revision   string
	Spec       *spec.Spec
	Migrations []Migration
}

// ErrNoMigrations is a revision whose drover.yaml has no migrations section.
var ErrNoMigrations = errors.New("no migrations")

// RevisionSet is the Set of commit rev, whose spec is sp, loading the
// migrations from sp's migrations directory in tree, the revision's tree.
func RevisionSet(rev string, sp *spec.Spec, tree fs.FS) (*Set, error) {
	if sp.Migrations == nil {
		return nil, noMigrations(rev)
	}
	return loadSet(rev, sp, tree, sp.Migrations.Dir)
}

func noMigrations(rev string) error {
	return fmt.Errorf("%w: revision %s has no migrations section in %s", ErrNoMigrations, revid.Short(rev), spec.FileName)
}

func loadSet(rev string, sp *spec.Spec, fsys fs.FS, dir string) (*Set, error) {
	ms, err := Load(fsys, dir)
	if err != nil {
		return nil, err
	}
	return &Set{Revision: rev, Spec: sp, Migrations: ms}, nil
}

// LoadRelease reads the Set of rev from its kept release releaseDir
// (layout.Layout.Release), without opening the release store, whose lock a
// running agent holds. kept is false when the release has no migrations
// directory: releases made by an older drover did not keep them, and the
// caller reads the revision from the config repo instead.
func LoadRelease(releaseDir, rev string) (set *Set, kept bool, err error) {
	dir := layout.MigrationsDir(releaseDir)
	if _, err := os.Stat(dir); err != nil {
		return nil, false, nil
	}
	file := layout.SpecFile(releaseDir)
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, true, err
	}
	sp, err := spec.ParseRelease(file, data)
	if err != nil {
		return nil, true, err
	}
	if sp.Migrations == nil {
		return nil, true, noMigrations(rev)
	}
	// Loaded as "migrations" in its parent, the directory's own name, so
	// that the files are named migrations/0001_x.sql whatever the spec's
	// migrations directory was.
	set, err = loadSet(rev, sp, os.DirFS(filepath.Dir(dir)), filepath.Base(dir))
	return set, true, err
}

// LoadDir is the Set of dir, a checkout of the config directory whose
// drover.yaml (already parsed and checked) is sp. The ledger records it as
// "dir:" and dir's absolute path.
func LoadDir(dir string, sp *spec.Spec) (*Set, error) {
	if sp.Migrations == nil {
		return nil, fmt.Errorf("%s has no migrations section", filepath.Join(dir, spec.FileName))
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	return loadSet(DirRevision(abs), sp, root.FS(), sp.Migrations.Dir)
}

// DirRevision is what the ledger records as the revision of a checkout at
// the absolute path abs.
func DirRevision(abs string) string { return "dir:" + abs }

// Config is the Config of the set's revision on node: the spec's timeouts
// when the set has a spec, the defaults otherwise (a command that needs
// only the ledger).
func (s *Set) Config(node string, log *slog.Logger) Config {
	if s.Spec == nil {
		return Config{Node: node, Revision: s.Revision, Log: log}
	}
	return SpecConfig(node, s.Revision, s.Spec, log)
}
