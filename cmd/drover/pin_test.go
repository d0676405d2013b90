//go:build e2e

package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/drover-dev/drover/cluster"
	"github.com/drover-dev/drover/internal/testsvc"
	"github.com/drover-dev/drover/reconcile"
)

// runCLIFail runs drover expecting it to fail with code; it returns the
// output.
func runCLIFail(t testing.TB, code int, args ...string) string {
	t.Helper()
	out, err := exec.Command(droverBin, args...).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != code {
		t.Fatalf("drover %v: %v, want exit %d\n%s", args, err, code, out)
	}
	return string(out)
}

// TestClusterRollbackPinUnpin: on a 3-node cluster on real Redis, B live →
// drover rollback (no REV) puts every node back on A one at a time, drained
// and verified; a new commit C while pinned is prepared on every node but
// applied on none; a halted revision and a bad REV are refused and change
// nothing; unpin rolls C out. The history then tells each revision's story.
func TestClusterRollbackPinUnpin(t *testing.T) {
	t.Parallel() // a cluster's agents mostly wait on their LB and lock: two clusters share the CPUs
	r := testsvc.StartRedis(t)
	tc := newTestCluster(t, 3, clusterSection(r.Addr), cluster.Config{Addrs: []string{r.Addr}})
	cfg := tc.nodes[0].config
	a := tc.commit("blog A", "/")
	tc.start()
	tc.waitAll(a, 2*time.Minute)
	b := tc.commit("blog B", "/")
	runCLI(t, "sync", "--config", cfg)
	tc.waitAll(b, 2*time.Minute)

	rollbackAt := time.Now()
	out := runCLI(t, "rollback", "--config", cfg, "--reason", "B breaks checkout")
	if !strings.Contains(out, "pinned to "+a) {
		t.Fatalf("rollback without REV did not pin A (%s):\n%s", a[:8], out)
	}
	tc.waitAll(a, 2*time.Minute)
	t.Logf("drover rollback → 3 nodes back on A, one at a time: %s", time.Since(rollbackAt).Round(10*time.Millisecond))
	for _, n := range tc.nodes {
		if code, body := n.get("blog.test", "/"); code != 200 || body != "blog A" {
			t.Errorf("%s serves %d %q after the rollback, want blog A", n.name, code, body)
		}
		// Rolled out like a new commit: drained, switched, verified.
		logs := n.logs()
		for _, step := range []string{"draining", "switching", "verifying", "undraining"} {
			if got := strings.Count(logs, "step="+step+" rev="+a[:12]); got < 2 {
				t.Errorf("%s: %d %s steps for A, want the first deploy's and the rollback's", n.name, got, step)
			}
		}
	}
	ws := tc.checkCapacity(1)
	if got := countRev(ws, a); got != 2*len(tc.nodes) {
		t.Errorf("%d drained windows for A, want %d (first deploy and rollback on each node)", got, 2*len(tc.nodes))
	}
	st := runCLI(t, "status", "--config", tc.nodes[1].config)
	if !strings.Contains(st, "PINNED to "+a[:12]) || !strings.Contains(st, "B breaks checkout") || !strings.Contains(st, "@") {
		t.Errorf("status does not show the pin, who set it and why:\n%s", st)
	}

	c := tc.commit("blog C", "/")
	runCLI(t, "sync", "--config", cfg)
	deadline := time.Now().Add(time.Minute)
	for _, n := range tc.nodes {
		for !strings.Contains(n.logs(), "branch head prepared; not applied while pinned") {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not prepare C while pinned", n.name)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	time.Sleep(3 * time.Second) // a few more polls
	for _, n := range tc.nodes {
		if strings.Contains(n.logs(), "step=switching rev="+c[:12]) {
			t.Fatalf("%s switched to C while pinned to A", n.name)
		}
		if code, body := n.get("blog.test", "/"); code != 200 || body != "blog A" {
			t.Errorf("%s serves %d %q while pinned, want blog A", n.name, code, body)
		}
	}

	// A halted revision cannot be pinned; bad input changes nothing.
	if err := tc.cl.Halt(context.Background(), b, "found broken"); err != nil {
		t.Fatal(err)
	}
	if out := runCLIFail(t, 1, "pin", "--config", cfg, b[:10]); !strings.Contains(out, "halted") {
		t.Errorf("pin of a halted revision: %s", out)
	}
	runCLIFail(t, 2, "pin", "--config", cfg, "not-a-rev")
	runCLIFail(t, 1, "pin", "--config", cfg, "abcdef99")
	// A full id nobody has seen is asked of the repo, which lacks it.
	if out := runCLIFail(t, 1, "pin", "--config", cfg, strings.Repeat("ab", 20)); !strings.Contains(out, "the repo does not serve it") {
		t.Errorf("pin of an unknown full commit id: %s", out)
	}
	if p, ok, err := tc.cl.Pinned(context.Background()); err != nil || !ok || p.Rev != a {
		t.Fatalf("refused pins changed the pin: %+v %v %v", p, ok, err)
	}
	runCLI(t, "clear", "--config", cfg, b[:12])

	runCLI(t, "pause", "--config", cfg, "--reason", "lunch")
	runCLI(t, "resume", "--config", cfg)
	out = runCLI(t, "unpin", "--config", cfg)
	if !strings.Contains(out, "unpinned") {
		t.Fatalf("unpin: %s", out)
	}
	tc.waitAll(c, 2*time.Minute)
	tc.checkCapacity(1)
	if st := runCLI(t, "status", "--config", cfg); strings.Contains(st, "PINNED") {
		t.Errorf("status still shows a pin after unpin:\n%s", st)
	}

	var revs []cluster.Revision
	if err := json.Unmarshal([]byte(runCLI(t, "history", "--config", cfg, "-o", "json")), &revs); err != nil {
		t.Fatal(err)
	}
	byRev := map[string]cluster.Revision{}
	for _, rv := range revs {
		byRev[rv.Rev] = rv
	}
	if len(revs) != 3 || revs[0].Rev != c || revs[1].Rev != b || revs[2].Rev != a {
		t.Fatalf("history lists %d revisions, want C, B, A newest first: %+v", len(revs), revs)
	}
	wantOutcome := map[string]string{c: "live", b: "rolled back", a: "superseded"}
	for rev, want := range wantOutcome {
		if got := byRev[rev].Outcome; got != want {
			t.Errorf("history: %s outcome %q, want %q", rev[:8], got, want)
		}
	}
	for _, run := range byRev[a].Nodes {
		t.Logf("rollback to A on %s: drained %s", run.Node, run.Drained.Round(time.Millisecond))
	}
	for _, rev := range []string{a, b, c} {
		rv := byRev[rev]
		if rv.Subject == "" || !strings.Contains(rv.Author, "@") || rv.Committer == "" || rv.FirstSeen.IsZero() {
			t.Errorf("history: %s lacks its commit: %+v", rev[:8], rv.RevisionMeta)
		}
		if len(rv.Nodes) != 3 {
			t.Errorf("history: %s has %d node runs, want 3: %+v", rev[:8], len(rv.Nodes), rv.Nodes)
		}
		for _, run := range rv.Nodes {
			if run.Live.IsZero() || run.Drained <= 0 || run.Drained > time.Minute {
				t.Errorf("history: %s on %s: live %v, drained %v", rev[:8], run.Node, run.Live, run.Drained)
			}
		}
	}
	if byRev[b].Halt == nil || !strings.Contains(byRev[b].Halt.Reason, "found broken") {
		t.Errorf("history lost B's halt after clear: %+v", byRev[b].Halt)
	}
	actions := func(rv cluster.Revision) string {
		var s []string
		for _, x := range rv.Actions {
			s = append(s, x.What+":"+x.Reason)
		}
		return strings.Join(s, ",")
	}
	if got := actions(byRev[a]); got != "pinned:B breaks checkout,paused:lunch,resumed:,unpinned:" {
		t.Errorf("history: A's actions %q", got)
	}
	if got := actions(byRev[b]); got != "cleared:" {
		t.Errorf("history: B's actions %q", got)
	}
	if txt := runCLI(t, "history", "--config", cfg, "-n", "1"); !strings.Contains(txt, c[:12]) || strings.Contains(txt, b[:12]) {
		t.Errorf("history -n 1:\n%s", txt)
	}
}

// TestAgentRollbackWithoutTheForgeKeepsTheSchema: on one node (the pin in
// the state dir) with a real PostgreSQL, B (migration 0002) live →
// drover rollback with the git server gone puts A back from its kept
// release, says 0002 stays applied (migrations never run backwards), and
// runs nothing backwards; a pin of a revision whose migration the ledger
// lacks is refused unless --force.
func TestAgentRollbackWithoutTheForgeKeepsTheSchema(t *testing.T) {
	t.Parallel() // the agent mostly waits on its LB's checks: tests share the CPUs
	pg := testsvc.StartPostgres(t)
	n := newTestNode(t)
	n.write("db.dsn", pg.DSN+"\n")
	if err := os.Chmod(filepath.Join(n.dir, "db.dsn"), 0o600); err != nil {
		t.Fatal(err)
	}
	n.configure("test", "./repo", "database: {dsnFile: db.dsn}\n")
	n.specExtra = "migrations: {dir: migrations, lockTimeout: 2s}\n"
	n.write("repo/migrations/0001_stats.sql", "CREATE TABLE stats (id bigserial PRIMARY KEY);\n")
	a := n.commit("blog A", "api A")
	n.startAgent()
	n.waitLive(a)
	n.write("repo/migrations/0002_words.sql", "CREATE TABLE words (w text);\n")
	b := n.commit("blog B", "api B")
	n.waitLive(b)

	// The forge is down: the rollback needs only what the node kept.
	aside := n.repo + ".aside"
	if err := os.Rename(n.repo, aside); err != nil {
		t.Fatal(err)
	}
	out := runCLI(t, "rollback", "--config", n.config, "--reason", "B is slow")
	if !strings.Contains(out, "pinned to "+a) || !strings.Contains(out, "0002_words.sql stays applied: migrations are not run backwards") {
		t.Fatalf("rollback:\n%s", out)
	}
	n.waitLive(a)
	n.serves("blog A", "api A")
	if st := runCLI(t, "status", "--config", n.config); !strings.Contains(st, "pinned   "+a[:12]) || !strings.Contains(st, "B is slow") {
		t.Errorf("status does not show the pin:\n%s", st)
	}
	if err := os.Rename(aside, n.repo); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db, err := pgx.Connect(ctx, pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	ledger := func() int {
		var rows int
		if err := db.QueryRow(ctx, "SELECT count(*) FROM drover_schema_migrations").Scan(&rows); err != nil {
			t.Fatal(err)
		}
		return rows
	}
	if got := ledger(); got != 2 {
		t.Fatalf("%d ledger rows after the rollback, want 2 (nothing runs backwards)", got)
	}

	// D has 0003, which the ledger lacks: prepared while pinned, never
	// applied, and a pin to it is refused without --force.
	n.write("repo/migrations/0003_tags.sql", "CREATE TABLE tags (t text);\n")
	d := n.commit("blog D", "api D")
	n.waitFor("D prepared while pinned", func(reconcile.Status) bool {
		return strings.Contains(n.logs(), `msg="branch head prepared; not applied while pinned" node=test rev=`+d[:12])
	})
	if out := runCLIFail(t, 1, "pin", "--config", n.config, d); !strings.Contains(out, "0003_tags.sql") || !strings.Contains(out, "--force") {
		t.Fatalf("pin of a revision with a migration the ledger lacks:\n%s", out)
	}
	if p, ok, _ := (&reconcile.FileRegistry{Dir: n.state}).Pinned(ctx); !ok || p.Rev != a {
		t.Fatalf("a refused pin changed the pin: %+v", p)
	}
	if n.live() != a || ledger() != 2 {
		t.Fatalf("while pinned to A the node moved to %s or migrated (%d rows)", n.live(), ledger())
	}
	runCLI(t, "pin", "--config", n.config, "--force", d)
	n.waitLive(d)
	if got := ledger(); got != 3 {
		t.Fatalf("%d ledger rows after the forced pin, want 3", got)
	}

	var revs []cluster.Revision
	if err := json.Unmarshal([]byte(runCLI(t, "history", "--config", n.config, "-o", "json")), &revs); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, rv := range revs {
		got[rv.Rev] = rv.Outcome
	}
	want := map[string]string{a: "superseded", b: "rolled back", d: "live (pinned)"}
	for rev, w := range want {
		if got[rev] != w {
			t.Errorf("history: %s is %q, want %q (all: %v)", rev[:8], got[rev], w, got)
		}
	}
}
