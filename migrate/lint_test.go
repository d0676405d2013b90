package migrate

import (
	"fmt"
	"strings"
	"testing"
)

func TestLintFlagsDestructiveStatementsWithFileAndLine(t *testing.T) {
	sql := `CREATE TABLE keep (id int, a int, b text);
ALTER TABLE keep ADD COLUMN c int, DROP CONSTRAINT keep_pk;
ALTER TABLE keep ALTER COLUMN a DROP DEFAULT, ALTER COLUMN a SET NOT NULL;
COMMENT ON TABLE keep IS 'DROP TABLE keep; TRUNCATE keep';
-- DROP TABLE in a comment
DO $$ BEGIN EXECUTE 'DROP TABLE keep'; END $$;
DROP TABLE IF EXISTS old_stuff;
ALTER TABLE IF EXISTS ONLY public."Keep"
  ADD COLUMN d int,
  DROP COLUMN b,
  DROP a;
ALTER TABLE keep RENAME COLUMN a TO a2;
ALTER TABLE keep RENAME TO kept;
ALTER TABLE keep RENAME CONSTRAINT x TO y;
truncate keep;
ALTER TABLE keep ALTER a TYPE bigint;
ALTER TABLE keep ALTER COLUMN "type" SET DATA TYPE text USING a::text;
ALTER TABLE keep DROP IF EXISTS z;
`
	ms := []Migration{{Version: 7, File: "migrations/0007_contract.sql", SQL: []byte(sql)}}
	var got []string
	for _, w := range Lint(ms) {
		got = append(got, fmt.Sprintf("%d %s", w.Line, strings.SplitN(w.Message, ":", 2)[0]))
		if w.File != "migrations/0007_contract.sql" || !strings.Contains(w.Message, "previous revision") ||
			!strings.Contains(w.Message, "expand/contract") || w.Statement == "" {
			t.Errorf("warning lacks file, reason or statement: %+v", w)
		}
		if !strings.HasPrefix(w.String(), fmt.Sprintf("migrations/0007_contract.sql:%d: ", w.Line)) {
			t.Errorf("String() = %q", w.String())
		}
	}
	want := []string{
		"7 DROP TABLE old_stuff",
		`10 ALTER TABLE public."Keep" DROP COLUMN b`,
		`11 ALTER TABLE public."Keep" DROP COLUMN a`,
		"12 ALTER TABLE keep RENAME COLUMN a",
		"13 ALTER TABLE keep RENAME TO kept",
		"15 TRUNCATE keep",
		"16 ALTER TABLE keep ALTER COLUMN a TYPE",
		`17 ALTER TABLE keep ALTER COLUMN "type" TYPE`,
		"18 ALTER TABLE keep DROP COLUMN z",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestLintQuietOnExpandOnly(t *testing.T) {
	ms := []Migration{{File: "m/0001_expand.sql", SQL: []byte(`CREATE TABLE t (id int);
ALTER TABLE t ADD COLUMN x int DEFAULT 0;
CREATE INDEX CONCURRENTLY t_x ON t (x);
INSERT INTO t VALUES (1, 2);`)}}
	if w := Lint(ms); len(w) != 0 {
		t.Fatalf("unexpected warnings: %v", w)
	}
}
