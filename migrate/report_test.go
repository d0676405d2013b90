package migrate

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/drover-dev/drover/spec"
)

// TestReport states every rule by which Up refuses, from a Status built
// here: the report is the ledger and the files told for people, and needs
// no database.
func TestReport(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	rec := func(v int64, file, state, errText string) Record {
		return Record{Version: v, File: file, Checksum: "c" + file, State: state, AppliedAt: at, Node: "n1",
			Revision: "abc", Duration: 1500 * time.Millisecond, Error: errText}
	}
	mig := func(v int64, file string) Migration {
		return Migration{Version: v, File: "db/" + file, Checksum: "f" + file}
	}
	ms := []Migration{mig(1, "0001_a.sql"), mig(2, "0002_b.sql"), mig(4, "0004_d.sql"), mig(6, "0006_f.sql"), mig(7, "0007_g.sql"), mig(8, "0008_h.sql")}
	st := Status{
		Applied:    []Record{rec(1, "0001_a.sql", StateApplied, "")},
		Mismatched: []Drift{{Migration: ms[1], Record: rec(2, "0002_b.sql", StateApplied, "")}},
		Missing:    []Record{rec(3, "0003_c.sql", StateApplied, ""), rec(9, "0009_i.sql", StateApplied, "")},
		Failed:     []Record{rec(6, "0006_f.sql", StateFailed, "boom"), rec(7, "0007_g.sql", StateRunning, "")},
		Pending:    []Migration{ms[2], ms[5]},
	}
	rep := NewReport("abc", ms, st)

	if rep.Revision != "abc" || rep.Locked || len(rep.Applied) != 1 || len(rep.Missing) != 2 || len(rep.Failed) != 2 {
		t.Fatalf("report: %+v", rep)
	}
	if got, want := rep.Applied[0], (LedgerRow{Version: 1, File: "0001_a.sql", State: StateApplied, Checksum: "c0001_a.sql",
		AppliedAt: at, AppliedBy: "n1", Revision: "abc", DurationMS: 1500}); got != want {
		t.Errorf("applied row %+v, want %+v", got, want)
	}
	if got := rep.Mismatched[0]; got.Checksum != "c0002_b.sql" || got.FileChecksum != "f0002_b.sql" {
		t.Errorf("mismatched row %+v: want the ledger's and the file's checksums", got)
	}
	if !reflect.DeepEqual(rep.Ahead, []int64{9}) {
		t.Errorf("ahead %v, want [9]: only the applied migration newer than every file is a rollback", rep.Ahead)
	}
	if want := []PendingFile{{4, "0004_d.sql"}, {8, "0008_h.sql"}}; !reflect.DeepEqual(rep.Pending, want) {
		t.Errorf("pending %v, want %v (base names)", rep.Pending, want)
	}
	want := []string{
		"db/0002_b.sql changed after it was applied (on n1 at 2026-03-01T12:00:00Z): restore it and add a new migration",
		"0003_c.sql was applied (on n1) but its file is gone while newer files exist: restore it",
		"0006_f.sql failed (on n1 at 2026-03-01T12:00:00Z): boom; repair the schema, then drover migrate resolve 6 --retry|--done",
		"0007_g.sql was interrupted (started on n1 at 2026-03-01T12:00:00Z without a transaction): check the schema, " +
			"finish or undo it by hand, then drover migrate resolve 7 --done|--retry",
		"db/0004_d.sql is pending but older than applied version 9: renumber it above 9",
		"db/0008_h.sql is pending but older than applied version 9: renumber it above 9",
	}
	if !reflect.DeepEqual(rep.Problems, want) {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(rep.Problems, "\n"), strings.Join(want, "\n"))
	}

	// While the lock is held, a running migration is an Up at work, not an
	// interruption.
	st.Locked = true
	for _, p := range NewReport("abc", ms, st).Problems {
		if strings.Contains(p, "interrupted") {
			t.Errorf("locked: %s", p)
		}
	}
}

// TestReportEmptyListsAreJSONArrays: scripts read -o json's lists without
// telling null from [].
func TestReportEmptyListsAreJSONArrays(t *testing.T) {
	out, err := json.Marshal(NewReport("abc", nil, Status{}))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"revision":"abc","locked":false,"applied":[],"pending":[],"mismatched":[],"missing":[],"ahead":[],"failed":[],"problems":[]}`
	if string(out) != want {
		t.Errorf("got %s\nwant %s", out, want)
	}
}

// TestLoadSets reads a Set from each place the CLI finds one: a revision's
// tree, a kept release (db/migrations, whatever the spec's directory) and a
// checkout; a spec without migrations is ErrNoMigrations for a revision.
func TestLoadSets(t *testing.T) {
	const sql = "CREATE TABLE t (id int);\n"
	sp := &spec.Spec{Migrations: &spec.Migrations{Dir: "db"}}
	tree := fstest.MapFS{"db/0001_t.sql": {Data: []byte(sql)}}
	set, err := RevisionSet("abc", sp, tree)
	if err != nil || set.Revision != "abc" || len(set.Migrations) != 1 || set.Migrations[0].File != "db/0001_t.sql" {
		t.Fatalf("RevisionSet: %+v, %v", set, err)
	}
	if _, err := RevisionSet("abc", &spec.Spec{}, tree); err == nil || !strings.Contains(err.Error(), "revision abc has no migrations section") {
		t.Errorf("RevisionSet without migrations: %v", err)
	} else if !errors.Is(err, ErrNoMigrations) {
		t.Errorf("RevisionSet without migrations: %v is not ErrNoMigrations", err)
	}

	release := t.TempDir()
	if _, kept, err := LoadRelease(release, "abc"); kept || err != nil {
		t.Errorf("a release without db/migrations: kept %v, %v; want it read from the repo", kept, err)
	}
	write(t, filepath.Join(release, "db", "migrations", "0001_t.sql"), sql)
	write(t, filepath.Join(release, "drover.yaml"), "version: 1\nmigrations: {dir: schema}\n")
	set, kept, err := LoadRelease(release, "abc")
	if !kept || err != nil || len(set.Migrations) != 1 || set.Migrations[0].File != "migrations/0001_t.sql" || set.Spec.Migrations.Dir != "schema" {
		t.Fatalf("LoadRelease: %+v, %v, %v", set, kept, err)
	}

	checkout := t.TempDir()
	write(t, filepath.Join(checkout, "db", "0001_t.sql"), sql)
	set, err = LoadDir(checkout, sp)
	if err != nil || set.Revision != "dir:"+checkout || len(set.Migrations) != 1 {
		t.Fatalf("LoadDir: %+v, %v", set, err)
	}
	if got := set.Config("n1/cli", nil); got.Node != "n1/cli" || got.Revision != "dir:"+checkout {
		t.Errorf("Config: %+v", got)
	}
	if _, err := LoadDir(checkout, &spec.Spec{}); err == nil || err.Error() != filepath.Join(checkout, "drover.yaml")+" has no migrations section" {
		t.Errorf("LoadDir without migrations: %v", err)
	}
}

func write(t *testing.T, file, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}
