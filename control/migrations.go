package control

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/drover-dev/drover/agent"
	"github.com/drover-dev/drover/gitsource"
	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/internal/revid"
	"github.com/drover-dev/drover/migrate"
	"github.com/drover-dev/drover/plan"
	"github.com/drover-dev/drover/spec"
)

// MigrationSet is the revision whose migrations a command works on.
type MigrationSet struct {
	*migrate.Set
	Desc string // for people: the revision and where it is live, or the dir
}

// cliNode names a manual run in the ledger's applied_by.
func cliNode(cfg *spec.Node) string { return cfg.Name + "/cli" }

// Migrations reads drover.yaml and the migrations of dir (a checkout of
// the config directory), or without dir of the node's live revision.
func Migrations(ctx context.Context, cfg *spec.Node, dir string, log *slog.Logger) (*MigrationSet, error) {
	if dir != "" {
		sp, err := spec.LoadDir(dir, cfg.Policy)
		if err != nil {
			return nil, err
		}
		set, err := migrate.LoadDir(dir, sp)
		if err != nil {
			return nil, err
		}
		// Shown as the absolute path the ledger records (after "dir:").
		return &MigrationSet{Set: set, Desc: strings.TrimPrefix(set.Revision, "dir:")}, nil
	}
	rev, err := LiveRevision(cfg)
	if err != nil {
		return nil, err
	}
	set, err := RevisionMigrations(ctx, cfg, rev, log)
	if err != nil {
		return nil, err
	}
	return &MigrationSet{Set: set, Desc: rev + " (live on " + cfg.Name + ")"}, nil
}

// RevisionMigrations reads drover.yaml and the migrations of rev: from its
// kept release when this node has one, else from the config repo (into the
// CLI's own git store).
func RevisionMigrations(ctx context.Context, cfg *spec.Node, rev string, log *slog.Logger) (*migrate.Set, error) {
	if set, kept, err := migrate.LoadRelease(layout.New(cfg.StateDir).Release(rev), rev); kept {
		return set, err
	}
	repo, err := agent.OpenCLIRepo(cfg, log)
	if err != nil {
		return nil, err
	}
	defer repo.Close()
	if err := repo.Fetch(ctx, rev); err != nil {
		hint := "with --dir DIR, read a checkout of it instead"
		if errors.Is(err, gitsource.ErrBranchMoved) {
			hint = "the branch has moved past it and the server does not serve older commits by id " +
				"(git's uploadpack.allowReachableSHA1InWant); give --dir DIR, a checkout of " + revid.Short(rev)
		}
		return nil, fmt.Errorf("revision %s: %w (%s)", revid.Short(rev), err, hint)
	}
	tree, err := repo.Tree(ctx, rev, cfg.Repo.Dir)
	if err != nil {
		return nil, fmt.Errorf("revision %s: %w", revid.Short(rev), err)
	}
	sp, err := plan.ReadSpec(cfg.Repo.Dir, tree, cfg.Policy)
	if err != nil {
		return nil, err
	}
	return migrate.RevisionSet(rev, sp, tree)
}

// LiveRevision reads STATE/current without opening the release store, whose
// lock a running agent holds.
func LiveRevision(cfg *spec.Node) (string, error) {
	link := layout.New(cfg.StateDir).Current()
	target, err := os.Readlink(link)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("node %s has no live release (%s is missing): give --dir DIR, a checkout of the config directory", cfg.Name, link)
	}
	if err != nil {
		return "", err
	}
	rev, ok := layout.LinkRevision(target)
	if !ok {
		return "", fmt.Errorf("%s points at %q, which is not a release", link, target)
	}
	return rev, nil
}

// OpenMigrator connects to node.yaml's database for a manual run (drover
// migrate), with the migrations of dir or the live revision; without
// needFiles only the ledger is used and the set's revision is only
// recorded.
func OpenMigrator(ctx context.Context, cfg *spec.Node, dir string, needFiles bool, log *slog.Logger) (*MigrationSet, *migrate.Migrator, error) {
	set := &MigrationSet{Set: &migrate.Set{}}
	var err error
	switch {
	case needFiles:
		if set, err = Migrations(ctx, cfg, dir, log); err != nil {
			return nil, nil, err
		}
	case dir != "":
		if abs, err := filepath.Abs(dir); err == nil {
			set.Revision = migrate.DirRevision(abs) // only recorded
		}
	default:
		set.Revision, _ = LiveRevision(cfg) // only recorded; none is fine
	}
	db, err := agent.OpenDatabase(ctx, cfg, set.Config(cliNode(cfg), log))
	if err != nil {
		return nil, nil, err
	}
	return set, db, nil
}
