package units

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/systemdtest"
	"github.com/drover-dev/drover/spec"
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
		Proc:    "/proc/" + strconv.Itoa(n.PID()) + "/root/proc",
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

func TestSystemdOverlap(t *testing.T) {
	overlapContract(t, func(t *testing.T) *world {
		w, _, _ := systemdWorld(t)
		return w
	})
}

// TestSystemdOverlapRollbackAfterACrash: an old instance that crashes
// during an overlap is restarted by systemd from its own release, on its
// own port, since Start gave the new instances their own unit files and
// left the template to the live ones; the rollback's Apply then leaves both
// old instances alone, stops the new range and removes its unit files.
func TestSystemdOverlapRollbackAfterACrash(t *testing.T) {
	w, n, sup := systemdWorld(t)
	port := freePorts(t, 4)
	api := testWorker("api", port, 2)
	api.AltPort = port + 2
	w.bundle(t, "r1", "api", "v1")
	w.bundle(t, "r2", "api", "v2")
	w.switchTo(t, "r1")
	w.mustApply(t, api)
	kept := mustInfo(t, port+1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := sup.Start(ctx, []spec.Worker{api.OnAlt()}, w.releaseDir("r2")); err != nil {
		t.Fatal(err)
	}
	for _, p := range api.AltPorts() {
		if in := mustInfo(t, p); in.Version != "v2" {
			t.Fatalf("the new range's instance on %d runs %q, want v2", p, in.Version)
		}
	}
	// What the guard asks once the new range is live, until the settle.
	if d, err := sup.Drift(ctx, []spec.Worker{api.OnAlt()}, w.releaseDir("r2")); err != nil || len(d) > 0 {
		t.Fatalf("drift of the new range after Start = %q, %v; want none: its instances run from their own unit files", d, err)
	}
	crashed := mustInfo(t, port)
	if _, err := n.Systemctl(ctx, "kill", "--signal=SIGKILL", InstanceName("api", port)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		in, err := getInfo(port)
		if err == nil && in.PID != crashed.PID {
			if in.Version != "v1" || !w.runsIn(t, in, "r1", "api") {
				t.Fatalf("systemd restarted the crashed live instance as %q in %s, want v1 in r1", in.Version, in.Cwd)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("systemd did not restart the killed instance")
		}
		time.Sleep(100 * time.Millisecond)
	}
	restarted := mustInfo(t, port)
	w.mustApply(t, api) // the rollback: current still names r1
	if in := mustInfo(t, port); in.PID != restarted.PID || in.Version != "v1" {
		t.Fatalf("the rollback restarted the instance systemd had brought back on v1 (pid %d -> %d, %s)", restarted.PID, in.PID, in.Version)
	}
	if in := mustInfo(t, port+1); in.PID != kept.PID {
		t.Fatalf("the instance that did not crash was restarted (pid %d -> %d)", kept.PID, in.PID)
	}
	for _, p := range api.AltPorts() {
		if _, err := getInfo(p); err == nil {
			t.Fatalf("port %d of the new range still answers after the rollback", p)
		}
		if _, err := os.Stat(filepath.Join(w.root, DefaultUnitsDir, InstanceName("api", p))); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("the new range's unit file %s is left after the rollback: %v", InstanceName("api", p), err)
		}
	}
}

// TestSystemdGoneIsANodeFault: when systemd stops answering (the host shuts
// down: systemd stops before the agent), the supervisor's errors say so,
// so the agent does not blame the release for it.
func TestSystemdGoneIsANodeFault(t *testing.T) {
	w, n, sup := systemdWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sup.Ping(ctx); err != nil {
		t.Fatalf("ping a running systemd: %v", err)
	}
	n.Kill()
	var nf interface{ NodeFault() bool }
	err := sup.Ping(ctx)
	if !errors.As(err, &nf) || !nf.NodeFault() {
		t.Fatalf("ping after systemd died: %v, want a node fault", err)
	}
	err = sup.Apply(ctx, []spec.Worker{testWorker("api", 39871, 1)}, w.live())
	if !errors.As(err, &nf) || !strings.Contains(err.Error(), "connect to systemd") {
		t.Fatalf("apply after systemd died: %v, want a node fault naming systemd", err)
	}
}
