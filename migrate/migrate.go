// Package migrate applies the config repo's SQL migrations to PostgreSQL
// exactly once cluster-wide, however many nodes race for them, even when the
// cluster's Redis lock is lost or a node dies mid-migration.
//
// The contract:
//
//   - Migrations are files NNNN_name.sql in one directory (see Load), applied
//     in version order. An applied file must never change: its SHA-256 is in
//     the ledger and Up refuses to run when a file differs from it.
//   - The ledger is a table (Config.Table, default drover_schema_migrations)
//     with one row per migration: version, file, checksum, status, when, by
//     which node, for which revision, how long it took, and the error of a
//     failed one. Up creates it when missing.
//   - Up holds a PostgreSQL session advisory lock (its key derived from the
//     ledger's table name) from before it reads the ledger until it has
//     applied everything, so only one session in the database migrates at a
//     time. A transactional migration and its ledger row commit in one
//     transaction, and that transaction also checks that its own session
//     holds the lock: a migration is either applied and recorded, or neither.
//     A process killed mid-migration leaves nothing; its session's lock and
//     transaction end with its connection.
//   - A migration that fails rolls back and stops Up with a *MigrationError
//     naming the file, line and statement: the revision must not go live.
//   - A "-- drover:no-transaction" migration runs statement by statement.
//     It is recorded "running" before its first statement and "applied"
//     after its last; one that fails, or whose process dies, stays "failed"
//     (or "running") and Up refuses to run anything until an operator
//     repairs the schema and calls Resolve.
//   - Up refuses (ErrRefused) before running anything when a file changed
//     after it was applied, when an applied file is missing while newer files
//     exist, when a pending file is older than an applied one, or when a
//     no-transaction migration awaits Resolve. Applied rows newer than every
//     file are fine: that is a rollback to an older revision (expand/contract
//     keeps old code working on the newer schema).
//   - Open refuses a connection through a pooler in transaction pooling mode
//     (ErrTransactionPooling), where a session's lock would not stay with it.
//
// Statements are cut as psql cuts a file (see split: quotes, dollar quotes,
// comments, BEGIN ATOMIC bodies) and sent one at a time with the simple
// protocol, inside the migration's transaction unless it is a no-transaction
// one: a failure then names its statement, and PostgreSQL's error position
// its line. (One multi-statement query string would not do: PostgreSQL runs
// it as one implicit transaction, where CREATE INDEX CONCURRENTLY is refused.)
// Every statement runs under Config.LockTimeout and StatementTimeout, SET
// LOCAL in a transaction, SET for the session otherwise; the session is RESET
// after every migration.
//
// The Migrator owns one dedicated connection (a pgx.Conn, never a pool); its
// methods serialize on it. A cancelled ctx cancels the running statement on
// the server, and the connection stays usable.
package migrate

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
)

// Config tunes a Migrator; the zero value is valid.
type Config struct {
	// Node names this node in the ledger (applied_by); default: the host name.
	Node string
	// Revision is the config-repo revision whose migrations run; recorded.
	Revision string
	// LockTimeout is PostgreSQL's lock_timeout for every migration statement:
	// a statement waiting longer for a table lock fails (SQLSTATE 55P03)
	// instead of queueing every query behind it. Default 10s.
	LockTimeout time.Duration
	// StatementTimeout is statement_timeout for every migration statement;
	// 0 keeps the server's (ctx bounds the wait in any case).
	StatementTimeout time.Duration
	// Table is the ledger table, optionally schema-qualified; default
	// drover_schema_migrations. Every node must use the same name: the
	// advisory lock's key derives from it.
	Table string
	// Log receives progress; default: discarded.
	Log *slog.Logger
}

// DefaultTable is the ledger table used when Config.Table is empty.
const DefaultTable = "drover_schema_migrations"

func (c Config) withDefaults() (Config, error) {
	if c.Node == "" {
		c.Node, _ = os.Hostname()
	}
	if c.LockTimeout == 0 {
		c.LockTimeout = 10 * time.Second
	}
	if c.Table == "" {
		c.Table = DefaultTable
	}
	if c.Log == nil {
		c.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	var errs []error
	if c.LockTimeout < 0 {
		errs = append(errs, fmt.Errorf("lock timeout %v is negative", c.LockTimeout))
	}
	if c.StatementTimeout < 0 {
		errs = append(errs, fmt.Errorf("statement timeout %v is negative", c.StatementTimeout))
	}
	if parts := strings.Split(c.Table, "."); len(parts) > 2 || slices.Contains(parts, "") {
		errs = append(errs, fmt.Errorf("table %q is not name or schema.name", c.Table))
	}
	return c, errors.Join(errs...)
}

// Migrator applies migrations over one dedicated connection.
type Migrator struct {
	mu    sync.Mutex
	conn  *pgx.Conn
	cfg   Config
	log   *slog.Logger
	table string // quoted schema.name
	key   int64  // advisory lock key
	// checkInterval: the server supports client_connection_check_interval
	// (PostgreSQL 14+), so it ends a dead client's statement within a second.
	checkInterval bool
}

// ErrTransactionPooling is returned by Open for a connection through a pooler
// that does not pin a client to one server session (PgBouncer's
// pool_mode=transaction or statement).
var ErrTransactionPooling = errors.New("the connection goes through a pooler in transaction pooling mode " +
	"(PgBouncer pool_mode=transaction?): a session advisory lock would not stay with this client, so migrations " +
	"could run twice; point drover's database URL at PostgreSQL itself, or at a pool with pool_mode=session")

// Open connects to dsn with a dedicated connection and checks that the
// connection is one PostgreSQL session (see ErrTransactionPooling).
//
// PostgreSQL tells a client its backend's process id (BackendKeyData) when it
// connects; a pooler answers the startup itself with an id of its own. When
// the id matches pg_backend_pid() nothing between can move the client to
// another session (a TCP proxy passes the id through): accepted. Otherwise a
// pooler is there, and Open probes whether it pins the client to one server
// session, as session pooling does, with a second connection:
//
//  1. the probe starts a transaction and asks for its backend's pid: the
//     server connection this client just used, idle in a transaction pool,
//     is refused; a pooler that refuses the transaction block (statement
//     pooling) is refused;
//  2. this client asks again while the probe holds its server connection;
//  3. the probe ends its transaction, which hands its server connection back
//     to a transaction pool, and asks again;
//  4. this client asks once more.
//
// Under session pooling every answer of each client is the same and the two
// clients' differ; any other answer, or a client waiting for a server
// connection after step 1 (a pinned client never waits), is refused.
// PgBouncer, which hands out the most recently released server connection
// first (server_round_robin=0, its default), fails step 1 every time; with
// server_round_robin=1 it fails step 1, 2 or 3. If the probe itself gets no
// server connection within 5 s (a session pool whose servers are all taken),
// Open fails with an error saying so, since it cannot tell.
//
// This is a probe, and a transaction pool busy with other clients, which may
// hand each of the two clients the same server connection every time by
// chance, can fool it. The guarantee does not rest on it: every migration's
// transaction checks that its own session holds the migration lock before it
// records the migration (see the package doc), so behind an undetected
// transaction pooler a migration fails instead of running twice.
func Open(ctx context.Context, dsn string, cfg Config) (*Migrator, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("migrate config: %w", err)
	}
	pc, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("migrations database: %w", err)
	}
	if pc.RuntimeParams["application_name"] == "" {
		pc.RuntimeParams["application_name"] = "drover-migrate@" + cfg.Node
	}
	// Migration SQL runs with the simple protocol; the ledger's queries use
	// unnamed statements, so nothing cached goes stale when a migration
	// changes the schema.
	pc.DefaultQueryExecMode = pgx.QueryExecModeExec
	// A cancelled ctx cancels the running statement on the server (and keeps
	// the connection usable) rather than only dropping the socket, which would
	// leave the statement running and the lock held until it ended.
	pc.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: c, DeadlineDelay: 5 * time.Second}
	}
	conn, err := pgx.ConnectConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("migrations database: %w", err)
	}
	m := &Migrator{conn: conn, cfg: cfg, log: cfg.Log.With("node", cfg.Node, "rev", cfg.Revision), key: lockKey(cfg.Table)}
	if err := m.checkSession(ctx, pc); err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("migrations database %s:%d/%s: %w", pc.Host, pc.Port, pc.Database, err)
	}
	if m.table, err = qualify(ctx, conn, cfg.Table); err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	if err := m.resetSession(ctx); err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return m, nil
}

// qualify returns the ledger table's quoted name with its schema: the
// session's current schema unless given, so that a migration changing
// search_path does not move the ledger.
func qualify(ctx context.Context, conn *pgx.Conn, table string) (string, error) {
	parts := strings.Split(table, ".")
	if len(parts) == 1 {
		var schema *string
		if err := conn.QueryRow(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
			return "", fmt.Errorf("ledger schema: %w", err)
		}
		if schema == nil {
			return "", fmt.Errorf("ledger %s: no schema of search_path exists; set the table as schema.name", table)
		}
		parts = []string{*schema, table}
	}
	return pgx.Identifier(parts).Sanitize(), nil
}

// lockKey derives the advisory lock key from the ledger table's name.
func lockKey(table string) int64 {
	sum := sha256.Sum256([]byte("drover/migrate:" + table))
	return int64(binary.BigEndian.Uint64(sum[:8]))
}

func backendPID(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) (uint32, error) {
	var pid int32
	err := q.QueryRow(ctx, "SELECT pg_backend_pid()", pgx.QueryExecModeSimpleProtocol).Scan(&pid)
	return uint32(pid), err
}

// probeWait bounds how long Open's pooler probe waits for server connections.
const probeWait = 5 * time.Second

func (m *Migrator) checkSession(ctx context.Context, pc *pgx.ConnConfig) error {
	pid, err := backendPID(ctx, m.conn)
	if err != nil {
		return err
	}
	if pid == m.conn.PgConn().PID() {
		return nil
	}
	pctx, cancel := context.WithTimeout(ctx, probeWait)
	defer cancel()
	// unpinned: an answer that shows a client moved between server sessions,
	// or a wait for a server connection that a pinned client never does.
	unpinned := func(step string, err error) error {
		switch {
		case ctx.Err() != nil:
			return fmt.Errorf("probe the pooler: %w", ctx.Err())
		case err == nil || pctx.Err() != nil:
			return fmt.Errorf("%w (%s)", ErrTransactionPooling, step)
		}
		return fmt.Errorf("probe the pooler: %s: %w", step, err)
	}
	// The probe is expendable: when its wait ends it drops its socket at
	// once instead of asking the server to cancel first.
	ppc := pc.Copy()
	ppc.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.DeadlineContextWatcherHandler{Conn: c.Conn()}
	}
	probe, err := pgx.ConnectConfig(pctx, ppc)
	if err != nil {
		return fmt.Errorf("second connection to probe the pooler: %w", err)
	}
	defer probe.Close(context.WithoutCancel(ctx))

	// 1. The probe holds a server connection in a transaction.
	tx, err := probe.Begin(pctx)
	var probePID uint32
	if err == nil {
		probePID, err = backendPID(pctx, tx)
	}
	var pe *pgconn.PgError
	switch {
	case err == nil && probePID == pid:
		return unpinned("a second client got this client's server session", nil)
	case err == nil:
	case ctx.Err() != nil:
		return fmt.Errorf("probe the pooler: %w", ctx.Err())
	case errors.As(err, &pe):
		// PostgreSQL itself does not refuse BEGIN or SELECT pg_backend_pid().
		return fmt.Errorf("%w (the pooler refused a transaction: %v)", ErrTransactionPooling, err)
	case pctx.Err() != nil:
		return fmt.Errorf("probe the pooler: it gave a second client no server connection within %v "+
			"(a session pool with every server connection taken?), so whether it pins this client is unknown; "+
			"point drover's database URL at PostgreSQL itself", probeWait)
	default:
		return fmt.Errorf("probe the pooler: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))

	// 2. This client, while the probe holds its server connection.
	if again, err := backendPID(pctx, m.conn); err != nil || again != pid {
		return unpinned("this client moved to another server session while a second client was in a transaction", err)
	}
	// 3. The probe's transaction ends: a transaction pool takes the
	// server connection back, a session pool leaves it with the probe.
	if err := tx.Commit(pctx); err != nil {
		return unpinned("end the probe's transaction", err)
	}
	if again, err := backendPID(pctx, probe); err != nil || again != probePID {
		return unpinned("a second client moved to another server session after its transaction", err)
	}
	// 4. This client once more.
	if again, err := backendPID(pctx, m.conn); err != nil || again != pid {
		return unpinned("this client moved to another server session", err)
	}
	m.log.Info("connection pooler keeps this client on one server session; accepted", "pid", pid)
	return nil
}

// resetSession returns the session to its defaults after a migration (which
// may have SET things), keeping client_connection_check_interval.
func (m *Migrator) resetSession(ctx context.Context) error {
	if _, err := m.conn.Exec(ctx, "RESET ALL", pgx.QueryExecModeSimpleProtocol); err != nil {
		return fmt.Errorf("reset session: %w", err)
	}
	_, err := m.conn.Exec(ctx, "SET client_connection_check_interval = 1000", pgx.QueryExecModeSimpleProtocol)
	var pe *pgconn.PgError
	switch {
	case err == nil:
		m.checkInterval = true
	case errors.As(err, &pe) && pe.Code == "42704": // before PostgreSQL 14
	default:
		return fmt.Errorf("set client_connection_check_interval: %w", err)
	}
	return nil
}

// lock takes the session advisory lock, waiting until ctx is done. The
// returned unlock releases it, or closes the connection if it cannot: a
// lock left held would block every node.
//
// It polls pg_try_advisory_lock rather than block in pg_advisory_lock: a
// session blocked in a statement holds a snapshot, and CREATE INDEX
// CONCURRENTLY in the lock holder's migration waits for every older snapshot
// to go away, so the two would deadlock.
func (m *Migrator) lock(ctx context.Context) (unlock func(), err error) {
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		var got bool
		if err := m.conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", m.key).Scan(&got); err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return nil, fmt.Errorf("migration lock: %w", err)
		}
		if got {
			break
		}
		if wait == 50*time.Millisecond {
			m.log.Info("waiting for the migration lock", "holder", m.lockHolder(ctx))
		}
		t := time.NewTimer(wait/2 + rand.N(wait))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("wait for the migration lock held by %s: %w", m.lockHolder(context.WithoutCancel(ctx)), ctx.Err())
		case <-t.C:
		}
	}
	return func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		var released bool
		if err := m.conn.QueryRow(uctx, "SELECT pg_advisory_unlock($1)", m.key).Scan(&released); err != nil || !released {
			m.log.Error("release the migration lock; closing the connection to release it", "err", err)
			m.conn.Close(uctx)
		}
	}, nil
}

// lockHolder describes the session holding the migration lock, for messages.
func (m *Migrator) lockHolder(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	holder := "another session"
	_ = m.conn.QueryRow(ctx, `SELECT coalesce(a.application_name, '') || ' (pid ' || l.pid || ')'
		FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND l.classid::bigint = $1 AND l.objid::bigint = $2 AND l.objsubid = 1`, lockHi(m.key), lockLo(m.key)).Scan(&holder)
	return holder
}

func lockHi(k int64) int64 { return int64(uint64(k) >> 32) }
func lockLo(k int64) int64 { return int64(uint64(k) & 0xffffffff) }

// holdsLock is an SQL condition: this session holds the migration lock.
// Parameters $hi and $lo are substituted by the caller.
func holdsLock(hi, lo int) string {
	return fmt.Sprintf(`EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND classid::bigint = $%d::bigint AND objid::bigint = $%d::bigint AND objsubid = 1)`, hi, lo)
}

// Close closes the connection (which releases anything the session held).
func (m *Migrator) Close(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.conn.Close(ctx)
}
