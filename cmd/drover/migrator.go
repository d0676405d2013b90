package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/drover-dev/drover/migrate"
	"github.com/drover-dev/drover/reconcile"
	"github.com/drover-dev/drover/spec"
	"github.com/jackc/pgx/v5/pgconn"
)

// dbMigrator runs a revision's migrations against the node's database during
// a rollout (reconcile.Migrator). Errors that are the revision's fault (a
// failing migration, a file that changed after it was applied, a file drover
// cannot load) are marked reconcile.BadRevision, so the revision halts; the
// others (database down, node.yaml without a database, a lock held by another
// session longer than lock_timeout) are plain, so the rollout retries later.
type dbMigrator struct {
	node *spec.Node
	log  *slog.Logger
}

func newMigrator(cfg *spec.Node, log *slog.Logger) reconcile.Migrator {
	return &dbMigrator{node: cfg, log: log.With("part", "migrate")}
}

// Check loads the migration files of a revision, as prepare does before the
// node waits for its turn.
func (m *dbMigrator) Check(sp *spec.Spec, fsys fs.FS) error {
	if sp.Migrations == nil {
		return nil
	}
	_, err := migrate.Load(fsys, sp.Migrations.Dir)
	return err
}

func (m *dbMigrator) Migrate(ctx context.Context, rev string, sp *spec.Spec, fsys fs.FS) error {
	if sp.Migrations == nil {
		return nil
	}
	ms, err := migrate.Load(fsys, sp.Migrations.Dir)
	if err != nil {
		return reconcile.BadRevision(err)
	}
	start := time.Now()
	db, err := openDatabase(ctx, m.node, migrateConfig(m.node.Name, rev, sp, m.log))
	if err != nil {
		return err
	}
	defer db.Close(context.WithoutCancel(ctx))
	applied, err := db.Up(ctx, ms)
	if err != nil {
		return revisionFault(err, ms)
	}
	if len(applied) > 0 {
		m.log.Info("migrations applied", "rev", shortRev(rev), "count", len(applied), "took", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// migrateConfig is the migrate.Config of rev's spec on node.
func migrateConfig(node, rev string, sp *spec.Spec, log *slog.Logger) migrate.Config {
	return migrate.Config{
		Node:             node,
		Revision:         rev,
		LockTimeout:      sp.Migrations.LockTimeout.D(),
		StatementTimeout: sp.Migrations.StatementTimeout.D(),
		Log:              log,
	}
}

// openDatabase connects to the database of node.yaml, reading the DSN from
// its file now, so that a rotated password takes effect at the next run.
func openDatabase(ctx context.Context, node *spec.Node, cfg migrate.Config) (*migrate.Migrator, error) {
	if node.Database == nil {
		return nil, fmt.Errorf("the spec has migrations but node.yaml of node %s has no database section: "+
			"add database.dsnFile, a file holding the PostgreSQL URL (this node's configuration, not the revision, is at fault)", node.Name)
	}
	data, err := os.ReadFile(node.Database.DSNFile)
	if err != nil {
		return nil, fmt.Errorf("database.dsnFile: %w", err)
	}
	dsn := strings.TrimSpace(string(data))
	if dsn == "" {
		return nil, fmt.Errorf("database.dsnFile %s is empty: it must hold the PostgreSQL URL", node.Database.DSNFile)
	}
	return migrate.Open(ctx, dsn, cfg)
}

// revisionFault marks the errors of Up that the revision causes, on every
// node and at every try: they halt it. A transactional migration that timed
// out waiting for a lock held by another session changed nothing and may
// pass later: it stays a plain error, retried with the rollout's backoff. A
// no-transaction one is recorded failed and awaits resolve, so the next try
// is refused anyway.
func revisionFault(err error, ms []migrate.Migration) error {
	var me *migrate.MigrationError
	switch {
	case errors.Is(err, migrate.ErrRefused):
		return reconcile.BadRevision(err)
	case errors.As(err, &me):
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "55P03" && !noTransaction(ms, me.Version) {
			return err
		}
		return reconcile.BadRevision(err)
	}
	return err
}

func noTransaction(ms []migrate.Migration, version int64) bool {
	for _, m := range ms {
		if m.Version == version {
			return m.NoTransaction
		}
	}
	return false
}
