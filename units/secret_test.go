package units

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/secrets"
)

// The values are chosen to break a careless env file: quotes of both
// kinds, $ (which must not expand), backslashes, a #, an = and spaces.
var secretVars = secrets.Vars{
	{Key: "API_TOKEN", Value: `s3cr3t 'single' "double" $HOME ${PATH} ` + "`tick`" + ` back\slash #hash`},
	{Key: "DB_PASSWORD", Value: `p=a=s s $NOPE \n \\ "dq" #x`},
}

// secretEnvReachesTheWorker writes the decrypted secret file into a
// release as prepare does and checks that the worker's environment holds
// each value byte for byte, and that the file is 0600.
func secretEnvReachesTheWorker(t *testing.T, w *world) (port int) {
	port = freePorts(t, 1)
	w.bundle(t, "r1", "api", "v1")
	file := w.host(layout.SecretsEnvFile(w.releaseDir("r1"), "api"))
	if err := secrets.WriteEnvFile(file, secretVars, -1, -1); err != nil {
		t.Fatal(err)
	}
	w.switchTo(t, "r1")
	api := testWorker("api", port, 1)
	api.SecretEnv = "secrets/api.env.age"
	w.mustApply(t, api)
	in := mustInfo(t, port)
	for _, v := range secretVars {
		if got := in.Env[v.Key]; got != v.Value {
			t.Errorf("worker's %s = %q, want %q", v.Key, got, v.Value)
		}
	}
	if in.Env["APP_MODE"] != "test" {
		t.Errorf("the clear env was lost beside the secret one: APP_MODE=%q", in.Env["APP_MODE"])
	}
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("secret env file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	return port
}

func TestExecSecretEnvReachesTheWorkerExactly(t *testing.T) {
	w, _ := execWorld(t, ExecConfig{})
	secretEnvReachesTheWorker(t, w)
}

func TestSystemdSecretEnvReachesTheWorkerExactly(t *testing.T) {
	w, n, _ := systemdWorld(t)
	port := secretEnvReachesTheWorker(t, w)
	// The unit names the file; neither it nor systemd's view of the unit
	// nor the journal holds a value.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	unit, err := os.ReadFile(n.Path("/etc/systemd/system/" + TemplateName("api")))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "EnvironmentFile="+filepath.Join(w.live(), "secrets", "api.env")+"\n") {
		t.Errorf("the unit does not read the release's secret file:\n%s", unit)
	}
	props, err := n.Systemctl(ctx, "show", "-p", "Environment,EnvironmentFiles", InstanceName("api", port))
	if err != nil {
		t.Fatal(err)
	}
	journal := n.Journal(InstanceName("api", port), 200)
	for _, v := range secretVars {
		for where, text := range map[string]string{"unit file": string(unit), "systemctl show": props, "journal": journal} {
			if strings.Contains(text, v.Value) {
				t.Errorf("the %s holds the clear value of %s", where, v.Key)
			}
		}
	}
}

// secretChangeRestarts: a new release whose secret is unchanged (its file
// linked from the previous release, as prepare does) leaves the instance
// running; a changed secret restarts it with the new value.
func secretChangeRestarts(t *testing.T, w *world) {
	port := freePorts(t, 1)
	api := testWorker("api", port, 1)
	api.SecretEnv = "secrets/api.env.age"
	place := func(r, prev string, vs secrets.Vars) {
		t.Helper()
		p := ""
		if prev != "" {
			p = w.host(layout.SecretsEnvFile(w.releaseDir(prev), "api"))
		}
		if err := secrets.PlaceEnvFile(w.host(layout.SecretsEnvFile(w.releaseDir(r), "api")), p, vs, -1, -1); err != nil {
			t.Fatal(err)
		}
	}
	w.bundle(t, "r1", "api", "v1")
	place("r1", "", secrets.Vars{{Key: "API_TOKEN", Value: "one"}})
	w.switchTo(t, "r1")
	w.mustApply(t, api)
	first := mustInfo(t, port)

	w.linkBundle(t, "r1", "r2", "api")
	place("r2", "r1", secrets.Vars{{Key: "API_TOKEN", Value: "one"}})
	w.switchTo(t, "r2")
	w.mustApply(t, api)
	if in := mustInfo(t, port); in.PID != first.PID {
		t.Errorf("an unchanged secret restarted the instance (pid %d -> %d)", first.PID, in.PID)
	}

	w.linkBundle(t, "r1", "r3", "api")
	place("r3", "r2", secrets.Vars{{Key: "API_TOKEN", Value: "two"}})
	w.switchTo(t, "r3")
	w.mustApply(t, api)
	if in := mustInfo(t, port); in.PID == first.PID || in.Env["API_TOKEN"] != "two" {
		t.Errorf("after the secret changed: pid %d (was %d), API_TOKEN=%q; want a restart with two", in.PID, first.PID, in.Env["API_TOKEN"])
	}
}

func TestExecRestartsOnlyForAChangedSecret(t *testing.T) {
	w, _ := execWorld(t, ExecConfig{})
	secretChangeRestarts(t, w)
}

func TestSystemdRestartsOnlyForAChangedSecret(t *testing.T) {
	w, _, _ := systemdWorld(t)
	secretChangeRestarts(t, w)
}
