package migrate

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Migration is one file of the migrations directory.
type Migration struct {
	Version int64  // the file name's leading digits
	Name    string // the file name between the version and ".sql": "add_users" in 0003_add_users.sql
	File    string // the file's path in the fs.FS, e.g. "migrations/0003_add_users.sql"
	SQL     []byte
	// Checksum is the hex SHA-256 of SQL. An applied migration's file must
	// never change: Up refuses to run when it did.
	Checksum string
	// NoTransaction is set by the first line "-- drover:no-transaction":
	// the statements run one by one, each in its own implicit transaction,
	// for statements that cannot run in a transaction block (CREATE INDEX
	// CONCURRENTLY). A failure then leaves the statements before it applied,
	// and the migration is recorded failed until an operator resolves it.
	NoTransaction bool
}

// base is the migration's file name without its directory.
func (m Migration) base() string { return path.Base(m.File) }

const directive = "-- drover:"

var fileName = regexp.MustCompile(`^([0-9]+)_([A-Za-z0-9_-]+)\.sql$`)

// Load reads the migrations in dir of fsys: files named NNNN_name.sql, where
// NNNN is the version (digits, leading zeros allowed). Files whose names start
// with README are ignored; any other file or directory is an error, and so are
// two files with the same version, a file without statements, an unterminated
// quote or comment, a misplaced or unknown "-- drover:" directive, and
// transaction control (BEGIN, COMMIT, ROLLBACK …: drover owns the
// transaction). Every problem is reported, each naming its file (and line).
// The result is sorted by version.
func Load(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("load migrations: %w", err)
	}
	var (
		ms   []Migration
		errs []error
		seen = map[int64]string{}
	)
	for _, e := range entries {
		name := e.Name()
		file := path.Join(dir, name)
		if strings.HasPrefix(strings.ToUpper(name), "README") {
			continue
		}
		parts := fileName.FindStringSubmatch(name)
		if e.IsDir() || parts == nil {
			errs = append(errs, fmt.Errorf("%s: not a migration: the directory may hold only NNNN_name.sql files (and README*)", file))
			continue
		}
		version, err := strconv.ParseInt(parts[1], 10, 64)
		if err != nil || version <= 0 {
			errs = append(errs, fmt.Errorf("%s: version %s is not a number from 1 to %d", file, parts[1], int64(1<<63-1)))
			continue
		}
		if other, dup := seen[version]; dup {
			errs = append(errs, fmt.Errorf("%s: version %d is also used by %s", file, version, other))
			continue
		}
		seen[version] = file
		sql, err := fs.ReadFile(fsys, file)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", file, err))
			continue
		}
		m := Migration{Version: version, Name: parts[2], File: file, SQL: sql, Checksum: checksum(sql)}
		if m.NoTransaction, err = parseDirective(sql); err != nil {
			errs = append(errs, fmt.Errorf("%s:%w", file, err))
			continue
		}
		if _, err := statements(m); err != nil {
			errs = append(errs, err)
			continue
		}
		ms = append(ms, m)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("load migrations from %s: %w", dir, errors.Join(errs...))
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	return ms, nil
}

func checksum(sql []byte) string {
	sum := sha256.Sum256(sql)
	return hex.EncodeToString(sum[:])
}

// parseDirective reads the optional first-line directive; its errors start
// with the line number.
func parseDirective(sql []byte) (noTx bool, err error) {
	for n, line := range strings.Split(string(sql), "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, directive) {
			continue
		}
		if n > 0 {
			return false, fmt.Errorf("%d: %q must be the first line of the file", n+1, line)
		}
		if line != directive+"no-transaction" {
			return false, fmt.Errorf("1: unknown directive %q (the only one is %q)", line, directive+"no-transaction")
		}
		noTx = true
	}
	return noTx, nil
}

// statements splits a migration into its statements and checks that drover
// can run them; errors name the file and line.
func statements(m Migration) (*sqlFile, error) {
	f, err := split(string(m.SQL))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.File, err)
	}
	if len(f.stmts) == 0 {
		return nil, fmt.Errorf("%s: no SQL statements", m.File)
	}
	for _, s := range f.stmts {
		w := words(s.masked)
		first, second := "", ""
		if len(w) > 0 {
			first = w[0].word
		}
		if len(w) > 1 {
			second = w[1].word
		}
		switch {
		case first == "begin", first == "start", first == "commit", first == "end", first == "abort",
			first == "rollback" && second != "to", first == "prepare" && second == "transaction":
			return nil, fmt.Errorf("%s:%d: %s: transaction control is drover's: a migration runs in one transaction "+
				"(or, after %q, statement by statement)", m.File, s.line, strings.ToUpper(first), directive+"no-transaction")
		}
	}
	return f, nil
}
