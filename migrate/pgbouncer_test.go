package migrate

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/testsvc"
)

// envDB is the test database's name.
func (e *env) db() string {
	u, err := url.Parse(e.dsn)
	if err != nil {
		e.t.Fatal(err)
	}
	return strings.TrimPrefix(u.Path, "/")
}

func testPgBouncerTransactionRefused(t *testing.T, e *env) {
	for _, mode := range []string{"transaction", "statement"} {
		b := testsvc.StartPgBouncer(t, e.dsn, mode, 3)
		_, err := Open(e.ctx, b.DSN(e.db()), Config{})
		if !errors.Is(err, ErrTransactionPooling) || !strings.Contains(err.Error(), "pool_mode=session") {
			t.Fatalf("pool_mode=%s: Open = %v, want ErrTransactionPooling with its advice\npgbouncer:\n%s", mode, err, b.Log())
		}
		t.Logf("pool_mode=%s: %v", mode, err)
	}
}

func testPgBouncerSessionAccepted(t *testing.T, e *env) {
	b := testsvc.StartPgBouncer(t, e.dsn, "session", 3)
	e.write("0001_a.sql", "CREATE TABLE a (id int);\nINSERT INTO a VALUES (1);")
	e.write("0002_b.sql", "-- drover:no-transaction\nCREATE INDEX CONCURRENTLY a_id ON a (id);")
	m, err := Open(e.ctx, b.DSN(e.db()), Config{Node: "through-pgbouncer"})
	if err != nil {
		t.Fatalf("Open through pool_mode=session: %v\npgbouncer:\n%s", err, b.Log())
	}
	defer m.Close(context.Background())
	if pid, err := backendPID(e.ctx, m.conn); err != nil || pid == m.conn.PgConn().PID() {
		t.Fatalf("PgBouncer should hide the backend's pid (%d, %v): this test must exercise the pooler probe", pid, err)
	}
	applied, err := m.Up(e.ctx, e.load())
	if err != nil || fmt.Sprint(versions(applied)) != "[1 2]" || !e.exists("a") || !e.exists("a_id") {
		t.Fatalf("Up through PgBouncer = %v, %v", versions(applied), err)
	}
	if n := value[int](e, "SELECT count(*) FROM drover_schema_migrations WHERE status = 'applied' AND applied_by = 'through-pgbouncer'"); n != 2 {
		t.Fatalf("ledger has %d applied rows, want 2", n)
	}
}

// testPgBouncerSessionPoolFull: when the session pool has no server for the
// probe (every server pinned), Open says so within its bound instead of
// hanging until ctx ends.
func testPgBouncerSessionPoolFull(t *testing.T, e *env) {
	b := testsvc.StartPgBouncer(t, e.dsn, "session", 1)
	start := time.Now()
	_, err := Open(e.ctx, b.DSN(e.db()), Config{})
	if err == nil || errors.Is(err, ErrTransactionPooling) || !strings.Contains(err.Error(), "no server connection") ||
		time.Since(start) > 15*time.Second {
		t.Fatalf("Open = %v after %v, want a bounded probe failure", err, time.Since(start))
	}
}
