package migrate

import (
	"context"
	"fmt"
	"os"
	"strings"
)

// OpenDatabase connects to the database of node.yaml's database section db
// (nil when node.yaml of node has none), reading the DSN from its file now,
// so that a rotated password takes effect at the next run.
func OpenDatabase(ctx context.Context, node string, db *Database, cfg Config) (*Migrator, error) {
	if db == nil {
		return nil, fmt.Errorf("the spec has migrations but node.yaml of node %s has no database section: "+
			"add database.dsnFile, a file holding the PostgreSQL URL (this node's configuration, not the revision, is at fault)", node)
	}
	data, err := os.ReadFile(db.DSNFile)
	if err != nil {
		return nil, fmt.Errorf("database.dsnFile: %w", err)
	}
	dsn := strings.TrimSpace(string(data))
	if dsn == "" {
		return nil, fmt.Errorf("database.dsnFile %s is empty: it must hold the PostgreSQL URL", db.DSNFile)
	}
	return Open(ctx, dsn, cfg)
}
