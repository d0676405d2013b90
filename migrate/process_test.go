package migrate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestHelperProcess is not a test: other tests run the test binary again as
// a separate OS process that runs Up once, like an agent on another node.
func TestHelperProcess(t *testing.T) {
	if os.Getenv("DROVER_MIGRATE_HELPER") != "1" {
		t.Skip("a helper process for the multi-process tests")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	if at, err := strconv.ParseInt(os.Getenv("START_AT"), 10, 64); err == nil {
		time.Sleep(time.Until(time.Unix(0, at))) // start together with the others
	}
	res := helperResult{}
	ms, err := Load(os.DirFS(os.Getenv("MIGRATIONS_ROOT")), "migrations")
	if err == nil {
		var m *Migrator
		if m, err = Open(ctx, os.Getenv("DSN"), Config{Node: os.Getenv("NODE"), Revision: "r1"}); err == nil {
			var applied []Migration
			applied, err = m.Up(ctx, ms)
			res.Applied = versions(applied)
			m.Close(ctx)
		}
	}
	if err != nil {
		res.Err = err.Error()
	}
	b, _ := json.Marshal(res)
	fmt.Printf("\nRESULT %s\n", b)
}

type helperResult struct {
	Applied []int64
	Err     string
}

type helper struct {
	cmd *exec.Cmd
	out bytes.Buffer
}

// startHelper runs Up in another process as node, from startAt if not zero.
func (e *env) startHelper(node string, startAt time.Time) *helper {
	e.t.Helper()
	h := &helper{cmd: exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")}
	h.cmd.Env = append(os.Environ(), "DROVER_MIGRATE_HELPER=1", "DSN="+e.dsn, "MIGRATIONS_ROOT="+e.root, "NODE="+node)
	if !startAt.IsZero() {
		h.cmd.Env = append(h.cmd.Env, fmt.Sprintf("START_AT=%d", startAt.UnixNano()))
	}
	h.cmd.Stdout, h.cmd.Stderr = &h.out, &h.out
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := h.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		if h.cmd.ProcessState == nil {
			h.cmd.Process.Kill()
			h.cmd.Wait()
		}
	})
	return h
}

func (h *helper) result(t *testing.T) helperResult {
	t.Helper()
	err := h.cmd.Wait()
	_, line, ok := strings.Cut(h.out.String(), "\nRESULT ")
	var res helperResult
	if !ok || json.Unmarshal([]byte(strings.SplitN(line, "\n", 2)[0]), &res) != nil || err != nil {
		t.Fatalf("helper %v: %v\n%s", h.cmd.Args, err, h.out.String())
	}
	return res
}

func testRacingProcesses(t *testing.T, e *env) {
	e.write("0001_table.sql", "CREATE TABLE effects (note text NOT NULL);")
	e.write("0002_one.sql", "INSERT INTO effects VALUES ('two');\nSELECT pg_sleep(0.2);")
	e.write("0003_concurrent.sql", "-- drover:no-transaction\nINSERT INTO effects VALUES ('three');\nCREATE INDEX CONCURRENTLY effects_note ON effects (note);\n")
	e.write("0004_two.sql", "INSERT INTO effects VALUES ('four');")
	const n = 10
	startAt := time.Now().Add(1500 * time.Millisecond)
	var hs []*helper
	for i := range n {
		hs = append(hs, e.startHelper(fmt.Sprintf("node%d", i), startAt))
	}
	appliedBy := map[int64]string{}
	for i, h := range hs {
		res := h.result(t)
		if res.Err != "" {
			t.Fatalf("node%d: %s", i, res.Err)
		}
		for _, v := range res.Applied {
			if other, dup := appliedBy[v]; dup {
				t.Fatalf("version %d applied by %s and node%d", v, other, i)
			}
			appliedBy[v] = fmt.Sprintf("node%d", i)
		}
	}
	if len(appliedBy) != 4 {
		t.Fatalf("applied %v, want each of 4 versions once", appliedBy)
	}
	rows, err := e.admin.Query(e.ctx, "SELECT version, applied_by, status FROM drover_schema_migrations ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	var ledger []string
	for rows.Next() {
		var v int64
		var by, st string
		if err := rows.Scan(&v, &by, &st); err != nil {
			t.Fatal(err)
		}
		ledger = append(ledger, fmt.Sprintf("%d %s %s", v, by, st))
		if by != appliedBy[v] || st != StateApplied {
			t.Errorf("ledger says %d %s by %s; the process that applied it was %s", v, st, by, appliedBy[v])
		}
	}
	if len(ledger) != 4 {
		t.Fatalf("ledger %v", ledger)
	}
	if s := value[string](e, "SELECT string_agg(note, ',' ORDER BY note) FROM effects"); s != "four,three,two" {
		t.Fatalf("side effects %q, want each insert exactly once", s)
	}
}

// killDuringSleep starts a helper and SIGKILLs it while its migration sleeps,
// then waits until the server has ended its session.
func (e *env) killDuringSleep() {
	e.t.Helper()
	h := e.startHelper("doomed", time.Time{})
	var pid int32
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := e.admin.QueryRow(e.ctx, `SELECT pid FROM pg_stat_activity WHERE datname = current_database()
			AND state = 'active' AND query LIKE 'SELECT pg_sleep(%'`).Scan(&pid)
		if err == nil {
			break
		}
		if time.Now().After(deadline) || h.cmd.ProcessState != nil {
			e.t.Fatalf("the helper never reached pg_sleep: %v\n%s", err, h.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.cmd.Process.Signal(syscall.SIGKILL)
	h.cmd.Wait()
	for value[bool](e, "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)", pid) {
		if time.Now().After(deadline) {
			e.t.Fatal("the killed process's session lives on")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func testKilledMidMigration(t *testing.T, e *env) {
	e.write("0001_victim.sql", "CREATE TABLE victim (id int);\nINSERT INTO victim VALUES (1);\nSELECT pg_sleep(5);\n")
	e.killDuringSleep()
	if e.exists("victim") || value[int](e, "SELECT count(*) FROM drover_schema_migrations") != 0 {
		t.Fatal("a killed migration left a partial schema or a ledger row")
	}
	if value[bool](e, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))`) {
		t.Fatal("the killed process's lock is still held")
	}
	m := e.open(Config{})
	applied, err := m.Up(e.ctx, e.load())
	if err != nil || fmt.Sprint(versions(applied)) != "[1]" {
		t.Fatalf("Up after the kill = %v, %v", versions(applied), err)
	}
	if value[int](e, "SELECT count(*) FROM victim") != 1 || value[int](e, "SELECT count(*) FROM drover_schema_migrations") != 1 {
		t.Fatal("the migration did not apply exactly once after the kill")
	}
}

func testKilledMidNoTransaction(t *testing.T, e *env) {
	e.write("0001_half.sql", "-- drover:no-transaction\nCREATE TABLE half (id int);\nSELECT pg_sleep(5);\nCREATE TABLE other_half (id int);\n")
	e.killDuringSleep()
	if !e.exists("half") || e.exists("other_half") {
		t.Fatal("want the statements before the kill applied, and only those")
	}
	m := e.open(Config{})
	_, err := m.Up(e.ctx, e.load())
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "0001_half.sql was interrupted") {
		t.Fatalf("Up = %v, want a refusal naming the interrupted migration", err)
	}
	st, err := m.Status(e.ctx, e.load())
	if err != nil || len(st.Failed) != 1 || st.Failed[0].State != StateRunning || st.Failed[0].Node != "doomed" || st.Locked {
		t.Fatalf("status %+v, %v", st, err)
	}
	// The operator finishes it by hand.
	if _, err := e.admin.Exec(e.ctx, "CREATE TABLE other_half (id int)"); err != nil {
		t.Fatal(err)
	}
	if err := m.Resolve(e.ctx, 1, Done); err != nil {
		t.Fatal(err)
	}
	if applied, err := m.Up(e.ctx, e.load()); err != nil || len(applied) != 0 {
		t.Fatalf("Up after Resolve = %v, %v", versions(applied), err)
	}
	st, err = m.Status(e.ctx, e.load())
	if err != nil || len(st.Applied) != 1 || !strings.Contains(st.Applied[0].Error, "resolved by hand") {
		t.Fatalf("status %+v, %v", st, err)
	}
}
