package migrate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// MigrationError is a migration that failed: its transaction rolled back (or,
// for a no-transaction one, it is recorded failed). The revision that carries
// it must not go live.
type MigrationError struct {
	Version   int64
	File      string
	Line      int    // of the error when PostgreSQL reports a position, else of the statement
	Statement string // the failing statement
	Err       error  // from PostgreSQL: errors.As finds a *pgconn.PgError
	Hint      string // what to do, when drover knows
}

func (e *MigrationError) Error() string {
	stmt := strings.Join(strings.Fields(e.Statement), " ")
	if len(stmt) > 120 {
		stmt = stmt[:117] + "..."
	}
	s := fmt.Sprintf("migration %s:%d: %s: %v", e.File, e.Line, stmt, e.Err)
	if e.Hint != "" {
		s += " (" + e.Hint + ")"
	}
	return s
}

func (e *MigrationError) Unwrap() error { return e.Err }

// Up applies the pending migrations of ms in version order, holding the
// migration lock from before it reads the ledger until it returns; it waits
// for the lock as long as ctx allows. It returns the migrations it applied.
// It refuses to run anything (ErrRefused) when ms is not strictly increasing,
// a Checksum is not SQL's, or the ledger disagrees with ms (see the package
// doc); it stops at the first failing migration with a *MigrationError.
// Other errors (connection, ctx) are not the migrations' fault: retry later.
func (m *Migrator) Up(ctx context.Context, ms []Migration) ([]Migration, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	files := make(map[int64]*sqlFile, len(ms))
	for i, mig := range ms {
		if i > 0 && mig.Version <= ms[i-1].Version {
			return nil, fmt.Errorf("%w: %s: version %d does not follow %s", ErrRefused, mig.File, mig.Version, ms[i-1].File)
		}
		if mig.Checksum != checksum(mig.SQL) {
			return nil, fmt.Errorf("%w: %s: Checksum %q is not the SHA-256 of its SQL", ErrRefused, mig.File, mig.Checksum)
		}
		f, err := statements(mig)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrRefused, err)
		}
		files[mig.Version] = f
	}

	unlock, err := m.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := m.ensureTable(ctx); err != nil {
		return nil, err
	}
	recs, err := m.records(ctx)
	if err != nil {
		return nil, err
	}
	pending, ahead, err := plan(ms, recs)
	if err != nil {
		return nil, err
	}
	for _, r := range ahead {
		m.log.Warn("applied migration is newer than every file (rollback to an older revision?)", "file", r.File, "version", r.Version)
	}
	var applied []Migration
	for _, mig := range pending {
		log := m.log.With("file", mig.File)
		log.Info("applying migration", "no_transaction", mig.NoTransaction)
		start := time.Now()
		if mig.NoTransaction {
			err = m.applyStatements(ctx, mig, files[mig.Version])
		} else {
			err = m.applyTx(ctx, mig, files[mig.Version])
		}
		if rerr := m.resetSession(ctx); err == nil {
			err = rerr
		}
		if err != nil {
			log.Error("migration failed", "err", err, "took", time.Since(start))
			return applied, err
		}
		log.Info("migration applied", "took", time.Since(start))
		applied = append(applied, mig)
	}
	return applied, nil
}

// errLockLost: the session that was about to record a migration does not
// hold the migration lock.
var errLockLost = errors.New("this database session does not hold the migration lock " +
	"(a pooler in transaction mode between drover and PostgreSQL?); nothing was committed")

func (m *Migrator) timeouts(scope string) string {
	q := fmt.Sprintf("SET %s lock_timeout = %d", scope, ceilMillis(m.cfg.LockTimeout))
	if m.cfg.StatementTimeout > 0 {
		q += fmt.Sprintf("; SET %s statement_timeout = %d", scope, ceilMillis(m.cfg.StatementTimeout))
	}
	return q
}

func ceilMillis(d time.Duration) int64 { return int64((d + time.Millisecond - 1) / time.Millisecond) }

// insertRecord records mig in state st if this session holds the lock.
func (m *Migrator) insertRecord(ctx context.Context, q interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
}, mig Migration, st string, took time.Duration) error {
	tag, err := q.Exec(ctx, `INSERT INTO `+m.table+` (version, file, checksum, status, applied_at, applied_by, revision, duration_ms)
		SELECT $1::bigint, $2::text, $3::text, $4::text, clock_timestamp(), $5::text, $6::text, $7::bigint WHERE `+holdsLock(8, 9),
		mig.Version, mig.base(), mig.Checksum, st, m.cfg.Node, m.cfg.Revision, took.Milliseconds(), lockHi(m.key), lockLo(m.key))
	if err != nil {
		return fmt.Errorf("record %s in the ledger: %w", mig.File, err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("record %s in the ledger: %w", mig.File, errLockLost)
	}
	return nil
}

// applyTx runs a migration and records it in one transaction.
func (m *Migrator) applyTx(ctx context.Context, mig Migration, f *sqlFile) error {
	start := time.Now()
	tx, err := m.conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin %s: %w", mig.File, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) // after Commit, a no-op
	if err := execSimple(ctx, m.conn, m.timeouts("LOCAL")); err != nil {
		return fmt.Errorf("set timeouts for %s: %w", mig.File, err)
	}
	for _, s := range f.stmts {
		if err := execSimple(ctx, m.conn, s.text); err != nil {
			return m.failure(ctx, mig, f, s, err)
		}
	}
	if err := m.insertRecord(ctx, tx, mig, StateApplied, time.Since(start)); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil { // deferred constraints are checked here
		return m.failure(ctx, mig, f, statement{text: "COMMIT", start: len(f.src), line: f.lineAt(len(f.src))}, err)
	}
	return nil
}

// applyStatements runs a no-transaction migration statement by statement,
// recorded running before and applied after; failed when a statement fails.
func (m *Migrator) applyStatements(ctx context.Context, mig Migration, f *sqlFile) error {
	start := time.Now()
	if err := m.insertRecord(ctx, m.conn, mig, StateRunning, 0); err != nil {
		return err
	}
	if err := execSimple(ctx, m.conn, m.timeouts("SESSION")); err != nil {
		err = fmt.Errorf("set timeouts for %s: %w", mig.File, err)
		m.markFailed(ctx, mig, start, err)
		return err
	}
	for _, s := range f.stmts {
		if err := execSimple(ctx, m.conn, s.text); err != nil {
			ferr := m.failure(ctx, mig, f, s, err)
			m.markFailed(ctx, mig, start, ferr)
			return ferr
		}
	}
	tag, err := m.conn.Exec(ctx, `UPDATE `+m.table+` SET status = 'applied', applied_at = clock_timestamp(), duration_ms = $2
		WHERE version = $1 AND status = 'running' AND `+holdsLock(3, 4), mig.Version, time.Since(start).Milliseconds(), lockHi(m.key), lockLo(m.key))
	switch {
	case err != nil:
		return fmt.Errorf("record %s applied: %w", mig.File, err)
	case tag.RowsAffected() != 1:
		return fmt.Errorf("record %s applied: %w", mig.File, errLockLost)
	}
	return nil
}

// markFailed records a no-transaction migration as failed. If that fails
// too, the row stays "running", which blocks Up just the same.
func (m *Migrator) markFailed(ctx context.Context, mig Migration, start time.Time, cause error) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_, err := m.conn.Exec(wctx, `UPDATE `+m.table+` SET status = 'failed', applied_at = clock_timestamp(), duration_ms = $2, error = $3
		WHERE version = $1 AND status = 'running'`, mig.Version, time.Since(start).Milliseconds(), cause.Error())
	if err != nil {
		m.log.Error("record failed migration; it stays running in the ledger", "file", mig.File, "err", err)
	}
}

// failure describes a failed statement. A cancelled ctx is not the
// migration's fault and stays a plain error.
func (m *Migrator) failure(ctx context.Context, mig Migration, f *sqlFile, s statement, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("migration %s:%d interrupted: %w (%v)", mig.File, s.line, ctx.Err(), err)
	}
	e := &MigrationError{Version: mig.Version, File: mig.File, Line: s.line, Statement: s.text, Err: err}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		if pe.Position > 0 && s.text != "COMMIT" {
			e.Line = f.lineAt(s.start + byteOffset(s.text, int(pe.Position)))
		}
		switch pe.Code {
		case "25001": // active_sql_transaction
			e.Hint = "statements that cannot run in a transaction need " + directive + "no-transaction on the file's first line, alone in their file"
		case "55P03": // lock_not_available
			e.Hint = fmt.Sprintf("another session held a conflicting lock longer than lock_timeout %v; nothing was changed", m.cfg.LockTimeout)
		}
	}
	return e
}

// execSimple runs sql with the simple protocol (as psql would), returning the
// first error.
func execSimple(ctx context.Context, conn *pgx.Conn, sql string) error {
	results, err := conn.PgConn().Exec(ctx, sql).ReadAll()
	for _, r := range results {
		if r.Err != nil {
			return r.Err
		}
	}
	return err
}

// Resolution is what an operator did about a failed (or interrupted)
// no-transaction migration before calling Resolve.
type Resolution int

const (
	// Retry: the operator undid what the migration did partially (e.g. DROP
	// INDEX CONCURRENTLY the INVALID index a failed CREATE INDEX
	// CONCURRENTLY leaves); its record is removed and the next Up runs it
	// again, from the file of that revision (which may be a fixed one).
	Retry Resolution = iota + 1
	// Done: the operator completed the migration by hand; it is recorded
	// applied (with its original checksum) and Up will not run it.
	Done
)

func (r Resolution) String() string {
	switch r {
	case Retry:
		return "retry"
	case Done:
		return "done"
	}
	return fmt.Sprintf("Resolution(%d)", int(r))
}

// Resolve clears the block a failed or interrupted no-transaction migration
// puts on Up, after an operator repaired the schema by hand: see Resolution.
// It holds the migration lock, so it waits for a running Up.
func (m *Migrator) Resolve(ctx context.Context, version int64, how Resolution) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if how != Retry && how != Done {
		return fmt.Errorf("resolve version %d: unknown %v", version, how)
	}
	unlock, err := m.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	if err := m.ensureTable(ctx); err != nil {
		return err
	}
	var file, state, cause string
	err = m.conn.QueryRow(ctx, `SELECT file, status, error FROM `+m.table+` WHERE version = $1`, version).Scan(&file, &state, &cause)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("resolve version %d: not in the ledger", version)
	case err != nil:
		return fmt.Errorf("resolve version %d: %w", version, err)
	case state == StateApplied:
		return fmt.Errorf("resolve %s: it is applied, not failed", file)
	}
	if how == Retry {
		_, err = m.conn.Exec(ctx, `DELETE FROM `+m.table+` WHERE version = $1 AND status <> 'applied'`, version)
	} else {
		note := fmt.Sprintf("resolved by hand (%s) by %s, after: %s", how, m.cfg.Node, cause)
		_, err = m.conn.Exec(ctx, `UPDATE `+m.table+` SET status = 'applied', applied_at = clock_timestamp(), applied_by = $2,
			revision = $3, error = $4 WHERE version = $1 AND status <> 'applied'`, version, m.cfg.Node, m.cfg.Revision, note)
	}
	if err != nil {
		return fmt.Errorf("resolve %s: %w", file, err)
	}
	m.log.Info("resolved failed migration", "file", file, "how", how.String(), "was", state)
	return nil
}
