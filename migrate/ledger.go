package migrate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// States of a ledger row.
const (
	StateApplied = "applied"
	StateFailed  = "failed"  // a no-transaction migration failed; awaits Resolve
	StateRunning = "running" // a no-transaction migration is running, or its process died; awaits Resolve then
)

// Record is one row of the ledger.
type Record struct {
	Version   int64
	File      string // the file's base name, e.g. 0003_add_users.sql
	Checksum  string
	State     string
	AppliedAt time.Time // when it finished (or failed, or started while running)
	Node      string
	Revision  string
	Duration  time.Duration
	Error     string // why it failed; for a resolved one, what was resolved
}

// Drift is an applied migration whose file changed since.
type Drift struct {
	Migration Migration
	Record    Record
}

// Status compares the migration files with the ledger.
type Status struct {
	Applied    []Record    // applied and unchanged
	Pending    []Migration // not applied yet
	Mismatched []Drift     // applied, but the file changed since (Up refuses)
	// Missing are applied migrations without a file: after a rollback to an
	// older revision when newer than every file, else deleted (Up refuses).
	Missing []Record
	// Failed are no-transaction migrations that failed (StateFailed) or
	// started without finishing (StateRunning): their process died, unless
	// Locked says an Up is running right now. Up refuses until Resolve.
	Failed []Record
	// Locked: some session holds the migration lock (an Up is running).
	Locked bool
}

// ensureTable creates the ledger if missing. Callers hold the migration
// lock; creating the same table concurrently is tolerated all the same.
func (m *Migrator) ensureTable(ctx context.Context) error {
	_, err := m.conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+m.table+` (
		version     bigint PRIMARY KEY,
		file        text NOT NULL,
		checksum    text NOT NULL,
		status      text NOT NULL CHECK (status IN ('applied', 'failed', 'running')),
		applied_at  timestamptz NOT NULL,
		applied_by  text NOT NULL,
		revision    text NOT NULL,
		duration_ms bigint NOT NULL,
		error       text NOT NULL DEFAULT ''
	)`, pgx.QueryExecModeSimpleProtocol)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && (pe.Code == "42P07" || pe.Code == "23505") { // duplicate table, or pg_type's unique index
		err = nil
	}
	if err != nil {
		return fmt.Errorf("create ledger %s: %w", m.table, err)
	}
	return nil
}

// records reads the ledger in version order; no table means no records.
func (m *Migrator) records(ctx context.Context) ([]Record, error) {
	var exists bool
	if err := m.conn.QueryRow(ctx, "SELECT to_regclass($1::text) IS NOT NULL", m.table).Scan(&exists); err != nil {
		return nil, fmt.Errorf("read ledger %s: %w", m.table, err)
	}
	if !exists {
		return nil, nil
	}
	rows, err := m.conn.Query(ctx, `SELECT version, file, checksum, status, applied_at, applied_by, revision, duration_ms, error
		FROM `+m.table+` ORDER BY version`)
	if err != nil {
		return nil, fmt.Errorf("read ledger %s: %w", m.table, err)
	}
	recs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Record, error) {
		var r Record
		var ms int64
		err := row.Scan(&r.Version, &r.File, &r.Checksum, &r.State, &r.AppliedAt, &r.Node, &r.Revision, &ms, &r.Error)
		r.Duration = time.Duration(ms) * time.Millisecond
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("read ledger %s: %w", m.table, err)
	}
	return recs, nil
}

// Status reports how the migrations ms stand against the ledger. It takes no
// lock and changes nothing.
func (m *Migrator) Status(ctx context.Context, ms []Migration) (Status, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	recs, err := m.records(ctx)
	if err != nil {
		return Status{}, err
	}
	var st Status
	if err := m.conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 1)`, lockHi(m.key), lockLo(m.key)).Scan(&st.Locked); err != nil {
		return Status{}, fmt.Errorf("read migration lock: %w", err)
	}
	files := map[int64]Migration{}
	for _, mig := range ms {
		files[mig.Version] = mig
	}
	seen := map[int64]bool{}
	for _, r := range recs {
		seen[r.Version] = true
		mig, ok := files[r.Version]
		switch {
		case r.State != StateApplied:
			st.Failed = append(st.Failed, r)
		case !ok:
			st.Missing = append(st.Missing, r)
		case mig.Checksum != r.Checksum:
			st.Mismatched = append(st.Mismatched, Drift{Migration: mig, Record: r})
		default:
			st.Applied = append(st.Applied, r)
		}
	}
	for _, mig := range ms {
		if !seen[mig.Version] {
			st.Pending = append(st.Pending, mig)
		}
	}
	return st, nil
}

// ErrRefused marks the errors of Up that refuse to run anything because the
// files and the ledger disagree or a migration awaits Resolve.
var ErrRefused = errors.New("migrations refused")

// plan checks ms (sorted) against the ledger and returns what Up must run,
// and the applied records newer than every file (a rollback); every problem
// is reported at once, each wrapping ErrRefused.
func plan(ms []Migration, recs []Record) (pending []Migration, ahead []Record, err error) {
	files := map[int64]Migration{}
	var newestFile, newestApplied int64
	for _, mig := range ms {
		files[mig.Version] = mig
		newestFile = max(newestFile, mig.Version)
	}
	var errs []error
	refuse := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrRefused}, args...)...))
	}
	recorded := map[int64]bool{}
	for _, r := range recs {
		recorded[r.Version] = true
		newestApplied = max(newestApplied, r.Version)
		mig, ok := files[r.Version]
		switch {
		case r.State == StateFailed:
			refuse("%s failed on %s at %s (revision %s): %s; it ran without a transaction, so the statements before "+
				"the failure stay applied: repair the schema, then resolve version %d", r.File, r.Node,
				r.AppliedAt.UTC().Format(time.RFC3339), r.Revision, r.Error, r.Version)
		case r.State == StateRunning:
			refuse("%s was interrupted: started without a transaction on %s at %s (revision %s), its process stopped "+
				"at an unknown statement; check the schema, finish or undo it by hand, then resolve version %d", r.File, r.Node,
				r.AppliedAt.UTC().Format(time.RFC3339), r.Revision, r.Version)
		case !ok && r.Version > newestFile:
			ahead = append(ahead, r)
		case !ok:
			refuse("%s was applied (on %s at %s) but its file is gone while newer files exist; migrations are "+
				"append-only: restore the file", r.File, r.Node, r.AppliedAt.UTC().Format(time.RFC3339))
		case mig.Checksum != r.Checksum:
			refuse("%s changed after it was applied (on %s at %s): ledger checksum %s, file checksum %s; an applied "+
				"migration must not change: restore it and add a new migration", mig.File, r.Node,
				r.AppliedAt.UTC().Format(time.RFC3339), r.Checksum, mig.Checksum)
		}
	}
	for _, mig := range ms {
		switch {
		case recorded[mig.Version]:
		case mig.Version < newestApplied:
			refuse("%s is pending but older than applied version %d; migrations apply in order: renumber it above %d",
				mig.File, newestApplied, newestApplied)
		default:
			pending = append(pending, mig)
		}
	}
	if len(errs) > 0 {
		return nil, nil, errors.Join(errs...)
	}
	return pending, ahead, nil
}
