package migrate

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/testsvc"
)

// pgBouncer is a real PgBouncer in front of the test's PostgreSQL.
type pgBouncer struct {
	addr string
	log  string
}

// startPgBouncer runs PgBouncer (/usr/sbin/pgbouncer, Debian's package) in
// the foreground on a free port with the given pool_mode and
// default_pool_size, every database forwarded to the PostgreSQL server of
// serverDSN as user postgres (trust auth). PgBouncer refuses to run as root:
// under root it runs as the postgres user, as testsvc runs postgres. It is
// stopped (SIGTERM, by PID) when the test ends.
func startPgBouncer(t *testing.T, serverDSN, mode string, poolSize int) *pgBouncer {
	t.Helper()
	u, err := url.Parse(serverDSN)
	if err != nil {
		t.Fatal(err)
	}
	dir := testsvc.WorldDir(t, "pgbouncer")
	port := testsvc.FreePort(t)
	ini := fmt.Sprintf(`[databases]
* = host=%s port=%s user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = %s
default_pool_size = %d
max_client_conn = 100
server_round_robin = 0
query_wait_timeout = 30
admin_users =
`, u.Hostname(), u.Port(), port, filepath.Join(dir, "users.txt"), mode, poolSize)
	for name, content := range map[string]string{"pgbouncer.ini": ini, "users.txt": `"postgres" ""` + "\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b := &pgBouncer{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), log: filepath.Join(dir, "pgbouncer.log")}
	logf, err := os.Create(b.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(testsvc.Bin(t, "pgbouncer"), filepath.Join(dir, "pgbouncer.ini"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if os.Geteuid() == 0 {
		pu, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root needs the postgres user (make setup): %v", err)
		}
		uid, _ := strconv.Atoi(pu.Uid)
		gid, _ := strconv.Atoi(pu.Gid)
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start pgbouncer: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		select {
		case <-done:
			t.Fatalf("pgbouncer exited at start:\n%s", b.output())
		default:
		}
		if c, err := net.DialTimeout("tcp", b.addr, 200*time.Millisecond); err == nil {
			c.Close()
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("pgbouncer does not listen on %s:\n%s", b.addr, b.output())
		}
	}
}

func (b *pgBouncer) output() string {
	out, _ := os.ReadFile(b.log)
	return string(out)
}

// dsn connects through PgBouncer to database db.
func (b *pgBouncer) dsn(db string) string {
	return "postgres://postgres@" + b.addr + "/" + db + "?sslmode=disable"
}

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
		b := startPgBouncer(t, e.dsn, mode, 3)
		_, err := Open(e.ctx, b.dsn(e.db()), Config{})
		if !errors.Is(err, ErrTransactionPooling) || !strings.Contains(err.Error(), "pool_mode=session") {
			t.Fatalf("pool_mode=%s: Open = %v, want ErrTransactionPooling with its advice\npgbouncer:\n%s", mode, err, b.output())
		}
		t.Logf("pool_mode=%s: %v", mode, err)
	}
}

func testPgBouncerSessionAccepted(t *testing.T, e *env) {
	b := startPgBouncer(t, e.dsn, "session", 3)
	e.write("0001_a.sql", "CREATE TABLE a (id int);\nINSERT INTO a VALUES (1);")
	e.write("0002_b.sql", "-- drover:no-transaction\nCREATE INDEX CONCURRENTLY a_id ON a (id);")
	m, err := Open(e.ctx, b.dsn(e.db()), Config{Node: "through-pgbouncer"})
	if err != nil {
		t.Fatalf("Open through pool_mode=session: %v\npgbouncer:\n%s", err, b.output())
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
	b := startPgBouncer(t, e.dsn, "session", 1)
	start := time.Now()
	_, err := Open(e.ctx, b.dsn(e.db()), Config{})
	if err == nil || errors.Is(err, ErrTransactionPooling) || !strings.Contains(err.Error(), "no server connection") ||
		time.Since(start) > 15*time.Second {
		t.Fatalf("Open = %v after %v, want a bounded probe failure", err, time.Since(start))
	}
}
