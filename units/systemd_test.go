package units

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/systemdtest"
)

var _ Supervisor = (*Systemd)(nil)

// systemdWorld boots a node and points a Systemd supervisor at it.
func systemdWorld(t *testing.T) (*world, *systemdtest.Node, *Systemd) {
	n := systemdtest.Boot(t, systemdtest.Options{Name: "units"})
	sup := NewSystemd(SystemdConfig{
		Config:  testConfig(t),
		Socket:  n.Socket(),
		Root:    n.Root(),
		Journal: n.JournalCommand(),
	})
	t.Cleanup(func() { _ = sup.Close(context.Background()) })
	w := &world{sup: sup, root: n.Root(), base: "/srv/drover"}
	w.gone = func(t *testing.T, worker string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, f := range []string{TemplateName(worker), TargetName(worker), "multi-user.target.wants/" + TargetName(worker)} {
			if _, err := os.Lstat(n.Path("/etc/systemd/system/" + f)); err == nil {
				t.Errorf("%s is still in the units dir", f)
			}
		}
		out, err := n.Systemctl(ctx, "list-units", "--all", "--plain", "--no-legend", "drover-"+worker+"*")
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(out) != "" {
			t.Errorf("systemd still has units of %s:\n%s", worker, out)
		}
	}
	return w, n, sup
}

func TestSystemdContract(t *testing.T) {
	contract(t, func(t *testing.T) *world {
		w, _, _ := systemdWorld(t)
		return w
	})
}

// TestSystemdUnitsOnNode checks what a node's systemd makes of the files:
// the instances are enabled for boot through the target, run as a dynamic
// user with the hardening in effect, and come back after a reboot.
func TestSystemdUnitsOnNode(t *testing.T) {
	w, n, _ := systemdWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	port := freePorts(t, 2)
	w.bundle(t, "r1", "api", "v1")
	w.switchTo(t, "r1")
	api := testWorker("api", port, 2)
	api.DataDirs = []string{"/var/lib/api-data"}
	w.mustApply(t, api)

	if out, _ := n.Systemctl(ctx, "is-enabled", TargetName("api")); out != "enabled" {
		t.Errorf("systemctl is-enabled %s = %q, want enabled", TargetName("api"), out)
	}
	wants, err := n.Systemctl(ctx, "show", "-p", "Wants", "--value", TargetName("api"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []int{port, port + 1} {
		if !strings.Contains(wants, InstanceName("api", p)) {
			t.Errorf("%s does not want %s: %q", TargetName("api"), InstanceName("api", p), wants)
		}
	}
	unit := InstanceName("api", port)
	props, err := n.Systemctl(ctx, "show", "-p", "User,DynamicUser,ProtectSystem,NoNewPrivileges,WorkingDirectory,SyslogIdentifier,Restart", unit)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"User=drover-api", "DynamicUser=yes", "ProtectSystem=strict", "NoNewPrivileges=yes",
		"WorkingDirectory=/srv/drover/current/workers/api", "SyslogIdentifier=drover-api", "Restart=on-failure"} {
		if !strings.Contains(props, want+"\n") && !strings.HasSuffix(props, want) {
			t.Errorf("%s lacks %s:\n%s", unit, want, props)
		}
	}
	in := mustInfo(t, port)
	uid, err := n.Run(ctx, "stat", "-c", "%u", "/proc/"+strconv.Itoa(in.PID))
	if err != nil || strings.TrimSpace(uid) == "0" || in.Env["USER"] != "drover-api" {
		t.Errorf("the worker runs as uid %q (err %v), USER=%q; want the dynamic user drover-api", strings.TrimSpace(uid), err, in.Env["USER"])
	}
	// Its data dir under /var/lib is a StateDirectory: made by systemd and
	// owned by the dynamic user.
	owner, err := n.Run(ctx, "stat", "-L", "-c", "%u", "/var/lib/api-data")
	if err != nil || strings.TrimSpace(owner) != strings.TrimSpace(uid) {
		t.Errorf("/var/lib/api-data is owned by %q (err %v), want the worker's uid %q", strings.TrimSpace(owner), err, strings.TrimSpace(uid))
	}
	if j := n.Journal(unit, 20); !strings.Contains(j, "serving version v1") {
		t.Errorf("the worker's output is not in the journal as %s:\n%s", unit, j)
	}

	// Reboot: the enabled target brings both instances back on their own.
	if err := n.Poweroff(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, p := range []int{port, port + 1} {
		for {
			if _, err := getInfo(p); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("instance on port %d did not come back after a reboot", p)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// TestSystemdReconnects drops the D-Bus connection (the proxy in the node is
// stopped, closing it) between two Applies: the second must reconnect.
func TestSystemdReconnects(t *testing.T) {
	w, n, sup := systemdWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	port := freePorts(t, 1)
	w.bundle(t, "r1", "api", "v1")
	w.bundle(t, "r2", "api", "v2")
	w.switchTo(t, "r1")
	api := testWorker("api", port, 1)
	w.mustApply(t, api)
	if _, err := n.Systemctl(ctx, "stop", "drover-test-sdproxy.service"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for sup.conn.Connected() {
		if time.Now().After(deadline) {
			t.Fatal("the connection survived the proxy's stop")
		}
		time.Sleep(20 * time.Millisecond)
	}
	w.switchTo(t, "r2")
	w.mustApply(t, api)
	in := mustInfo(t, port)
	if in.Version != "v2" {
		t.Fatalf("version %q after reconnecting", in.Version)
	}

	// A restarted agent (a new supervisor, same state file) knows, before
	// any Apply, which release the instance runs from, and leaves the
	// up-to-date instance alone.
	w.sup = NewSystemd(sup.cfg)
	t.Cleanup(func() { _ = w.sup.Close(context.Background()) })
	w.inUse(t, "r2")
	w.mustApply(t, api)
	if again := mustInfo(t, port); again.PID != in.PID {
		t.Fatalf("a new supervisor restarted an up-to-date instance (pid %d -> %d)", in.PID, again.PID)
	}
}

// TestSystemdErrorExplains checks that the error of a crashing instance
// carries systemd's view and the worker's own last words.
func TestSystemdErrorExplains(t *testing.T) {
	w, _, _ := systemdWorld(t)
	port := freePorts(t, 1)
	w.bundle(t, "r1", "api", "v1", "CRASH")
	w.switchTo(t, "r1")
	err := w.apply(t, testWorker("api", port, 1))
	if err == nil {
		t.Fatal("Apply succeeded")
	}
	for _, want := range []string{InstanceName("api", port), "NRestarts=", "exited with status 3", "crashing on purpose"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}
