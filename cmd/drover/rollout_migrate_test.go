//go:build e2e

package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/internal/testsvc"
	"github.com/drover-dev/drover/reconcile"
)

// TestAgentHaltsARevisionWhoseMigrationFails runs the agent against a real
// PostgreSQL: a revision's migrations run before it switches; a failing one
// leaves the schema as it was, halts the revision and the node keeps
// serving the previous release; a fixed commit applies.
func TestAgentHaltsARevisionWhoseMigrationFails(t *testing.T) {
	t.Parallel() // the agent mostly waits on its LB's checks: tests share the CPUs
	pg := testsvc.StartPostgres(t)
	n := newTestNode(t)
	n.write("db.dsn", pg.DSN+"\n")
	// A secret: drover refuses it when others can read it.
	if err := os.Chmod(filepath.Join(n.dir, "db.dsn"), 0o600); err != nil {
		t.Fatal(err)
	}
	n.configure("test", "./repo", "database: {dsnFile: db.dsn}\n")
	n.specExtra = "migrations: {dir: migrations, lockTimeout: 2s}\n"
	n.write("repo/migrations/0001_stats.sql", "CREATE TABLE stats (id bigserial PRIMARY KEY, tone text NOT NULL);\n")
	a := n.commit("blog A", "api A")
	n.startAgent()
	n.waitLive(a)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db, err := pgx.Connect(ctx, pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	tableExists := func(name string) bool {
		var ok bool
		if err := db.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", name).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !tableExists("stats") {
		t.Fatal("migration 0001 did not run before A went live")
	}

	// A file drover cannot load is refused while preparing, before the
	// node waits for its turn.
	n.write("repo/migrations/notes.sql", "SELECT 1;\n")
	bad := n.commit("blog bad", "api bad")
	n.waitFor("bad file halted", func(st reconcile.Status) bool {
		return strings.Contains(st.Error, "halted") && strings.Contains(st.Error, "notes.sql")
	})
	if strings.Contains(n.logs(), "step=waiting rev="+bad[:12]) {
		t.Fatal("a revision with a bad migration file went past prepare")
	}
	if err := os.Remove(filepath.Join(n.dir, "repo/migrations/notes.sql")); err != nil {
		t.Fatal(err)
	}

	// 0002 creates a table, then fails: the whole file rolls back.
	n.write("repo/migrations/0002_words.sql", "CREATE TABLE words (w text);\nINSERT INTO no_such_table VALUES (1);\n")
	b := n.commit("blog B", "api B")
	n.waitFor("B halted", func(st reconcile.Status) bool {
		return st.Target == b && st.Step == reconcile.StepFailed || strings.Contains(st.Error, "revision "+b[:12]+" is halted")
	})
	if tableExists("words") {
		t.Fatal("the failed migration left a partial schema (table words)")
	}
	if got := n.live(); got != a {
		t.Fatalf("current -> %s, want A: no node switches to a revision whose migration failed", got)
	}
	if strings.Contains(n.logs(), "step=switching rev="+b[:12]) {
		t.Fatal("the node switched to the revision whose migration failed")
	}
	n.serves("blog A", "api A")
	halted, _ := os.ReadFile(layout.New(n.state).Halted())
	if !strings.Contains(string(halted), b) || !strings.Contains(string(halted), "0002_words.sql") || !strings.Contains(string(halted), "no_such_table") {
		t.Fatalf("the halt does not name the file and the failing statement:\n%s", halted)
	}

	n.write("repo/migrations/0002_words.sql", "CREATE TABLE words (w text);\n")
	c := n.commit("blog C", "api C")
	n.waitLive(c)
	if !tableExists("words") {
		t.Fatal("the fixed migration did not run")
	}
	var runs int
	if err := db.QueryRow(ctx, "SELECT count(*) FROM drover_schema_migrations").Scan(&runs); err != nil {
		t.Fatal(err)
	}
	if runs != 2 {
		t.Fatalf("%d ledger rows, want 2 (each migration once)", runs)
	}
	// The release keeps its migrations: migrate status reads the live
	// revision's files from it, without the git server.
	if err := os.RemoveAll(n.repo); err != nil {
		t.Fatal(err)
	}
	out := runCLI(t, "migrate", "status", "--config", n.config)
	if !strings.Contains(out, "2 applied, 0 pending") || !strings.Contains(out, c[:12]) {
		t.Fatalf("migrate status of the live release:\n%s", out)
	}
}
