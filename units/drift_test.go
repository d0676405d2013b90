package units

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/spec"
)

// Drift sees a unit file edited or removed by hand and an instance stopped
// by hand, changes nothing itself, and Apply puts each back.
func TestSystemdDrift(t *testing.T) {
	w, n, sup := systemdWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	port := freePorts(t, 2)
	w.bundle(t, "r1", "api", "v1")
	w.switchTo(t, "r1")
	api := testWorker("api", port, 2)
	w.mustApply(t, api)
	drift := func() string {
		t.Helper()
		d, err := sup.Drift(ctx, []spec.Worker{api}, w.live())
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(d, "; ")
	}
	if d := drift(); d != "" {
		t.Fatalf("drift right after Apply: %s", d)
	}

	tmpl := n.Path("/etc/systemd/system/" + TemplateName("api"))
	if err := os.WriteFile(tmpl, []byte("[Service]\nExecStart=/bin/sh -c 'echo owned'\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Systemctl(ctx, "stop", InstanceName("api", port+1)); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(n.Path("/etc/systemd/system/" + TargetName("api"))); err != nil {
		t.Fatal(err)
	}
	d := drift()
	for _, want := range []string{"unit file " + TemplateName("api") + " was changed", "unit file " + TargetName("api") + " is missing",
		InstanceName("api", port+1) + " is inactive"} {
		if !strings.Contains(d, want) {
			t.Errorf("drift %q lacks %q", d, want)
		}
	}
	if strings.Contains(d, InstanceName("api", port)+" ") {
		t.Errorf("drift %q names the instance that still runs", d)
	}
	// Drift itself changed nothing.
	if b, _ := os.ReadFile(tmpl); !strings.Contains(string(b), "owned") {
		t.Fatal("Drift rewrote the unit file")
	}
	w.mustApply(t, api)
	if d := drift(); d != "" {
		t.Fatalf("drift after Apply put it back: %s", d)
	}
	mustBeHealthy(t, port+1)
}

// The exec supervisor's drift: a wanted instance it does not run.
func TestExecDrift(t *testing.T) {
	e := NewExec(ExecConfig{Config: testConfig(t)})
	t.Cleanup(func() { _ = e.Close(context.Background()) })
	d, err := e.Drift(t.Context(), []spec.Worker{testWorker("api", 4000, 2)}, "/nowhere")
	if err != nil || len(d) != 2 || !strings.Contains(d[1], InstanceName("api", 4001)+" is not running") {
		t.Fatalf("drift of an empty exec supervisor = %q, %v", d, err)
	}
}
