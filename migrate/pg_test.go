package migrate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/testsvc"
	"github.com/drover-dev/drover/spec"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestPostgres runs every scenario against one real PostgreSQL server, each
// in a database of its own, in parallel.
func TestPostgres(t *testing.T) {
	pg := testsvc.StartPostgres(t)
	for i, tc := range []struct {
		name string
		fn   func(*testing.T, *env)
	}{
		{"AppliesAndRecordsOnce", testAppliesAndRecordsOnce},
		{"FailureRollsBackAndNamesStatement", testFailureRollsBack},
		{"ChecksumDriftRefused", testChecksumDrift},
		{"LockTimeout", testLockTimeout},
		{"StatementTimeout", testStatementTimeout},
		{"NoTransactionFailureBlocksUntilResolve", testNoTransaction},
		{"MissingFilesAndOrder", testMissingAndOrder},
		{"LockLostNothingCommitted", testLockLost},
		{"ContextBoundsEveryWait", testContextBoundsWaits},
		{"SessionStateDoesNotLeak", testSessionState},
		{"RacingProcessesApplyOnce", testRacingProcesses},
		{"KilledMidMigrationLeavesNothing", testKilledMidMigration},
		{"KilledMidNoTransactionBlocks", testKilledMidNoTransaction},
		{"TransactionPoolerRefused", testTransactionPoolerRefused},
		{"SessionPoolerAccepted", testSessionPoolerAccepted},
		{"PgBouncerTransactionRefused", testPgBouncerTransactionRefused},
		{"PgBouncerSessionAccepted", testPgBouncerSessionAccepted},
		{"PgBouncerSessionPoolFull", testPgBouncerSessionPoolFull},
		{"RunnerAppliedReadsTheLedger", testRunnerApplied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newEnv(t, pg.DSN, fmt.Sprintf("t%d", i)))
		})
	}
}

// env is one test's database and migrations directory.
type env struct {
	t     *testing.T
	ctx   context.Context
	dsn   string
	admin *pgx.Conn // to the test's database, for checks
	root  string    // holds migrations/
}

func newEnv(t *testing.T, serverDSN, db string) *env {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	t.Cleanup(cancel)
	c, err := pgx.Connect(ctx, serverDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE DATABASE "+db); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, ctx: ctx, dsn: strings.Replace(serverDSN, "/postgres?", "/"+db+"?", 1), root: t.TempDir()}
	if e.admin, err = pgx.Connect(ctx, e.dsn); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.admin.Close(context.Background()) })
	if err := os.Mkdir(filepath.Join(e.root, "migrations"), 0o755); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) write(name, sql string) {
	e.t.Helper()
	if err := os.WriteFile(filepath.Join(e.root, "migrations", name), []byte(sql), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) remove(name string) {
	e.t.Helper()
	if err := os.Remove(filepath.Join(e.root, "migrations", name)); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) load() []Migration {
	e.t.Helper()
	ms, err := Load(os.DirFS(e.root), "migrations")
	if err != nil {
		e.t.Fatal(err)
	}
	return ms
}

func (e *env) open(cfg Config) *Migrator {
	e.t.Helper()
	if cfg.Node == "" {
		cfg.Node = "node-test"
	}
	m, err := Open(e.ctx, e.dsn, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { m.Close(context.Background()) })
	return m
}

// value runs a one-value query on the test's database.
func value[T any](e *env, query string, args ...any) T {
	e.t.Helper()
	var v T
	if err := e.admin.QueryRow(e.ctx, query, args...).Scan(&v); err != nil {
		e.t.Fatalf("%s: %v", query, err)
	}
	return v
}

func (e *env) exists(relation string) bool {
	e.t.Helper()
	return value[bool](e, "SELECT to_regclass($1) IS NOT NULL", relation)
}

func versions(ms []Migration) []int64 {
	var v []int64
	for _, m := range ms {
		v = append(v, m.Version)
	}
	return v
}

func testAppliesAndRecordsOnce(t *testing.T, e *env) {
	if _, err := e.admin.Exec(e.ctx, "CREATE SCHEMA ops"); err != nil {
		t.Fatal(err)
	}
	e.write("0001_users.sql", "CREATE TABLE users (id int PRIMARY KEY, name text);\nINSERT INTO users VALUES (1, 'a;b');\n")
	e.write("0002_more.sql", "INSERT INTO users VALUES (2, $$it's$$);")
	cfg := Config{Node: "n1", Revision: "abc123", Table: "ops.Ledger"}
	m := e.open(cfg)
	applied, err := m.Up(e.ctx, e.load())
	if err != nil || fmt.Sprint(versions(applied)) != "[1 2]" {
		t.Fatalf("Up = %v, %v", versions(applied), err)
	}
	if again, err := e.open(cfg).Up(e.ctx, e.load()); err != nil || len(again) != 0 {
		t.Fatalf("second Up = %v, %v", versions(again), err)
	}
	if n := value[int](e, "SELECT count(*) FROM users"); n != 2 {
		t.Fatalf("%d users, want 2", n)
	}
	st, err := m.Status(e.ctx, e.load())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Applied) != 2 || len(st.Pending)+len(st.Failed)+len(st.Missing)+len(st.Mismatched) != 0 || st.Locked {
		t.Fatalf("status %+v", st)
	}
	r := st.Applied[0]
	if r.File != "0001_users.sql" || r.Node != "n1" || r.Revision != "abc123" || r.State != StateApplied ||
		r.Checksum != e.load()[0].Checksum || time.Since(r.AppliedAt) > time.Minute || r.Duration < 0 {
		t.Fatalf("record %+v", r)
	}
	if n := value[int](e, `SELECT count(*) FROM ops."Ledger"`); n != 2 {
		t.Fatalf("ledger has %d rows", n)
	}
	if value[bool](e, "SELECT to_regclass('public.drover_schema_migrations') IS NOT NULL") {
		t.Fatal("the default table was created although Table was set")
	}
}

func testFailureRollsBack(t *testing.T, e *env) {
	e.write("0001_ok.sql", "CREATE TABLE ok (id int);")
	e.write("0002_bad.sql", "CREATE TABLE half (id int);\nINSERT INTO half VALUES (1);\nINSERT INTO half\nSELECT id FROM\n  nosuch;\n")
	m := e.open(Config{})
	applied, err := m.Up(e.ctx, e.load())
	var me *MigrationError
	if !errors.As(err, &me) {
		t.Fatalf("Up = %v, want a *MigrationError", err)
	}
	var pe *pgconn.PgError
	if me.File != "migrations/0002_bad.sql" || me.Version != 2 || me.Line != 5 || !strings.Contains(me.Statement, "nosuch") ||
		!errors.As(err, &pe) || pe.Code != "42P01" || !strings.Contains(err.Error(), "migrations/0002_bad.sql:5: INSERT INTO half SELECT id FROM nosuch;") {
		t.Fatalf("error %+v: %v", me, err)
	}
	if fmt.Sprint(versions(applied)) != "[1]" || !e.exists("ok") || e.exists("half") {
		t.Fatalf("applied %v; ok exists %v, half exists %v (must be rolled back)", versions(applied), e.exists("ok"), e.exists("half"))
	}
	if n := value[int](e, "SELECT count(*) FROM drover_schema_migrations"); n != 1 {
		t.Fatalf("ledger has %d rows, want 1", n)
	}

	// A runtime error has no position: the statement's line is reported.
	e.write("0002_bad.sql", "CREATE TABLE half (id int);\n\nSELECT 1/0;\n")
	_, err = m.Up(e.ctx, e.load())
	if !errors.As(err, &me) || me.Line != 3 || !errors.As(err, &pe) || pe.Code != "22012" || e.exists("half") {
		t.Fatalf("Up = %v", err)
	}
	// The file was never applied, so the next revision may fix it.
	e.write("0002_bad.sql", "CREATE TABLE half (id int);\n")
	if applied, err := m.Up(e.ctx, e.load()); err != nil || fmt.Sprint(versions(applied)) != "[2]" || !e.exists("half") {
		t.Fatalf("Up after the fix = %v, %v", versions(applied), err)
	}
	// CREATE INDEX CONCURRENTLY in a transactional file: a hint.
	e.write("0003_idx.sql", "CREATE INDEX CONCURRENTLY ok_id ON ok (id);")
	if _, err := m.Up(e.ctx, e.load()); !errors.As(err, &me) || !strings.Contains(err.Error(), "-- drover:no-transaction") {
		t.Fatalf("Up = %v, want a hint about no-transaction", err)
	}
}

func testChecksumDrift(t *testing.T, e *env) {
	e.write("0001_a.sql", "CREATE TABLE a (id int);")
	m := e.open(Config{})
	if _, err := m.Up(e.ctx, e.load()); err != nil {
		t.Fatal(err)
	}
	old := e.load()[0].Checksum
	e.write("0001_a.sql", "CREATE TABLE a (id bigint);")
	e.write("0002_b.sql", "CREATE TABLE b (id int);")
	applied, err := m.Up(e.ctx, e.load())
	if !errors.Is(err, ErrRefused) || len(applied) != 0 {
		t.Fatalf("Up = %v, %v; want ErrRefused", versions(applied), err)
	}
	for _, want := range []string{"migrations/0001_a.sql changed after it was applied", old, e.load()[0].Checksum} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if e.exists("b") {
		t.Fatal("a pending migration ran although the ledger disagreed with the files")
	}
	st, err := m.Status(e.ctx, e.load())
	if err != nil || len(st.Mismatched) != 1 || st.Mismatched[0].Record.Checksum != old || len(st.Pending) != 1 {
		t.Fatalf("status %+v, %v", st, err)
	}
}

func testLockTimeout(t *testing.T, e *env) {
	if _, err := e.admin.Exec(e.ctx, "CREATE TABLE busy (id int)"); err != nil {
		t.Fatal(err)
	}
	holder, err := pgx.Connect(e.ctx, e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(e.ctx)
	tx, err := holder.Begin(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(e.ctx, "LOCK TABLE busy IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	e.write("0001_busy.sql", "CREATE TABLE side (id int);\nALTER TABLE busy ADD COLUMN x int;\n")
	m := e.open(Config{LockTimeout: 300 * time.Millisecond})
	start := time.Now()
	_, err = m.Up(e.ctx, e.load())
	took := time.Since(start)
	var me *MigrationError
	var pe *pgconn.PgError
	if !errors.As(err, &me) || !errors.As(err, &pe) || pe.Code != "55P03" || me.Line != 2 {
		t.Fatalf("Up = %v, want a lock timeout (55P03) on line 2", err)
	}
	if took > 10*time.Second {
		t.Fatalf("Up took %v with a 300ms lock_timeout", took)
	}
	tx.Rollback(e.ctx)
	if e.exists("side") || value[int](e, "SELECT count(*) FROM drover_schema_migrations") != 0 {
		t.Fatal("the failed migration left a table or a ledger row")
	}
}

func testStatementTimeout(t *testing.T, e *env) {
	e.write("0001_slow.sql", "CREATE TABLE side (id int);\nSELECT pg_sleep(5);\n")
	m := e.open(Config{StatementTimeout: 200 * time.Millisecond})
	_, err := m.Up(e.ctx, e.load())
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "57014" || e.exists("side") {
		t.Fatalf("Up = %v, want a statement timeout (57014) and nothing applied", err)
	}
	// The timeouts were LOCAL to the migration's transaction.
	var st, lt string
	if err := m.conn.QueryRow(e.ctx, "SELECT current_setting('statement_timeout'), current_setting('lock_timeout')").Scan(&st, &lt); err != nil || st != "0" || lt != "0" {
		t.Fatalf("timeouts leaked into the session: statement_timeout %s, lock_timeout %s (%v)", st, lt, err)
	}
}

func testNoTransaction(t *testing.T, e *env) {
	e.write("0001_t.sql", "CREATE TABLE t (x int);\nINSERT INTO t VALUES (1), (1), (2);\n")
	e.write("0002_idx.sql", "-- drover:no-transaction\nCREATE INDEX CONCURRENTLY t_x ON t (x);\nCREATE INDEX CONCURRENTLY t_x2 ON t ((x * 2));\n")
	e.write("0003_unique.sql", "-- drover:no-transaction\nCREATE TABLE before_failure (id int);\nCREATE UNIQUE INDEX CONCURRENTLY t_u ON t (x);\n")
	e.write("0004_after.sql", "CREATE TABLE after (id int);")
	m := e.open(Config{Revision: "r1"})
	applied, err := m.Up(e.ctx, e.load())
	var me *MigrationError
	if !errors.As(err, &me) || me.File != "migrations/0003_unique.sql" || me.Line != 3 || fmt.Sprint(versions(applied)) != "[1 2]" {
		t.Fatalf("Up = %v, %v", versions(applied), err)
	}
	if !value[bool](e, "SELECT indisvalid FROM pg_index WHERE indexrelid = 't_x2'::regclass") {
		t.Fatal("the concurrent index is not valid")
	}
	if !e.exists("before_failure") || value[bool](e, "SELECT indisvalid FROM pg_index WHERE indexrelid = 't_u'::regclass") {
		t.Fatal("a no-transaction migration runs statement by statement: the first should stay, the index be INVALID")
	}
	if s := value[string](e, "SELECT status || ': ' || error FROM drover_schema_migrations WHERE version = 3"); !strings.HasPrefix(s, "failed: ") ||
		!strings.Contains(s, "could not create unique index") {
		t.Fatalf("ledger row: %s", s)
	}

	// Blocked, even for other migrations, until resolved.
	_, err = m.Up(e.ctx, e.load())
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "0003_unique.sql failed on node-test") || e.exists("after") {
		t.Fatalf("Up = %v, want refusal until Resolve", err)
	}
	st, err := m.Status(e.ctx, e.load())
	if err != nil || len(st.Failed) != 1 || st.Failed[0].Version != 3 || st.Failed[0].State != StateFailed || len(st.Pending) != 1 {
		t.Fatalf("status %+v, %v", st, err)
	}
	if err := m.Resolve(e.ctx, 1, Retry); err == nil {
		t.Fatal("Resolve accepted an applied migration")
	}
	if err := m.Resolve(e.ctx, 99, Retry); err == nil {
		t.Fatal("Resolve accepted an unknown version")
	}
	// The operator undoes the partial effects; the next revision fixes the file.
	if _, err := e.admin.Exec(e.ctx, "DROP INDEX t_u; DROP TABLE before_failure"); err != nil {
		t.Fatal(err)
	}
	e.write("0003_unique.sql", "-- drover:no-transaction\nCREATE TABLE before_failure (id int);\nCREATE INDEX CONCURRENTLY t_u ON t (x);\n")
	if err := m.Resolve(e.ctx, 3, Retry); err != nil {
		t.Fatal(err)
	}
	applied, err = m.Up(e.ctx, e.load())
	if err != nil || fmt.Sprint(versions(applied)) != "[3 4]" || !e.exists("after") {
		t.Fatalf("Up after Resolve = %v, %v", versions(applied), err)
	}
	if s := value[string](e, "SELECT string_agg(status, ',' ORDER BY version) FROM drover_schema_migrations"); s != "applied,applied,applied,applied" {
		t.Fatalf("ledger states %s", s)
	}
}

func testMissingAndOrder(t *testing.T, e *env) {
	for _, f := range []string{"0001_a.sql", "0002_b.sql", "0003_c.sql"} {
		e.write(f, "SELECT 1;")
	}
	m := e.open(Config{})
	if _, err := m.Up(e.ctx, e.load()); err != nil {
		t.Fatal(err)
	}
	// A rollback to a revision without 0003: fine, and reported.
	e.remove("0003_c.sql")
	if applied, err := m.Up(e.ctx, e.load()); err != nil || len(applied) != 0 {
		t.Fatalf("Up after a rollback = %v, %v", versions(applied), err)
	}
	st, err := m.Status(e.ctx, e.load())
	if err != nil || len(st.Missing) != 1 || st.Missing[0].File != "0003_c.sql" || len(st.Applied) != 2 {
		t.Fatalf("status %+v, %v", st, err)
	}
	// A file deleted from the middle: refused.
	e.write("0003_c.sql", "SELECT 1;")
	e.remove("0002_b.sql")
	if _, err := m.Up(e.ctx, e.load()); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "0002_b.sql was applied") {
		t.Fatalf("Up = %v, want refusal of the gap", err)
	}
	e.write("0002_b.sql", "SELECT 1;")
	// A pending file older than an applied one: refused.
	e.write("0005_e.sql", "SELECT 1;")
	if _, err := m.Up(e.ctx, e.load()); err != nil {
		t.Fatal(err)
	}
	e.write("0004_d.sql", "CREATE TABLE d ();")
	if _, err := m.Up(e.ctx, e.load()); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "renumber it above 5") || e.exists("d") {
		t.Fatalf("Up = %v, want refusal of an out-of-order migration", err)
	}
	// Migrations handed to Up must be in order with honest checksums.
	ms := e.load()
	ms[0], ms[1] = ms[1], ms[0]
	if _, err := m.Up(e.ctx, ms); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "does not follow") {
		t.Fatalf("Up = %v", err)
	}
	ms = e.load()
	ms[0].SQL = []byte("DROP TABLE d;")
	if _, err := m.Up(e.ctx, ms); !errors.Is(err, ErrRefused) {
		t.Fatalf("Up = %v", err)
	}
}

func testLockLost(t *testing.T, e *env) {
	e.write("0001_a.sql", "CREATE TABLE a (id int);")
	e.write("0002_b.sql", "-- drover:no-transaction\nCREATE TABLE b (id int);")
	m := e.open(Config{})
	ms := e.load()
	unlock, err := m.lock(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if err := m.ensureTable(e.ctx); err != nil {
		t.Fatal(err)
	}
	// What a transaction pooler does to a session lock: the statements that
	// follow run in a session that does not hold it.
	if _, err := m.conn.Exec(e.ctx, "SELECT pg_advisory_unlock_all()"); err != nil {
		t.Fatal(err)
	}
	for _, mig := range ms {
		f, _ := statements(mig)
		var err error
		if mig.NoTransaction {
			err = m.applyStatements(e.ctx, mig, f)
		} else {
			err = m.applyTx(e.ctx, mig, f)
		}
		if !errors.Is(err, errLockLost) {
			t.Fatalf("%s: %v, want errLockLost", mig.File, err)
		}
	}
	if e.exists("a") || e.exists("b") || value[int](e, "SELECT count(*) FROM drover_schema_migrations") != 0 {
		t.Fatal("a migration committed in a session without the lock")
	}
}

func testContextBoundsWaits(t *testing.T, e *env) {
	e.write("0001_slow.sql", "CREATE TABLE slow (id int);\nSELECT pg_sleep(30);\n")
	m := e.open(Config{})
	ctx, cancel := context.WithTimeout(e.ctx, 500*time.Millisecond)
	defer cancel()
	_, err := m.Up(ctx, e.load())
	var me *MigrationError
	if !errors.Is(err, context.DeadlineExceeded) || errors.As(err, &me) || e.exists("slow") {
		t.Fatalf("Up = %v, want a plain deadline error (not the migration's fault) and nothing applied", err)
	}
	// The server cancelled the statement; the session is still usable.
	e.write("0001_slow.sql", "CREATE TABLE slow (id int);\n")
	if applied, err := m.Up(e.ctx, e.load()); err != nil || len(applied) != 1 {
		t.Fatalf("Up after a cancelled one = %v, %v", versions(applied), err)
	}

	// Waiting for the lock another node holds ends with ctx, naming the holder.
	other := e.open(Config{Node: "holder"})
	unlock, err := other.lock(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	e.write("0002_more.sql", "CREATE TABLE more (id int);")
	ctx, cancel = context.WithTimeout(e.ctx, 500*time.Millisecond)
	defer cancel()
	if _, err := m.Up(ctx, e.load()); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "drover-migrate@holder") {
		t.Fatalf("Up = %v, want a deadline naming the holder", err)
	}
	if st, err := m.Status(e.ctx, e.load()); err != nil || !st.Locked || len(st.Pending) != 1 {
		t.Fatalf("status %+v, %v", st, err)
	}
}

func testSessionState(t *testing.T, e *env) {
	e.write("0001_path.sql", "CREATE SCHEMA other;\nSET search_path TO other;\nSET lock_timeout = '1h';\nCREATE TABLE x ();\n")
	e.write("0002_next.sql", "CREATE TABLE y ();")
	m := e.open(Config{})
	if applied, err := m.Up(e.ctx, e.load()); err != nil || len(applied) != 2 {
		t.Fatalf("Up = %v, %v", versions(applied), err)
	}
	if !e.exists("other.x") || !e.exists("public.y") || value[int](e, "SELECT count(*) FROM public.drover_schema_migrations") != 2 {
		t.Fatal("a migration's SET leaked into the next migration or moved the ledger")
	}
}

func TestConfigRefusedBeforeConnecting(t *testing.T) {
	_, err := Open(context.Background(), "postgres://127.0.0.1:1/x", Config{Table: "a.b.c", LockTimeout: -1})
	if err == nil || !strings.Contains(err.Error(), `table "a.b.c"`) || !strings.Contains(err.Error(), "lock timeout") {
		t.Fatalf("Open = %v", err)
	}
}

// Runner.Applied is true only once the ledger holds every migration of the
// revision, applied and unchanged, and it changes nothing itself.
func testRunnerApplied(t *testing.T, e *env) {
	dsnFile := filepath.Join(t.TempDir(), "dsn")
	if err := os.WriteFile(dsnFile, []byte(e.dsn), 0o600); err != nil {
		t.Fatal(err)
	}
	r := NewRunner(RunnerConfig{Node: "web1", Database: &Database{DSNFile: dsnFile}, Log: slog.New(slog.DiscardHandler)})
	sp := &spec.Spec{Migrations: &spec.Migrations{Dir: "migrations"}}
	fsys := os.DirFS(e.root)
	applied := func(want bool, when string) {
		t.Helper()
		got, err := r.Applied(e.ctx, "rev1", sp, fsys)
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		if got != want {
			t.Errorf("%s: Applied = %v, want %v", when, got, want)
		}
	}
	if ok, err := r.Applied(e.ctx, "rev1", &spec.Spec{}, fsys); err != nil || !ok {
		t.Errorf("no migrations: %v, %v; want true", ok, err)
	}
	e.write("0001_a.sql", "CREATE TABLE a (id int);")
	applied(false, "before any run")
	applied(false, "asked twice") // Applied itself ran nothing
	if e.exists("a") {
		t.Fatal("Applied ran a migration")
	}
	if err := r.Migrate(e.ctx, "rev1", sp, fsys); err != nil {
		t.Fatal(err)
	}
	applied(true, "after the run")
	e.write("0002_b.sql", "CREATE TABLE b (id int);")
	applied(false, "with a new file")
	e.remove("0002_b.sql")
	e.write("0001_a.sql", "CREATE TABLE a (id bigint);")
	applied(false, "with an applied file changed")
}
