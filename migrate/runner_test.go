package migrate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/drover-dev/drover/spec"
	"github.com/jackc/pgx/v5/pgconn"
)

func isRevisionFault(err error) bool {
	var rf interface{ RevisionFault() bool }
	return errors.As(err, &rf) && rf.RevisionFault()
}

// The errors of Up that the revision causes halt it; a transactional
// migration that waited too long for a lock is retried.
func TestRevisionFault(t *testing.T) {
	ms := []Migration{{Version: 1}, {Version: 2, NoTransaction: true}}
	lock := &pgconn.PgError{Code: "55P03", Message: "canceling statement due to lock timeout"}
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"refused", fmt.Errorf("%w: checksum changed", ErrRefused), true},
		{"failing migration", &MigrationError{Version: 1, Err: &pgconn.PgError{Code: "42701"}}, true},
		{"lock timeout, transactional", &MigrationError{Version: 1, Err: lock}, false},
		{"lock timeout, no-transaction", &MigrationError{Version: 2, Err: lock}, true},
		{"database down", errors.New("connection refused"), false},
	} {
		err := revisionFault(c.err, ms)
		if got := isRevisionFault(err); got != c.want {
			t.Errorf("%s: revision fault = %v, want %v", c.name, got, c.want)
		}
		if err.Error() != c.err.Error() || !errors.Is(err, c.err) {
			t.Errorf("%s: %v does not keep %v", c.name, err, c.err)
		}
	}
}

func TestNoTransaction(t *testing.T) {
	ms := []Migration{{Version: 1}, {Version: 2, NoTransaction: true}}
	if noTransaction(ms, 1) || !noTransaction(ms, 2) || noTransaction(ms, 3) {
		t.Error("noTransaction")
	}
}

// A bad file is the revision's fault; node.yaml without a database is not.
func TestRunnerFaults(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	sp := &spec.Spec{Migrations: &spec.Migrations{Dir: "db"}}
	bad := fstest.MapFS{"db/x.sql": {Data: []byte("SELECT 1;")}}
	good := fstest.MapFS{"db/0001_a.sql": {Data: []byte("SELECT 1;")}}
	r := NewRunner(RunnerConfig{Node: "web1", Log: log})
	if err := r.Migrate(context.Background(), "rev1", sp, bad); !isRevisionFault(err) {
		t.Errorf("bad file: %v is not a revision fault", err)
	}
	err := r.Migrate(context.Background(), "rev1", sp, good)
	if err == nil || isRevisionFault(err) || !strings.Contains(err.Error(), "node.yaml of node web1 has no database section") {
		t.Errorf("no database: %v", err)
	}
	if err := r.Migrate(context.Background(), "rev1", &spec.Spec{}, bad); err != nil {
		t.Errorf("no migrations: %v", err)
	}
}
