package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/drover-dev/drover/internal/sysnode"
)

// The infra namespace's services are plain processes started in the infra
// network namespace and in the lab's "infra" cgroup, each with a pid file
// and a log in Dir/infra. Stop checks that a pid is still in that cgroup
// before it signals it: a pid file can outlive its process.

func canRun() error {
	if err := sysnode.CanRun(); err != nil {
		return err
	}
	for _, bin := range []string{"ip", "haproxy", "redis-server", "git", "nginx", "node"} {
		if _, err := lookBin(bin); err != nil {
			return err
		}
	}
	_, err := lookBin("postgres")
	return err
}

// lookBin finds a program on PATH, in the sbin directories or in
// PostgreSQL's versioned bin directory.
func lookBin(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	dirs := []string{"/usr/sbin", "/sbin", "/usr/local/sbin"}
	if pg, _ := filepath.Glob("/usr/lib/postgresql/*/bin"); len(pg) > 0 {
		dirs = append(dirs, pg[len(pg)-1])
	}
	for _, d := range dirs {
		if p := filepath.Join(d, name); isFile(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s is not installed: run `make setup`", name)
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// cgroup is the lab's cgroup directory; nodes and infra have theirs below.
func (l *Lab) cgroup() string {
	cg2, _ := sysnode.Cgroup2Root()
	return filepath.Join(cg2, l.cgroupGroup())
}

func (l *Lab) cgroupGroup() string { return "drover-lab-" + l.cfg.Prefix }

func (l *Lab) infraDir() string { return filepath.Join(l.cfg.Dir, "infra") }

// service is one infra process.
type service struct {
	name  string
	argv  []string
	user  string // run as this user (postgres), else root
	ready func(context.Context) error
}

// start starts s in the infra namespace and waits until it is ready.
func (l *Lab) start(ctx context.Context, s service) error {
	cg := filepath.Join(l.cgroup(), "infra")
	if err := os.MkdirAll(cg, 0o755); err != nil {
		return err
	}
	cgfd, err := syscall.Open(cg, syscall.O_DIRECTORY|syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(cgfd)
	argv := []string{"nsenter", "--net=/run/netns/" + l.netns("infra"), "--"}
	if s.user != "" {
		argv = append(argv, "setpriv", "--reuid="+s.user, "--regid="+s.user, "--init-groups")
	}
	argv = append(argv, s.argv...)
	logf, err := os.OpenFile(filepath.Join(l.infraDir(), s.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}
	// Its own session, in the lab's cgroup, and no parent-death signal:
	// the service outlives the CLI that started the lab.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, UseCgroupFD: true, CgroupFD: cgfd}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	pid := cmd.Process.Pid
	if err := os.WriteFile(l.pidFile(s.name), []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	// A service that never got ready is stopped again, so that a later
	// Start does not find it "already running".
	fail := func(err error) error {
		_ = l.stop(s.name, syscall.SIGKILL)
		return err
	}
	for {
		err := s.ready(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fail(fmt.Errorf("%s exited at start: %s", s.name, l.tail(s.name)))
		case <-ctx.Done():
			return fail(fmt.Errorf("%s not ready: %w", s.name, ctx.Err()))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("%s not ready after 30s: %v\n%s", s.name, err, l.tail(s.name)))
		}
	}
}

func (l *Lab) pidFile(name string) string { return filepath.Join(l.infraDir(), name+".pid") }

// tail is the end of a service's log.
func (l *Lab) tail(name string) string {
	b, _ := os.ReadFile(filepath.Join(l.infraDir(), name+".log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// pid is the running process of service name, or 0.
func (l *Lab) pid(name string) int {
	b, err := os.ReadFile(l.pidFile(name))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 0 || !l.inLab(pid) {
		return 0
	}
	return pid
}

// inLab reports whether pid is a live process in the lab's cgroup.
func (l *Lab) inLab(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return false
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil || strings.Contains(string(st), ") Z ") {
		return false
	}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "0::/"); ok && strings.HasPrefix(rest+"/", l.cgroupGroup()+"/") {
			return true
		}
	}
	return false
}

// stop sends sig to service name and waits up to 10 s for it to exit, then
// kills it.
func (l *Lab) stop(name string, sig syscall.Signal) error {
	pid := l.pid(name)
	if pid == 0 {
		return nil
	}
	_ = syscall.Kill(pid, sig)
	deadline := time.Now().Add(10 * time.Second)
	for l.inLab(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			deadline = time.Now().Add(5 * time.Second)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return os.Remove(l.pidFile(name))
}

// Kill kills an infra service at once (SIGKILL): "redis", "replica",
// "sentinel1".."sentinel3", "postgres", "haproxy", "forge".
func (l *Lab) Kill(name string) error {
	if l.pid(name) == 0 {
		return fmt.Errorf("infra service %s is not running", name)
	}
	return l.stop(name, syscall.SIGKILL)
}

// Stop stops an infra service cleanly.
func (l *Lab) Stop(name string) error {
	if l.pid(name) == 0 {
		return fmt.Errorf("infra service %s is not running", name)
	}
	sig := syscall.SIGTERM
	if name == "postgres" {
		sig = syscall.SIGINT // fast shutdown
	}
	return l.stop(name, sig)
}

// Start starts an infra service again (after Kill or Stop), as configured
// at Up.
func (l *Lab) Start(ctx context.Context, name string) error {
	if l.pid(name) != 0 {
		return fmt.Errorf("infra service %s is already running", name)
	}
	for _, s := range l.services() {
		if s.name == name {
			return l.start(ctx, s)
		}
	}
	return fmt.Errorf("no infra service %s", name)
}

// Running reports whether an infra service is running.
func (l *Lab) Running(name string) bool { return l.pid(name) != 0 }

// services are the infra's services in start order.
func (l *Lab) services() []service {
	d := l.infraDir()
	ipa := l.InfraIP()
	redisArgs := func(port int, extra ...string) []string {
		return append([]string{"redis-server", "--bind", ipa, "--port", strconv.Itoa(port),
			"--dir", filepath.Join(d, "redis-"+strconv.Itoa(port)), "--save", "", "--appendonly", "no",
			"--protected-mode", "no", "--daemonize", "no"}, extra...)
	}
	pgBin, _ := lookBin("postgres")
	svcs := []service{
		{name: "redis", argv: redisArgs(portRedis), ready: redisReady(ipa, portRedis)},
		{name: "replica", argv: redisArgs(portReplica, "--replicaof", ipa, strconv.Itoa(portRedis)), ready: redisReady(ipa, portReplica)},
	}
	for i := range 3 {
		name := fmt.Sprintf("sentinel%d", i+1)
		svcs = append(svcs, service{name: name, argv: []string{"redis-server", filepath.Join(d, name+".conf"), "--sentinel"},
			ready: redisReady(ipa, portSentinel+i)})
	}
	svcs = append(svcs,
		service{name: "postgres", user: "postgres", argv: []string{pgBin, "-D", filepath.Join(d, "pg", "data"),
			"-c", "listen_addresses=" + ipa, "-c", fmt.Sprint("port=", portPostgres),
			"-c", "unix_socket_directories=" + filepath.Join(d, "pg"), "-c", "fsync=off",
			"-c", "synchronous_commit=off", "-c", "full_page_writes=off"},
			ready: tcpReady(ipa, portPostgres)},
		service{name: "haproxy", argv: []string{"haproxy", "-db", "-f", filepath.Join(d, "haproxy.cfg")},
			ready: func(context.Context) error { return socketReady(l.HAProxySocket()) }},
		service{name: "forge", argv: []string{l.cfg.Lab, "forge", "--root", filepath.Join(l.cfg.Dir, "git"),
			"--listen", fmt.Sprintf("%s:%d", ipa, portForge), "--branch", "main",
			"--webhook", fmt.Sprintf("http://%s%s", l.LBAddr(), webhookPath), "--webhook-host", webhookHost,
			"--secret-file", filepath.Join(d, "webhook.secret")},
			ready: tcpReady(ipa, portForge)},
		service{name: "notify", argv: []string{l.cfg.Lab, "receiver", "--listen", fmt.Sprintf("%s:%d", ipa, portNotify),
			"--out", l.notificationsFile()},
			ready: tcpReady(ipa, portNotify)},
	)
	return svcs
}

// infraUp writes the services' configs and starts them.
func (l *Lab) infraUp(ctx context.Context) error {
	d := l.infraDir()
	for _, sub := range []string{"", "redis-6379", "redis-6380", "pg"} {
		if err := os.MkdirAll(filepath.Join(d, sub), 0o755); err != nil {
			return err
		}
	}
	for i := range 3 {
		conf := fmt.Sprintf(`port %d
bind %s
protected-mode no
daemonize no
dir %s
sentinel monitor %s %s %d 2
sentinel down-after-milliseconds %s 1000
sentinel failover-timeout %s 5000
sentinel parallel-syncs %s 1
`, portSentinel+i, l.InfraIP(), d, masterName, l.InfraIP(), portRedis, masterName, masterName, masterName)
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("sentinel%d.conf", i+1)), []byte(conf), 0o644); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(d, "haproxy.cfg"), []byte(l.haproxyConfig()), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(d, "webhook.secret"), []byte(l.cfg.Secret+"\n"), 0o600); err != nil {
		return err
	}
	if err := l.initdb(ctx); err != nil {
		return err
	}
	for _, s := range l.services() {
		if err := l.start(ctx, s); err != nil {
			return err
		}
	}
	l.logf("infra up at %s: HAProxy, Redis master+replica, 3 Sentinels, PostgreSQL, forge, notification receiver", l.InfraIP())
	return nil
}

// haproxyConfig is the load balancer: HTTP on NET.2:80 to every node's
// nginx over TLS, each node checked on its plain-HTTP health port the way a
// cloud load balancer does. Like DigitalOcean's and AWS's load balancers it
// never retries or redispatches a request: one that a node drops or fails is
// the client's failure, which is what the scenarios must see (TESTING.md).
func (l *Lab) haproxyConfig() string {
	var b strings.Builder
	fmt.Fprintf(&b, `global
    stats socket %s mode 600 level admin
    maxconn 4096

defaults
    mode http
    # A cloud LB's connect timeout (AWS: 10 s); a shorter one fails
    # requests whenever this shared 2-core machine stalls for a second.
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 10s
    retries 0

frontend web
    bind %s:%d
    default_backend nodes

backend nodes
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
    default-server inter %dms fall %d rise %d
`, l.HAProxySocket(), l.InfraIP(), portLB, checkInterval.Milliseconds(), checkFall, checkRise)
	for i, n := range l.cfg.all() {
		fmt.Fprintf(&b, "    server %s %s:%d ssl verify none sni req.hdr(host),field(1,:) check port %d no-check-ssl\n", n, l.ip(11+i), httpsPort, healthPort)
	}
	return b.String()
}

// initdb makes the database cluster (as the postgres user, whose files
// they are) and lets the nodes' subnet in.
func (l *Lab) initdb(ctx context.Context) error {
	pg := filepath.Join(l.infraDir(), "pg")
	u, err := user.Lookup("postgres")
	if err != nil {
		return fmt.Errorf("user postgres: %w (install postgresql: make setup)", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(pg, uid, gid); err != nil {
		return err
	}
	initdb, err := lookBin("initdb")
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups",
		initdb, "-D", filepath.Join(pg, "data"), "-A", "trust", "-U", "postgres", "--no-sync")
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8"}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %w: %s", err, out)
	}
	hba, err := os.OpenFile(filepath.Join(pg, "data", "pg_hba.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer hba.Close()
	_, err = fmt.Fprintf(hba, "host all all %s.0/24 trust\n", l.cfg.Net)
	return err
}

// infraDown stops the services, then whatever is left in the infra cgroup.
func (l *Lab) infraDown() error {
	var errs []error
	for _, s := range l.services() {
		sig := syscall.SIGTERM
		if s.name == "postgres" {
			sig = syscall.SIGINT
		}
		if err := l.stop(s.name, sig); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := sysnode.RemoveCgroup(filepath.Join(l.cgroup(), "infra")); err != nil {
		errs = append(errs, err)
	}
	if err := sysnode.RemoveCgroup(l.cgroup()); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func tcpReady(host string, port int) func(context.Context) error {
	return func(ctx context.Context) error {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(host, strconv.Itoa(port)), time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

func redisReady(host string, port int) func(context.Context) error {
	return func(ctx context.Context) error {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(host, strconv.Itoa(port)), time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Second))
		if _, err := c.Write([]byte("PING\r\n")); err != nil {
			return err
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return err
		}
		if !strings.HasPrefix(line, "+PONG") {
			return fmt.Errorf("redis :%d answered %q", port, strings.TrimSpace(line))
		}
		return nil
	}
}

func socketReady(path string) error {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

func mountsUnder(dir string) []string { return sysnode.MountsUnder(dir) }
