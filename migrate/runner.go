package migrate

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"time"

	"github.com/drover-dev/drover/internal/revid"
	"github.com/drover-dev/drover/spec"
	"github.com/jackc/pgx/v5/pgconn"
)

// Database is node.yaml's database section as the runner takes it.
type Database struct {
	// DSNFile is a file holding the PostgreSQL URL, read at each run so
	// that a rotated password takes effect at the next one.
	DSNFile string
}

// RunnerConfig is what a Runner needs of node.yaml.
type RunnerConfig struct {
	// Node is node.yaml's name.
	Node string
	// Database is node.yaml's database section, nil when it has none.
	Database *Database
	Log      *slog.Logger
}

// Runner runs a revision's migrations against the node's database during a
// rollout (it satisfies reconcile.Migrator). Errors that are the revision's
// fault (a failing migration, a file that changed after it was applied, a
// file drover cannot load) are *RevisionError, so the revision halts; the
// others (database down, node.yaml without a database, a lock held by
// another session longer than lock_timeout) are plain, so the rollout
// retries later.
type Runner struct {
	cfg RunnerConfig
}

// NewRunner returns the Runner of cfg.
func NewRunner(cfg RunnerConfig) *Runner {
	return &Runner{cfg: cfg}
}

// RevisionError is an error of the revision's content: it halts the
// revision rather than being retried.
type RevisionError struct{ Err error }

func (e *RevisionError) Error() string { return e.Err.Error() }
func (e *RevisionError) Unwrap() error { return e.Err }

// RevisionFault says the revision, not the node, is at fault.
func (e *RevisionError) RevisionFault() bool { return true }

// Check loads the migration files of a revision, as prepare does before the
// node waits for its turn.
func (m *Runner) Check(sp *spec.Spec, fsys fs.FS) error {
	if sp.Migrations == nil {
		return nil
	}
	_, err := Load(fsys, sp.Migrations.Dir)
	return err
}

func (m *Runner) Migrate(ctx context.Context, rev string, sp *spec.Spec, fsys fs.FS) error {
	if sp.Migrations == nil {
		return nil
	}
	ms, err := Load(fsys, sp.Migrations.Dir)
	if err != nil {
		return &RevisionError{err}
	}
	start := time.Now()
	db, err := OpenDatabase(ctx, m.cfg.Node, m.cfg.Database, SpecConfig(m.cfg.Node, rev, sp, m.cfg.Log))
	if err != nil {
		return err
	}
	defer db.Close(context.WithoutCancel(ctx))
	applied, err := db.Up(ctx, ms)
	if err != nil {
		return revisionFault(err, ms)
	}
	if len(applied) > 0 {
		m.cfg.Log.Info("migrations applied", "rev", revid.Short(rev), "count", len(applied), "took", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// SpecConfig is the Config of rev's spec on node.
func SpecConfig(node, rev string, sp *spec.Spec, log *slog.Logger) Config {
	return Config{
		Node:             node,
		Revision:         rev,
		LockTimeout:      sp.Migrations.LockTimeout.D(),
		StatementTimeout: sp.Migrations.StatementTimeout.D(),
		Log:              log,
	}
}

// revisionFault marks the errors of Up that the revision causes, on every
// node and at every try: they halt it. A transactional migration that timed
// out waiting for a lock held by another session changed nothing and may
// pass later: it stays a plain error, retried with the rollout's backoff. A
// no-transaction one is recorded failed and awaits resolve, so the next try
// is refused anyway.
func revisionFault(err error, ms []Migration) error {
	var me *MigrationError
	switch {
	case errors.Is(err, ErrRefused):
		return &RevisionError{err}
	case errors.As(err, &me):
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "55P03" && !noTransaction(ms, me.Version) {
			return err
		}
		return &RevisionError{err}
	}
	return err
}

func noTransaction(ms []Migration, version int64) bool {
	for _, m := range ms {
		if m.Version == version {
			return m.NoTransaction
		}
	}
	return false
}

// Applied reports whether the ledger holds every migration of rev, applied,
// and nothing it lacks (true when rev has none). It takes no lock and
// changes nothing: a node waiting for its turn asks it before it starts the
// overlap's new instances early (reconcile's ahead.go), so that new code
// never meets the schema before its migrations.
func (m *Runner) Applied(ctx context.Context, rev string, sp *spec.Spec, fsys fs.FS) (bool, error) {
	if sp.Migrations == nil {
		return true, nil
	}
	ms, err := Load(fsys, sp.Migrations.Dir)
	if err != nil {
		return false, err
	}
	db, err := OpenDatabase(ctx, m.cfg.Node, m.cfg.Database, SpecConfig(m.cfg.Node, rev, sp, m.cfg.Log))
	if err != nil {
		return false, err
	}
	defer db.Close(context.WithoutCancel(ctx))
	st, err := db.Status(ctx, ms)
	if err != nil {
		return false, err
	}
	return len(st.Pending) == 0 && len(st.Failed) == 0 && len(st.Mismatched) == 0 && len(st.Missing) == 0, nil
}
