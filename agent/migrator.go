package agent

import (
	"context"
	"log/slog"

	"github.com/drover-dev/drover/migrate"
	"github.com/drover-dev/drover/spec"
)

// NewMigrator is the rollout's migrate.Runner (a reconcile.Migrator) for
// node.yaml cfg.
func NewMigrator(cfg *spec.Node, log *slog.Logger) *migrate.Runner {
	return migrate.NewRunner(migrate.RunnerConfig{Node: cfg.Name, Database: migrateDatabase(cfg), Log: log.With("part", "migrate")})
}

// migrateDatabase is node.yaml's database section as migrate takes it.
func migrateDatabase(cfg *spec.Node) *migrate.Database {
	if cfg.Database == nil {
		return nil
	}
	return &migrate.Database{DSNFile: cfg.Database.DSNFile}
}

// OpenDatabase connects to the database of node.yaml.
func OpenDatabase(ctx context.Context, node *spec.Node, cfg migrate.Config) (*migrate.Migrator, error) {
	return migrate.OpenDatabase(ctx, node.Name, migrateDatabase(node), cfg)
}
