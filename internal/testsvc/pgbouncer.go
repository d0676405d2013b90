package testsvc

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// PgBouncer is a running PgBouncer in front of a test's PostgreSQL.
type PgBouncer struct {
	*Proc
	Addr string
}

// StartPgBouncer runs PgBouncer (/usr/sbin/pgbouncer, Debian's package) in
// the foreground on a free port with the given pool_mode and
// default_pool_size, every database forwarded to the PostgreSQL server of
// serverDSN as user postgres (trust auth). PgBouncer refuses to run as root:
// under root it runs as the postgres user, as StartPostgres runs postgres.
// It is stopped (SIGTERM, by PID) when the test ends.
func StartPgBouncer(t testing.TB, serverDSN, mode string, poolSize int) *PgBouncer {
	t.Helper()
	u, err := url.Parse(serverDSN)
	if err != nil {
		t.Fatal(err)
	}
	dir := WorldDir(t, "pgbouncer")
	port := FreePort(t)
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
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		pu, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root needs the postgres user (make setup): %v", err)
		}
		uid, _ := strconv.Atoi(pu.Uid)
		gid, _ := strconv.Atoi(pu.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	p := start(t, "pgbouncer", filepath.Join(dir, "pgbouncer.log"), syscall.SIGTERM, cred,
		Bin(t, "pgbouncer"), filepath.Join(dir, "pgbouncer.ini"))
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	waitFor(t, p, "listening on "+addr, func() bool { return canDial(addr) })
	return &PgBouncer{Proc: p, Addr: addr}
}

// DSN connects through PgBouncer to database db as postgres.
func (b *PgBouncer) DSN(db string) string {
	return "postgres://postgres@" + b.Addr + "/" + db + "?sslmode=disable"
}
