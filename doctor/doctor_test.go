package doctor

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/systemdtest"
	"github.com/drover-dev/drover/internal/testsvc"
	"github.com/drover-dev/drover/lbdrain"
	"github.com/drover-dev/drover/spec"
)

// The cluster-level outcomes (repo, Redis, LB, database, secrets) are
// tested through the CLI in cmd/drover (TestDoctor); these are the host's.

func testDoctor(t *testing.T, n *spec.Node) *doctor {
	t.Helper()
	if n.StateDir == "" {
		n.StateDir = t.TempDir()
	}
	if n.KeepReleases == 0 {
		n.KeepReleases = 5
	}
	return &doctor{cfg: Config{Node: n, Timeout: 5 * time.Second, SystemdRunning: systemdRunning}, n: n}
}

// TestSystemdCheck: a real systemd answers on its private bus with its
// version; a socket nothing listens on fails, naming it.
func TestSystemdCheck(t *testing.T) {
	node := systemdtest.Boot(t, systemdtest.Options{Name: "doctor"})
	d := testDoctor(t, &spec.Node{Supervisor: "systemd", Systemd: spec.Systemd{Socket: node.Socket()}})
	rs := d.systemd(context.Background())
	if len(rs) != 1 || rs[0].Status == Fail || !strings.Contains(rs[0].Detail, "reachable at "+node.Socket()) {
		t.Fatalf("systemd check on a running systemd: %+v", rs)
	}
	t.Logf("%s: %s", rs[0].Status, rs[0].Detail)
	gone := filepath.Join(t.TempDir(), "private")
	d = testDoctor(t, &spec.Node{Supervisor: "systemd", Systemd: spec.Systemd{Socket: gone}})
	if rs := d.systemd(context.Background()); rs[0].Status != Fail || !strings.Contains(rs[0].Detail, gone) {
		t.Errorf("systemd check on no socket: %+v", rs)
	}
	d = testDoctor(t, &spec.Node{})
	d.cfg.SystemdRunning = func() bool { return false }
	if rs := d.systemd(context.Background()); rs[0].Status != Warn || !strings.Contains(rs[0].Detail, "supervisor exec") {
		t.Errorf("no systemd with supervisor unset: %+v, want a warning that workers run as the agent's children", rs)
	}
}

// TestPortsCheck: a port held by nginx on drover's address is fine (drover
// rewrites its config and reloads it); on another address that a reload
// cannot take over, it fails; a port held by anything else fails, naming
// the process; a free one passes.
func TestPortsCheck(t *testing.T) {
	prefix := testsvc.WorldDir(t, "doctor-nginx")
	nginxPort, otherPort, freePort := testsvc.FreePort(t), testsvc.FreePort(t), testsvc.FreePort(t)
	conf := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("pid %s/nginx.pid;\nerror_log %s/error.log;\nevents {}\nhttp {\n  access_log off;\n  client_body_temp_path %s;\n  server { listen 127.0.0.1:%d; return 204; }\n}\n",
		prefix, prefix, prefix, nginxPort)), 0o644); err != nil {
		t.Fatal(err)
	}
	testsvc.StartNginx(t, prefix, conf, "127.0.0.1:"+strconv.Itoa(nginxPort))
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(otherPort))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	d := testDoctor(t, &spec.Node{Nginx: spec.NodeNginx{Listen: "127.0.0.1", HTTPSPort: nginxPort, HealthPort: freePort}})
	if r := d.checkPorts(d.ports(nil)); r.Status != Pass || !strings.Contains(r.Detail, "1 free, 1 held by nginx") {
		t.Errorf("nginx on the HTTPS port: %+v, want a pass", r)
	}
	// nginx on 127.0.0.1:P, drover's config on every address: the reload
	// of the first rollout could not bind it (and the revision would be
	// halted for it).
	d = testDoctor(t, &spec.Node{Nginx: spec.NodeNginx{HTTPSPort: nginxPort, HealthPort: freePort}})
	if r := d.checkPorts(d.ports(nil)); r.Status != Fail || !strings.Contains(r.Detail, fmt.Sprintf(":%d (nginx's HTTPS port) is held by nginx on 127.0.0.1, which a reload cannot trade", nginxPort)) {
		t.Errorf("nginx on 127.0.0.1, drover on every address: %+v, want a failure", r)
	}
	d = testDoctor(t, &spec.Node{Nginx: spec.NodeNginx{Listen: "127.0.0.1", HTTPSPort: nginxPort, HealthPort: otherPort}})
	r := d.checkPorts(d.ports(nil))
	want := fmt.Sprintf("127.0.0.1:%d (nginx's health port) is held by %s (pid %d)", otherPort, procComm(t), os.Getpid())
	if r.Status != Fail || !strings.Contains(r.Detail, want) || strings.Contains(r.Detail, strconv.Itoa(nginxPort)) {
		t.Errorf("a foreign listener on the health port: %+v, want a failure saying %q", r, want)
	}
}

func procComm(t *testing.T) string {
	b, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestDiskCheck: keepReleases releases that do not fit in the state dir's
// free space fail; the live release's size is what is counted once there is
// one, each hardlinked file once.
func TestDiskCheck(t *testing.T) {
	d := testDoctor(t, &spec.Node{KeepReleases: 2})
	var st syscall.Statfs_t
	if err := syscall.Statfs(d.n.StateDir, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if r := d.disk(free/2+(1<<30), "test"); r.Status != Fail {
		t.Errorf("2 releases of more than half the free space: %+v, want a failure", r)
	}
	if r := d.disk(1<<20, "test"); r.Status != Pass {
		t.Errorf("2 releases of 1 MiB: %+v", r)
	}
	rel := filepath.Join(d.n.StateDir, "releases", "abc")
	if err := os.MkdirAll(rel, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rel, "a"), make([]byte, 3000), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(rel, "a"), filepath.Join(rel, "b")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("releases/abc", filepath.Join(d.n.StateDir, "current")); err != nil {
		t.Fatal(err)
	}
	if r := d.disk(1<<40, "test"); !strings.Contains(r.Detail, "2 releases of 2.9 KiB (the live release)") {
		t.Errorf("with a live release of one 3000-byte file linked twice: %+v", r)
	}
}

// TestHealthTargetCheck: the LB's health check must ask nginx's health
// port and path over HTTP; anything else is named with its fix.
func TestHealthTargetCheck(t *testing.T) {
	sp := &spec.Spec{Nginx: spec.Nginx{HealthPort: 80, HealthPath: "/healthz"}}
	for _, tc := range []struct {
		target lbdrain.HealthTarget
		sp     *spec.Spec
		node   int
		status Status
		want   string
	}{
		{lbdrain.HealthTarget{Protocol: "http", Port: 80, Path: "/healthz"}, sp, 0, Pass, "HTTP, port 80, path /healthz"},
		{lbdrain.HealthTarget{Protocol: "http", Port: 8080, Path: "/healthz"}, sp, 8080, Pass, "port 8080"},
		{lbdrain.HealthTarget{Protocol: "http", Port: 80, Path: "/healthz"}, sp, 8080, Fail, "nginx serves the health endpoint on port 8080"},
		{lbdrain.HealthTarget{Protocol: "http", Port: 80, Path: "/"}, sp, 0, Fail, "at /healthz"},
		{lbdrain.HealthTarget{Protocol: "https", Port: 80, Path: "/healthz"}, sp, 0, Fail, "plain HTTP"},
		{lbdrain.HealthTarget{Protocol: "tcp", Port: 80}, sp, 0, Warn, "cannot see a node answer 503"},
		{lbdrain.HealthTarget{Protocol: "http", Port: 80, Path: "/healthz"}, nil, 0, Warn, "not compared"},
	} {
		d := testDoctor(t, &spec.Node{Nginx: spec.NodeNginx{HealthPort: tc.node}})
		r := d.healthTarget(&tc.target, tc.sp)
		if r.Status != tc.status || !strings.Contains(r.Detail, tc.want) {
			t.Errorf("%+v (node health port %d): %s %q, want %s saying %q", tc.target, tc.node, r.Status, r.Detail, tc.status, tc.want)
		}
	}
}
