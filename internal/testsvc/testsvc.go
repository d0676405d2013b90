// Package testsvc starts the real programs drover drives (nginx, redis-server,
// PostgreSQL, HAProxy) for tests, on loopback and free ports, in temporary
// directories, and stops them by PID when the test ends. A missing program
// fails the test with the command that installs it (make setup): tests never
// skip for want of a binary.
package testsvc

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago. It
// is picked below the kernel's ephemeral range, from which every outgoing
// connection takes its local port: a server told to listen on a port from
// that range may find it taken by a test's own client in the meantime.
// A port is handed out at most once per test binary: two calls in a row
// (an HTTPS and a health port for the same nginx) would otherwise get the
// same port now and then, since nothing listens on it between the calls.
func FreePort(t testing.TB) int {
	t.Helper()
	lo, hi := 10000, 32000
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var first, last int
		if _, err := fmt.Sscan(string(b), &first, &last); err == nil && first > lo+1000 {
			hi = first
		}
	}
	for range 1000 {
		port := lo + rand.IntN(hi-lo)
		if !claimPort(port) {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		l.Close()
		return port
	}
	t.Fatalf("no free port between %d and %d", lo, hi)
	return 0
}

var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// claimPort reports whether port was not handed out before, and marks it.
func claimPort(port int) bool {
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports[port] {
		return false
	}
	handedOut.ports[port] = true
	return true
}

// FreePorts returns the first of n consecutive free ports (a worker with n
// instances listens on port, port+1, …).
func FreePorts(t testing.TB, n int) int {
	t.Helper()
	for range 100 {
		base := FreePort(t)
		ok := true
		for i := 1; i < n && ok; i++ {
			if ok = claimPort(base + i); !ok {
				continue // ends the loop: ok is its condition
			}
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(base+i)))
			if ok = err == nil; ok {
				l.Close()
			}
		}
		if ok {
			return base
		}
	}
	t.Fatalf("no %d consecutive free ports", n)
	return 0
}

// Bin finds a program on PATH or in the sbin and PostgreSQL directories.
func Bin(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	dirs := []string{"/usr/sbin", "/sbin", "/usr/local/sbin"}
	if pg, _ := filepath.Glob("/usr/lib/postgresql/*/bin"); len(pg) > 0 {
		dirs = append(dirs, pg[len(pg)-1])
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatalf("%s is not installed: run `make setup` (scripts/setup.sh installs it from Debian's packages)", name)
	return ""
}

// WorldDir makes a temporary directory that other users (nginx's www-data,
// postgres) can traverse, unlike t.TempDir's 0700 parents. It is removed when
// the test ends.
func WorldDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "drover-"+prefix+"-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// Proc is a started server process.
type Proc struct {
	Name string
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

// PID returns the process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Kill sends SIGKILL and waits for the process to exit.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop sends sig and waits up to 10 s, then kills.
func (p *Proc) Stop(sig syscall.Signal) {
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.Kill()
	}
}

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Log returns what the process wrote so far.
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// start runs argv with its output in logFile, stopped with stopSig at cleanup.
func start(t testing.TB, name, logFile string, stopSig syscall.Signal, cred *syscall.Credential, argv ...string) *Proc {
	t.Helper()
	f, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &Proc{Name: name, cmd: cmd, done: make(chan struct{}), log: logFile}
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		if !p.Exited() {
			p.Stop(stopSig)
		}
	})
	return p
}

// waitFor polls ok until it returns true, the process exits, or 15 s pass.
func waitFor(t testing.TB, p *Proc, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !ok() {
		if p.Exited() {
			t.Fatalf("%s exited before %s:\n%s", p.Name, what, p.Log())
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: timed out waiting for %s:\n%s", p.Name, what, p.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func canDial(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// Nginx is a running nginx master.
type Nginx struct {
	*Proc
	Bin, Prefix, Conf string
}

// StartNginx runs `nginx -p prefix -c conf` in the foreground and waits until
// addr (host:port, one of its listeners) accepts connections. conf must not
// set `daemon`.
func StartNginx(t testing.TB, prefix, conf, addr string) *Nginx {
	t.Helper()
	bin := Bin(t, "nginx")
	p := start(t, "nginx", filepath.Join(prefix, "nginx.stderr"), syscall.SIGQUIT, nil,
		bin, "-p", prefix, "-c", conf, "-g", "daemon off;")
	waitFor(t, p, "listening on "+addr, func() bool { return canDial(addr) })
	return &Nginx{Proc: p, Bin: bin, Prefix: prefix, Conf: conf}
}

// Redis is a running redis-server.
type Redis struct {
	*Proc
	Addr string
	Port int
	Dir  string
}

// StartRedis runs a redis-server without persistence on a free port; extra
// arguments (e.g. "--replicaof", "127.0.0.1", "6380") are appended.
func StartRedis(t testing.TB, extra ...string) *Redis {
	t.Helper()
	dir := t.TempDir()
	port := FreePort(t)
	args := append([]string{Bin(t, "redis-server"), "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--dir", dir, "--save", "", "--appendonly", "no"}, extra...)
	p := start(t, "redis-server", filepath.Join(dir, "redis.log"), syscall.SIGTERM, nil, args...)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	waitFor(t, p, "listening on "+addr, func() bool { return canDial(addr) })
	return &Redis{Proc: p, Addr: addr, Port: port, Dir: dir}
}

// StartSentinel runs a Redis Sentinel watching master (named masterName) with
// the given quorum, on a free port.
func StartSentinel(t testing.TB, masterName, masterAddr string, quorum int) *Redis {
	t.Helper()
	dir := t.TempDir()
	port := FreePort(t)
	host, mport, _ := net.SplitHostPort(masterAddr)
	conf := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor %s %s %s %d\n"+
		"sentinel down-after-milliseconds %s 1000\nsentinel failover-timeout %s 5000\nsentinel parallel-syncs %s 1\n",
		port, dir, masterName, host, mport, quorum, masterName, masterName, masterName)
	cf := filepath.Join(dir, "sentinel.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	p := start(t, "redis-sentinel", filepath.Join(dir, "sentinel.log"), syscall.SIGTERM, nil,
		Bin(t, "redis-server"), cf, "--sentinel")
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	waitFor(t, p, "listening on "+addr, func() bool { return canDial(addr) })
	return &Redis{Proc: p, Addr: addr, Port: port, Dir: dir}
}

// Postgres is a running PostgreSQL server with a fresh cluster.
type Postgres struct {
	*Proc
	// DSN connects as the superuser postgres to database postgres.
	DSN  string
	Port int
	Dir  string
}

// StartPostgres runs initdb and postgres (as the postgres user when the test
// runs as root) on a free port, with fsync off.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	initdb, postgres := Bin(t, "initdb"), Bin(t, "postgres")
	dir := WorldDir(t, "pg")
	data := filepath.Join(dir, "data")
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root needs the postgres user (make setup): %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(initdb, "-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale", "C")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C"}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	port := FreePort(t)
	p := start(t, "postgres", filepath.Join(dir, "postgres.log"), syscall.SIGINT, cred,
		postgres, "-D", data, "-c", "port="+strconv.Itoa(port), "-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories="+dir, "-c", "fsync=off", "-c", "synchronous_commit=off",
		"-c", "full_page_writes=off", "-c", "max_connections=100")
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	waitFor(t, p, "accepting connections", func() bool {
		return canDial(addr) && strings.Contains(p.Log(), "ready to accept connections")
	})
	return &Postgres{Proc: p, DSN: fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", addr), Port: port, Dir: dir}
}

// HAProxy is a running haproxy with an admin runtime socket.
type HAProxy struct {
	*Proc
	// Socket is the runtime API's unix socket (level admin).
	Socket string
	Dir    string
}

// StartHAProxy runs haproxy -db with cfg, to which it prepends a global
// section with an admin stats socket. cfg holds defaults, frontends and
// backends.
func StartHAProxy(t testing.TB, cfg string) *HAProxy {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "admin.sock")
	full := fmt.Sprintf("global\n    stats socket %s mode 600 level admin\n    maxconn 4000\n\n%s", sock, cfg)
	cf := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cf, []byte(full), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := Bin(t, "haproxy")
	if out, err := exec.Command(bin, "-c", "-q", "-f", cf).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s\n%s", err, out, full)
	}
	p := start(t, "haproxy", filepath.Join(dir, "haproxy.log"), syscall.SIGUSR1, nil, bin, "-db", "-f", cf)
	waitFor(t, p, "its runtime socket", func() bool {
		c, err := net.DialTimeout("unix", sock, 200*time.Millisecond)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	return &HAProxy{Proc: p, Socket: sock, Dir: dir}
}

// Runtime sends one command to the HAProxy runtime API and returns the answer
// (for tests that check what the product's own client did).
func (h *HAProxy) Runtime(ctx context.Context, command string) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", h.Socket)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if _, err := fmt.Fprintf(c, "%s\n", command); err != nil {
		return "", err
	}
	var b strings.Builder
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		b.WriteString(sc.Text())
		b.WriteByte('\n')
	}
	return b.String(), sc.Err()
}
