package units

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/testsvc"
	"github.com/drover-dev/drover/spec"
)

// TestExecHonoursUserOrRefuses: the exec supervisor runs a worker that
// names a user as that user, and refuses, before changing anything, a user
// it cannot honour, instead of running it as the agent (root here).
func TestExecHonoursUserOrRefuses(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("run as root (as the suite does): the supervisor must be shown to switch users")
	}
	w, _ := execWorld(t, ExecConfig{})
	w.base = testsvc.WorldDir(t, "execuser") // nobody must traverse to its bundle
	port := freePorts(t, 2)
	w.bundle(t, "r1", "api", "v1")
	w.switchTo(t, "r1")
	api := testWorker("api", port, 1)
	api.User = "nobody"
	w.mustApply(t, api)
	in := mustInfo(t, port)
	status, err := os.ReadFile("/proc/" + strconv.Itoa(in.PID) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(status), "\nUid:\t65534\t65534\t65534\t65534\n") {
		t.Errorf("the worker does not run as nobody:\n%s", status)
	}

	for user, want := range map[string]string{
		"no-such-user-19": `user "no-such-user-19"`,
		"root":            "workers never run as root",
	} {
		bad := testWorker("bad", port+1, 1)
		bad.User = user
		err := w.apply(t, api, bad)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("user %q: Apply: %v, want an error with %q", user, err, want)
		}
		if _, err := getInfo(port + 1); err == nil {
			t.Errorf("user %q: the refused worker runs", user)
		}
		if again := mustInfo(t, port); again.PID != in.PID {
			t.Errorf("user %q: the refused Apply restarted the other worker", user)
		}
	}
}

// TestExecAllowRoot: on a node whose policy allows root (Config.AllowRoot),
// a worker naming root runs as uid 0; the refusal above is the default.
func TestExecAllowRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("run as root (as the suite does)")
	}
	cfg := testConfig(t)
	cfg.AllowRoot = true
	w, _ := execWorld(t, ExecConfig{Config: cfg})
	port := freePorts(t, 1)
	w.bundle(t, "r1", "api", "v1")
	w.switchTo(t, "r1")
	api := testWorker("api", port, 1)
	api.User = "root"
	w.mustApply(t, api)
	status, err := os.ReadFile("/proc/" + strconv.Itoa(mustInfo(t, port).PID) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(status), "\nUid:\t0\t0\t0\t0\n") {
		t.Errorf("the worker does not run as root:\n%s", status)
	}
}

// TestRootUserByAnotherName: a user that is uid 0 under another name (the
// spec refuses "root" by name only) is refused by the systemd supervisor
// before it writes anything; the exec supervisor checks the uid itself
// (TestExecHonoursUserOrRefuses).
func TestRootUserByAnotherName(t *testing.T) {
	w, n, sup := systemdWorld(t)
	passwd := n.Path("/etc/passwd")
	data, err := os.ReadFile(passwd)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(passwd, append(data, "toor:x:0:0::/root:/bin/sh\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	w.bundle(t, "r1", "api", "v1")
	w.switchTo(t, "r1")
	api := testWorker("api", freePorts(t, 1), 1)
	api.User = "toor"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sup.Apply(ctx, []spec.Worker{api}, w.live()); err == nil || !strings.Contains(err.Error(), `user "toor" is uid 0`) {
		t.Fatalf("Apply: %v, want the uid-0 user refused", err)
	}
	if _, err := os.Stat(n.Path("/etc/systemd/system/" + TemplateName("api"))); err == nil {
		t.Error("a unit was written for the refused worker")
	}
	// On a node whose policy allows root (Config.AllowRoot), it runs.
	sup.cfg.AllowRoot = true
	if err := sup.Apply(ctx, []spec.Worker{api}, w.live()); err != nil {
		t.Fatalf("Apply with root allowed: %v", err)
	}
	api.User = "nobody"
	if err := refuseRootUser(n.Root(), &api); err != nil {
		t.Errorf("nobody: %v", err)
	}
}
