package migrate

import (
	"strings"
	"testing"
	"testing/fstest"
)

func TestSplitRespectsQuotesCommentsAndBodies(t *testing.T) {
	src := `-- header; not a statement
CREATE TABLE a (s text DEFAULT 'x;y', "we;ird" int); /* c; /* nested; */ still; */
INSERT INTO a VALUES ('it''s; fine', 1), (E'back\'slash;', 2);
CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $body$
BEGIN
  RETURN 1; -- $$ inside is fine
END;
$body$;
DO $$ BEGIN PERFORM 1; END $$;
CREATE RULE r AS ON INSERT TO a DO ALSO (SELECT 1; SELECT 2);
CREATE OR REPLACE FUNCTION g(x int) RETURNS int LANGUAGE sql
BEGIN ATOMIC
  SELECT CASE WHEN x > 0 THEN 1 ELSE 0 END;
  SELECT x;
END;
SELECT $1, a$b$c FROM a;
SELECT 'last without semicolon'
-- trailing comment`
	f, err := split(src)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		line   int
		prefix string
		suffix string
	}{
		{2, "CREATE TABLE a", `int);`},
		{3, "INSERT INTO a", `2);`},
		{4, "CREATE FUNCTION f()", "$body$;"},
		{9, "DO $$", "END $$;"},
		{10, "CREATE RULE", "SELECT 2);"},
		{11, "CREATE OR REPLACE FUNCTION g", "END;"},
		{16, "SELECT $1, a$b$c", "FROM a;"},
		{17, "SELECT 'last", "semicolon'"},
	}
	if len(f.stmts) != len(want) {
		for _, s := range f.stmts {
			t.Logf("line %d: %q", s.line, s.text)
		}
		t.Fatalf("got %d statements, want %d", len(f.stmts), len(want))
	}
	for i, w := range want {
		s := f.stmts[i]
		if s.line != w.line || !strings.HasPrefix(s.text, w.prefix) || !strings.HasSuffix(s.text, w.suffix) {
			t.Errorf("statement %d: line %d %q; want line %d, %q…%q", i, s.line, s.text, w.line, w.prefix, w.suffix)
		}
		if len(s.masked) != len(s.text) || src[s.start:s.start+len(s.text)] != s.text {
			t.Errorf("statement %d: offsets or mask length wrong", i)
		}
	}
	if strings.Contains(f.stmts[1].masked, "fine") || strings.Contains(f.stmts[0].masked, "nested") {
		t.Errorf("literals and comments should be masked: %q %q", f.stmts[0].masked, f.stmts[1].masked)
	}
}

func TestSplitRefusesUnterminated(t *testing.T) {
	for src, want := range map[string]string{
		"SELECT 1;\nSELECT 'oops;\n":      "line 2: unterminated quoted string",
		"SELECT 1; /* never\nclosed":      "line 1: unterminated /* comment",
		"\n\nDO $x$ BEGIN END $y$;":       "line 3: unterminated dollar-quoted string $x$",
		`SELECT "id;`:                     "line 1: unterminated quoted identifier",
		"SELECT E'a\\';\n":                "line 1: unterminated quoted string",
		"SELECT 1;\n/* a /* b */ still *": "line 2: unterminated /* comment",
	} {
		if _, err := split(src); err == nil || err.Error() != want {
			t.Errorf("split(%q) = %v, want %q", src, err, want)
		}
	}
}

func TestByteOffsetCountsCharacters(t *testing.T) {
	s := "SELECT 'é' + nope"
	if got := byteOffset(s, 14); s[got:got+4] != "nope" {
		t.Fatalf("position 14 is byte %d (%q)", got, s[got:])
	}
}

func TestLoad(t *testing.T) {
	fsys := fstest.MapFS{
		"db/0002_second.sql":  {Data: []byte("-- drover:no-transaction\nCREATE INDEX CONCURRENTLY i ON t (x);\n")},
		"db/0001_first.sql":   {Data: []byte("CREATE TABLE t (x int);\n")},
		"db/README.md":        {Data: []byte("notes")},
		"db/10_tenth-one.sql": {Data: []byte("SELECT 1")},
	}
	ms, err := Load(fsys, "db")
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 3 || ms[0].Version != 1 || ms[1].Version != 2 || ms[2].Version != 10 || ms[2].Name != "tenth-one" {
		t.Fatalf("got %+v", ms)
	}
	if ms[0].NoTransaction || !ms[1].NoTransaction || ms[1].File != "db/0002_second.sql" {
		t.Fatalf("got %+v", ms)
	}
	if ms[0].Checksum != "af056ff8cbf6bb40effb8920e184f2eaf0b40f2eadc0ffa125e66952e89bf8f3" { // sha256sum of the file
		t.Fatalf("checksum %q", ms[0].Checksum)
	}
}

func TestLoadReportsEveryBadFile(t *testing.T) {
	fsys := fstest.MapFS{
		"m/0001_a.sql":       {Data: []byte("SELECT 1;")},
		"m/001_dup.sql":      {Data: []byte("SELECT 1;")},
		"m/0002_b.up.sql":    {Data: []byte("SELECT 1;")},
		"m/notes.txt":        {Data: []byte("x")},
		"m/0003_empty.sql":   {Data: []byte("-- nothing here\n")},
		"m/0004_quote.sql":   {Data: []byte("SELECT 1;\nSELECT 'x;\n")},
		"m/0005_late.sql":    {Data: []byte("-- header\n-- drover:no-transaction\nSELECT 1;")},
		"m/0006_typo.sql":    {Data: []byte("-- drover:no-transactions\nSELECT 1;")},
		"m/0007_commit.sql":  {Data: []byte("CREATE TABLE x ();\nCOMMIT;\n")},
		"m/0008_ok.sql":      {Data: []byte("SAVEPOINT s; ROLLBACK TO s; SELECT 'commit;';")},
		"m/0000_zero.sql":    {Data: []byte("SELECT 1;")},
		"m/sub/0009_sub.sql": {Data: []byte("SELECT 1;")},
	}
	_, err := Load(fsys, "m")
	if err == nil {
		t.Fatal("Load accepted a bad directory")
	}
	for _, want := range []string{
		"m/001_dup.sql: version 1 is also used by m/0001_a.sql",
		"m/0002_b.up.sql: not a migration",
		"m/notes.txt: not a migration",
		"m/0003_empty.sql: no SQL statements",
		"m/0004_quote.sql: line 2: unterminated quoted string",
		`m/0005_late.sql:2: "-- drover:no-transaction" must be the first line`,
		`m/0006_typo.sql:1: unknown directive "-- drover:no-transactions"`,
		"m/0007_commit.sql:2: COMMIT: transaction control is drover's",
		"m/0000_zero.sql: version 0000 is not a number from 1",
		"m/sub: not a migration",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "0008_ok") {
		t.Errorf("0008_ok.sql is fine: %v", err)
	}
	if _, err := Load(fsys, "nope"); err == nil {
		t.Error("a missing directory should be an error")
	}
}
