package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/drover-dev/drover/agent"
	"github.com/drover-dev/drover/gitsource"
	"github.com/drover-dev/drover/internal/testsvc"
	"github.com/drover-dev/drover/migrate"
	"github.com/drover-dev/drover/reconcile"
	"github.com/drover-dev/drover/spec"
)

var _ reconcile.Migrator = (*migrate.Runner)(nil)

// TestMigrate runs `drover migrate` and the rollout's migrator against one
// real PostgreSQL server, each case in a database of its own.
func TestMigrate(t *testing.T) {
	pg := testsvc.StartPostgres(t)
	for i, tc := range []struct {
		name string
		fn   func(*testing.T, *migrateEnv)
	}{
		{"CLIStatusUpIdempotent", testCLIStatusUp},
		{"CLIFailedNoTransactionResolve", testCLIResolve},
		{"CLIDriftAndMissing", testCLIDrift},
		{"CLILiveRevisionFromRepo", testCLILiveRevision},
		{"CLIUsage", testCLIUsage},
		{"MigratorAppliesOnce", testMigratorApplies},
		{"MigratorFailureHaltsRevision", testMigratorFailure},
		{"MigratorNotRevisionFaults", testMigratorNotRevisionFaults},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newMigrateEnv(t, pg.DSN, fmt.Sprintf("m%d", i)))
		})
	}
}

// migrateEnv is one case's database, node.yaml and config directory.
type migrateEnv struct {
	t      *testing.T
	ctx    context.Context
	dsn    string
	admin  *pgx.Conn
	dir    string // holds node.yaml, db.dsn, state/, repo/
	cfgDir string // the config directory: drover.yaml, migrations/
	config string // node.yaml
}

func newMigrateEnv(t *testing.T, serverDSN, db string) *migrateEnv {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	c, err := pgx.Connect(ctx, serverDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE DATABASE "+db); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	e := &migrateEnv{t: t, ctx: ctx, dsn: strings.Replace(serverDSN, "/postgres?", "/"+db+"?", 1), dir: dir,
		cfgDir: filepath.Join(dir, "cfg"), config: filepath.Join(dir, "node.yaml")}
	if e.admin, err = pgx.Connect(ctx, e.dsn); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.admin.Close(context.Background()) })
	e.write("db.dsn", "\n  "+e.dsn+"  \n") // trimmed when read
	// A secret: drover refuses it when others can read it.
	if err := os.Chmod(filepath.Join(e.dir, "db.dsn"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.write("node.yaml", "name: n1\nstateDir: state\nrepo: {url: ./repo}\ndatabase: {dsnFile: db.dsn}\n")
	e.write("cfg/drover.yaml", "version: 1\nmigrations: {dir: migrations, lockTimeout: 300ms}\n")
	if err := os.MkdirAll(filepath.Join(e.cfgDir, "migrations"), 0o755); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *migrateEnv) write(rel, content string) {
	e.t.Helper()
	p := filepath.Join(e.dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

func (e *migrateEnv) migration(name, sql string) { e.t.Helper(); e.write("cfg/migrations/"+name, sql) }

// migrate runs `drover migrate args…` with --config.
func (e *migrateEnv) migrate(args ...string) (stdout, stderr string, err error) {
	var out, errb bytes.Buffer
	args = append(args[:1:1], append([]string{"--config", e.config}, args[1:]...)...)
	err = cmdMigrate(e.ctx, args, &out, &errb)
	return out.String(), errb.String(), err
}

func value[T any](e *migrateEnv, query string, args ...any) T {
	e.t.Helper()
	var v T
	if err := e.admin.QueryRow(e.ctx, query, args...).Scan(&v); err != nil {
		e.t.Fatalf("%s: %v", query, err)
	}
	return v
}

func (e *migrateEnv) exists(relation string) bool {
	e.t.Helper()
	return value[bool](e, "SELECT to_regclass($1) IS NOT NULL", relation)
}

func exitCode(err error) int {
	var ee exitError
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ue):
		return exitUsage
	}
	return exitFailure
}

func testCLIStatusUp(t *testing.T, e *migrateEnv) {
	e.migration("0001_users.sql", "CREATE TABLE users (id int PRIMARY KEY, email text);\nINSERT INTO users VALUES (1, 'a@example.com');\n")
	e.migration("0002_names.sql", "ALTER TABLE users ADD COLUMN name text;\n")
	out, stderr, err := e.migrate("status", "--dir", e.cfgDir)
	if err != nil || !strings.Contains(out, "pending     0001_users.sql\npending     0002_names.sql\n") ||
		!strings.Contains(out, "0 applied, 2 pending, 0 mismatched, 0 missing, 0 failed") {
		t.Fatalf("status before up = %v\n%s%s", err, out, stderr)
	}
	if e.exists("drover_schema_migrations") {
		t.Fatal("status created the ledger: it must change nothing")
	}

	out, stderr, err = e.migrate("up", "--dir", e.cfgDir)
	if err != nil || !strings.Contains(out, "applied  migrations/0001_users.sql\napplied  migrations/0002_names.sql\n2 applied") {
		t.Fatalf("up = %v\n%s%s", err, out, stderr)
	}
	abs, _ := filepath.Abs(e.cfgDir)
	if n := value[int](e, "SELECT count(*) FROM drover_schema_migrations WHERE status = 'applied' AND applied_by = 'n1/cli' AND revision = $1",
		"dir:"+abs); n != 2 {
		t.Fatalf("ledger has %d rows applied by n1/cli from dir:%s, want 2", n, abs)
	}
	if n := value[int](e, "SELECT count(*) FROM users WHERE name IS NULL"); n != 1 {
		t.Fatalf("users: %d rows", n)
	}

	// up again applies nothing, and each migration ran once.
	out, _, err = e.migrate("up", "--dir", e.cfgDir)
	if err != nil || !strings.Contains(out, "nothing to apply") || value[int](e, "SELECT count(*) FROM users") != 1 {
		t.Fatalf("second up = %v\n%s", err, out)
	}
	out, _, err = e.migrate("status", "--dir", e.cfgDir)
	if err != nil || !strings.Contains(out, "applied     0001_users.sql") || !strings.Contains(out, "2 applied, 0 pending, 0 mismatched") {
		t.Fatalf("status after up = %v\n%s", err, out)
	}
	out, _, err = e.migrate("status", "--dir", e.cfgDir, "-o", "json")
	var rep migrate.Report
	if err != nil || json.Unmarshal([]byte(out), &rep) != nil || len(rep.Applied) != 2 || len(rep.Pending) != 0 ||
		rep.Applied[0].AppliedBy != "n1/cli" || rep.Applied[1].File != "0002_names.sql" || len(rep.Problems) != 0 {
		t.Fatalf("status -o json = %v\n%s", err, out)
	}
}

func testCLIResolve(t *testing.T, e *migrateEnv) {
	e.migration("0001_users.sql", "CREATE TABLE users (id int, email text);\n")
	e.migration("0002_indexes.sql", "-- drover:no-transaction\nCREATE INDEX CONCURRENTLY users_email ON users (email);\n"+
		"CREATE INDEX CONCURRENTLY users_nosuch ON users (nosuch);\n")
	_, _, err := e.migrate("up", "--dir", e.cfgDir)
	var me *migrate.MigrationError
	if !errors.As(err, &me) || me.File != "migrations/0002_indexes.sql" || me.Line != 3 {
		t.Fatalf("up = %v, want the failure of 0002_indexes.sql:3", err)
	}
	if !e.exists("users_email") || e.exists("users_nosuch") {
		t.Fatal("a no-transaction migration keeps the statements before its failure")
	}
	// status shows it failed and exits 1, naming the command that clears it.
	out, stderr, err := e.migrate("status", "--dir", e.cfgDir)
	if exitCode(err) != 1 || !strings.Contains(out, "failed      0002_indexes.sql") ||
		!strings.Contains(stderr, "resolve 2 --retry|--done") {
		t.Fatalf("status = %v\n%s%s", err, out, stderr)
	}
	// Nothing runs until it is resolved.
	if _, _, err := e.migrate("up", "--dir", e.cfgDir); !errors.Is(err, migrate.ErrRefused) {
		t.Fatalf("up before resolve = %v, want ErrRefused", err)
	}
	// The operator drops what it left and fixes the file (it never applied,
	// so it may change), then retries.
	if _, err := e.admin.Exec(e.ctx, "DROP INDEX users_email"); err != nil {
		t.Fatal(err)
	}
	e.migration("0002_indexes.sql", "-- drover:no-transaction\nCREATE INDEX CONCURRENTLY users_email ON users (email);\n")
	if out, _, err := e.migrate("resolve", "2", "--retry"); err != nil || !strings.Contains(out, "applies it again") {
		t.Fatalf("resolve 2 --retry = %v\n%s", err, out)
	}
	if out, _, err := e.migrate("up", "--dir", e.cfgDir); err != nil || !strings.Contains(out, "applied  migrations/0002_indexes.sql") ||
		!e.exists("users_email") {
		t.Fatalf("up after resolve = %v\n%s", err, out)
	}

	// --done: the operator finished a failed one by hand.
	e.migration("0003_more.sql", "-- drover:no-transaction\nCREATE INDEX CONCURRENTLY users_id ON users (id);\nSELECT 1/0;\n")
	if _, _, err := e.migrate("up", "--dir", e.cfgDir); err == nil {
		t.Fatal("up of a failing migration succeeded")
	}
	if out, _, err := e.migrate("resolve", "--done", "3"); err != nil || !strings.Contains(out, "recorded applied") {
		t.Fatalf("resolve --done 3 = %v\n%s", err, out)
	}
	out, stderr, err = e.migrate("status", "--dir", e.cfgDir)
	if err != nil || !strings.Contains(out, "3 applied, 0 pending, 0 mismatched, 0 missing, 0 failed") {
		t.Fatalf("status after resolve --done = %v\n%s%s", err, out, stderr)
	}
	if _, _, err := e.migrate("resolve", "3", "--retry"); err == nil || !strings.Contains(err.Error(), "applied, not failed") {
		t.Fatalf("resolve of an applied migration = %v", err)
	}
}

func testCLIDrift(t *testing.T, e *migrateEnv) {
	e.migration("0001_a.sql", "CREATE TABLE a (id int);\n")
	e.migration("0002_b.sql", "CREATE TABLE b (id int);\n")
	e.migration("0003_c.sql", "CREATE TABLE c (id int);\n")
	if _, _, err := e.migrate("up", "--dir", e.cfgDir); err != nil {
		t.Fatal(err)
	}
	// A rollback to a revision without 0003: reported, not a problem.
	if err := os.Remove(filepath.Join(e.cfgDir, "migrations", "0003_c.sql")); err != nil {
		t.Fatal(err)
	}
	if out, stderr, err := e.migrate("status", "--dir", e.cfgDir); err != nil || !strings.Contains(out, "a rollback to an older revision, fine") {
		t.Fatalf("status after a rollback = %v\n%s%s", err, out, stderr)
	}
	// An applied file that changed: status exits 1, up refuses and changes nothing.
	e.migration("0001_a.sql", "CREATE TABLE a (id bigint);\n")
	e.migration("0004_d.sql", "CREATE TABLE d (id int);\n")
	out, stderr, err := e.migrate("status", "--dir", e.cfgDir)
	if exitCode(err) != 1 || !strings.Contains(out, "mismatched  0001_a.sql") ||
		!strings.Contains(stderr, "migrations/0001_a.sql changed after it was applied") {
		t.Fatalf("status with drift = %v\n%s%s", err, out, stderr)
	}
	out, _, err = e.migrate("status", "--dir", e.cfgDir, "-o", "json")
	var rep migrate.Report
	if exitCode(err) != 1 || json.Unmarshal([]byte(out), &rep) != nil || len(rep.Mismatched) != 1 || rep.Mismatched[0].FileChecksum == rep.Mismatched[0].Checksum {
		t.Fatalf("status -o json with drift = %v\n%s", err, out)
	}
	if _, _, err := e.migrate("up", "--dir", e.cfgDir); !errors.Is(err, migrate.ErrRefused) || e.exists("d") {
		t.Fatalf("up with drift = %v (d exists: %v), want ErrRefused and nothing applied", err, e.exists("d"))
	}
	// An applied file gone while newer ones exist: exit 1 too.
	e.migration("0001_a.sql", "CREATE TABLE a (id int);\n")
	if err := os.Remove(filepath.Join(e.cfgDir, "migrations", "0002_b.sql")); err != nil {
		t.Fatal(err)
	}
	if out, stderr, err := e.migrate("status", "--dir", e.cfgDir); exitCode(err) != 1 || !strings.Contains(stderr, "0002_b.sql was applied") {
		t.Fatalf("status with a missing file = %v\n%s%s", err, out, stderr)
	}
}

// testCLILiveRevision: without --dir, the migrations are the live
// revision's, read from the config repo at that commit.
func testCLILiveRevision(t *testing.T, e *migrateEnv) {
	if _, _, err := e.migrate("status"); err == nil || !strings.Contains(err.Error(), "no live release") || !strings.Contains(err.Error(), "--dir") {
		t.Fatalf("status without a live release = %v", err)
	}
	repo := filepath.Join(e.dir, "repo")
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", repo, "-c", "user.name=t", "-c", "user.email=t@example.com"}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if err := os.MkdirAll(repo, 0o755); err != nil {
		t.Fatal(err)
	}
	git("init", "-q", "-b", "main")
	e.write("repo/drover.yaml", "version: 1\nmigrations: {dir: db}\n")
	e.write("repo/db/0001_live.sql", "CREATE TABLE live (id int);\n")
	git("add", ".")
	git("commit", "-q", "-m", "live")
	live := git("rev-parse", "HEAD")
	// A newer commit that is not live: its migrations must not run.
	e.write("repo/db/0002_next.sql", "CREATE TABLE next (id int);\n")
	git("add", ".")
	git("commit", "-q", "-m", "next")
	if err := os.MkdirAll(filepath.Join(e.dir, "state", "releases", live), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("releases/"+live, filepath.Join(e.dir, "state", "current")); err != nil {
		t.Fatal(err)
	}

	// The branch moved past the live revision, and this server does not
	// serve older commits by id: said so, with the way out.
	if _, _, err := e.migrate("status"); !errors.Is(err, gitsource.ErrBranchMoved) || !strings.Contains(err.Error(), "--dir") {
		t.Fatalf("status when the branch moved = %v", err)
	}
	// A server that does serves the live revision.
	git("config", "uploadpack.allowReachableSHA1InWant", "true")
	out, stderr, err := e.migrate("status")
	if err != nil || !strings.Contains(out, "revision    "+live+" (live on n1)") || !strings.Contains(out, "pending     0001_live.sql") ||
		strings.Contains(out, "0002") {
		t.Fatalf("status = %v\n%s%s", err, out, stderr)
	}
	if out, stderr, err := e.migrate("up"); err != nil || !e.exists("live") || e.exists("next") {
		t.Fatalf("up = %v\n%s%s", err, out, stderr)
	}
	if rev := value[string](e, "SELECT revision FROM drover_schema_migrations WHERE version = 1"); rev != live {
		t.Fatalf("ledger revision %q, want the live %s", rev, live)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "state", "git-cli")); err != nil {
		t.Fatalf("the CLI's own git store: %v", err)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "state", "git")); err == nil {
		t.Fatal("the CLI wrote into the agent's git store")
	}
}

func testCLIUsage(t *testing.T, e *migrateEnv) {
	for _, args := range [][]string{
		{"resolve", "3"},
		{"resolve", "3", "--retry", "--done"},
		{"resolve", "x", "--retry"},
		{"resolve", "--retry"},
		{"status", "extra"},
		{"status", "-o", "yaml"},
		{"bogus"},
	} {
		if _, _, err := e.migrate(args...); exitCode(err) != exitUsage {
			t.Errorf("migrate %v = %v, want a usage error", args, err)
		}
	}
	if err := cmdMigrate(e.ctx, nil, &bytes.Buffer{}, &bytes.Buffer{}); exitCode(err) != exitUsage {
		t.Errorf("migrate without a subcommand = %v", err)
	}
}

// rolloutSpec is drover.yaml with migrations in dir "migrations".
func rolloutSpec(t *testing.T, extra string) *spec.Spec {
	t.Helper()
	sp, err := spec.Parse("drover.yaml", []byte("version: 1\nmigrations: {dir: migrations"+extra+"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	return sp
}

func (e *migrateEnv) node() *spec.Node {
	e.t.Helper()
	n, err := spec.LoadNode(e.config)
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func testMigratorApplies(t *testing.T, e *migrateEnv) {
	m := agent.NewMigrator(e.node(), discard())
	fsys := fstest.MapFS{"migrations/0001_a.sql": {Data: []byte("CREATE TABLE a (id int);\nINSERT INTO a VALUES (1);\n")}}
	for range 2 {
		if err := m.Migrate(e.ctx, "rev1", rolloutSpec(t, ""), fsys); err != nil {
			t.Fatal(err)
		}
	}
	if n := value[int](e, "SELECT count(*) FROM a"); n != 1 {
		t.Fatalf("a has %d rows: the migration ran %d times", n, n)
	}
	if by := value[string](e, "SELECT applied_by || ' ' || revision FROM drover_schema_migrations"); by != "n1 rev1" {
		t.Fatalf("ledger: %s", by)
	}
	// A spec without migrations needs no database at all.
	n := e.node()
	n.Database = nil
	if err := agent.NewMigrator(n, discard()).Migrate(e.ctx, "rev2", &spec.Spec{}, fstest.MapFS{}); err != nil {
		t.Fatalf("no migrations: %v", err)
	}
}

func testMigratorFailure(t *testing.T, e *migrateEnv) {
	m := agent.NewMigrator(e.node(), discard())
	fsys := fstest.MapFS{"migrations/0001_bad.sql": {Data: []byte("CREATE TABLE half (id int);\nINSERT INTO half VALUES (1);\nSELECT * FROM nosuch;\n")}}
	err := m.Migrate(e.ctx, "rev1", rolloutSpec(t, ""), fsys)
	var me *migrate.MigrationError
	if !reconcile.IsBadRevision(err) || !errors.As(err, &me) || me.File != "migrations/0001_bad.sql" || me.Line != 3 {
		t.Fatalf("Migrate = %v, want a bad revision naming 0001_bad.sql:3", err)
	}
	if e.exists("half") || value[int](e, "SELECT count(*) FROM drover_schema_migrations") != 0 {
		t.Fatal("the failed migration left the schema changed or a ledger row")
	}

	// A file drover cannot load, and drift, are the revision's fault too.
	bad := fstest.MapFS{"migrations/0001_a.sql": {Data: []byte("BEGIN;\nCREATE TABLE a (id int);\n")}}
	if err := m.Migrate(e.ctx, "rev2", rolloutSpec(t, ""), bad); !reconcile.IsBadRevision(err) || !strings.Contains(err.Error(), "0001_a.sql:1") {
		t.Fatalf("unloadable file: %v", err)
	}
	ok := fstest.MapFS{"migrations/0001_a.sql": {Data: []byte("CREATE TABLE a (id int);\n")}}
	if err := m.Migrate(e.ctx, "rev3", rolloutSpec(t, ""), ok); err != nil {
		t.Fatal(err)
	}
	drift := fstest.MapFS{"migrations/0001_a.sql": {Data: []byte("CREATE TABLE a (id bigint);\n")},
		"migrations/0002_b.sql": {Data: []byte("CREATE TABLE b (id int);\n")}}
	if err := m.Migrate(e.ctx, "rev4", rolloutSpec(t, ""), drift); !reconcile.IsBadRevision(err) || !errors.Is(err, migrate.ErrRefused) || e.exists("b") {
		t.Fatalf("drift: %v (b exists: %v)", err, e.exists("b"))
	}
}

func testMigratorNotRevisionFaults(t *testing.T, e *migrateEnv) {
	fsys := fstest.MapFS{"migrations/0001_a.sql": {Data: []byte("ALTER TABLE locked ADD COLUMN x int;\n")}}
	sp := rolloutSpec(t, ", lockTimeout: 200ms")

	// The database is down: retried later, not halted.
	down := e.node()
	e.write("down.dsn", fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=2", testsvc.FreePort(t)))
	down.Database.DSNFile = filepath.Join(e.dir, "down.dsn")
	if err := agent.NewMigrator(down, discard()).Migrate(e.ctx, "rev1", sp, fsys); err == nil || reconcile.IsBadRevision(err) {
		t.Fatalf("database down: %v, want an error that is not a bad revision", err)
	}
	// node.yaml without a database: the node's fault, said so.
	none := e.node()
	none.Database = nil
	if err := agent.NewMigrator(none, discard()).Migrate(e.ctx, "rev1", sp, fsys); err == nil || reconcile.IsBadRevision(err) ||
		!strings.Contains(err.Error(), "no database section") {
		t.Fatalf("no database section: %v", err)
	}
	// Another session holds a lock longer than lock_timeout: nothing changed,
	// and a later try may pass.
	if _, err := e.admin.Exec(e.ctx, "CREATE TABLE locked (id int)"); err != nil {
		t.Fatal(err)
	}
	tx, err := e.admin.Begin(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(e.ctx, "LOCK TABLE locked IN ACCESS SHARE MODE"); err != nil {
		t.Fatal(err)
	}
	m := agent.NewMigrator(e.node(), discard())
	start := time.Now()
	err = m.Migrate(e.ctx, "rev1", sp, fsys)
	var me *migrate.MigrationError
	if !errors.As(err, &me) || reconcile.IsBadRevision(err) || time.Since(start) > 10*time.Second {
		t.Fatalf("lock timeout: %v after %v, want a plain *MigrationError", err, time.Since(start))
	}
	if err := tx.Rollback(e.ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Migrate(e.ctx, "rev1", sp, fsys); err != nil {
		t.Fatalf("retry once the lock is gone: %v", err)
	}
	if !value[bool](e, "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = 'locked' AND column_name = 'x')") {
		t.Fatal("the retried migration did not apply")
	}
}

// TestMigrationsValidate: drover validate warns about destructive statements
// without failing, and refuses migration files it cannot load.
func TestMigrationsValidate(t *testing.T) {
	dir := t.TempDir()
	write := func(rel, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, rel)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, rel), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("drover.yaml", "version: 1\nmigrations: {dir: db/migrations}\n")
	write("db/migrations/0001_users.sql", "CREATE TABLE users (id int, email text, legacy text);\n")
	write("db/migrations/0002_contract.sql", "-- the old column is unused since revision 41\n\nALTER TABLE users\n  DROP COLUMN legacy;\n")
	var out, stderr bytes.Buffer
	err := cmdValidate(context.Background(), []string{dir}, &out, &stderr)
	want := filepath.Join(dir, "db/migrations/0002_contract.sql") + ":4: warning: ALTER TABLE users DROP COLUMN legacy: " +
		"workers of the previous revision still run against the new schema during the rollout"
	if err != nil || !strings.Contains(stderr.String(), want) || !strings.Contains(out.String(), "valid") {
		t.Fatalf("validate = %v\nstdout: %s\nstderr: %s\nwant on stderr: %s", err, &out, &stderr, want)
	}
	if strings.Count(stderr.String(), "\n") != 1 {
		t.Fatalf("one warning expected:\n%s", &stderr)
	}

	write("db/migrations/0003_tx.sql", "BEGIN;\nCREATE TABLE x (id int);\nCOMMIT;\n")
	write("db/migrations/notes.txt", "not a migration\n")
	out.Reset()
	stderr.Reset()
	err = cmdValidate(context.Background(), []string{dir}, &out, &stderr)
	if exitCode(err) != 1 || out.Len() != 0 ||
		!strings.Contains(stderr.String(), filepath.Join(dir, "db/migrations/0003_tx.sql")+":1: BEGIN: transaction control is drover's") ||
		!strings.Contains(stderr.String(), filepath.Join(dir, "db/migrations/notes.txt")+": not a migration") {
		t.Fatalf("validate with bad migration files = %v\nstdout: %s\nstderr: %s", err, &out, &stderr)
	}
}
