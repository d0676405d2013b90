package units

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/systemdtest"
	"github.com/drover-dev/drover/spec"
)

// sandboxNode boots a node with its own network (so that it can own the
// metadata address) and lays out what a real node has: /etc/drover with
// node.yaml, a secret and the worker's environment file, a state dir with
// release r1 holding the hostile worker's bundle and another worker's, a
// listener on port 80 of every address (the metadata service's stand-in,
// and a target for outbound TCP).
func sandboxNode(t *testing.T) *systemdtest.Node {
	t.Helper()
	n := systemdtest.Boot(t, systemdtest.Options{Name: "sandbox", PrivateNetwork: true})
	probe, err := os.ReadFile("testdata/hostile/probe.js")
	if err != nil {
		t.Fatal(err)
	}
	for p, f := range map[string]struct {
		data string
		mode os.FileMode
	}{
		"/etc/drover/node.yaml":                            {"name: n1\n", 0o644}, // as the lab has it: the sandbox, not the mode, must stop it
		"/etc/drover/webhook.secret":                       {"s3cret\n", 0o600},
		"/etc/drover/env/evil/evil.env":                    {"GREETING=hi\n", 0o600},
		"/srv/drover/releases/r1/workers/evil/probe.js":    {string(probe), 0o644},
		"/srv/drover/releases/r1/workers/other/SECRET.txt": {"other's code\n", 0o644},
		"/srv/drover/units.json":                           {"{}\n", 0o644},
	} {
		n.WriteFile(t, p, []byte(f.data), f.mode)
	}
	if err := os.Symlink("releases/r1", n.Path("/srv/drover/current")); err != nil {
		t.Fatal(err)
	}
	n.ServeMetadata(t, MetadataAddr)
	return n
}

// hostileEnv is what probe.js needs to know where to aim.
func hostileEnv() map[string]string {
	return map[string]string{
		"STATE_DIR":    "/srv/drover",
		"REV":          "r1",
		"OWN_BUNDLE":   "/srv/drover/current/workers/evil",
		"OTHER_BUNDLE": "/srv/drover/current/workers/other",
	}
}

// wantContained checks probe.js's report: every attack refused, and what a
// worker needs (its bundle, /tmp, outbound TCP, its environment file)
// still there.
func wantContained(t *testing.T, raw string, ownBundleWritable bool) {
	t.Helper()
	var got map[string]string
	if err := json.Unmarshal([]byte(strings.TrimSpace(raw)), &got); err != nil {
		t.Fatalf("probe report %q: %v", raw, err)
	}
	t.Logf("probe: %v", got)
	for _, attack := range []string{"readNodeYAML", "readSecret", "listEtcDrover", "readOtherBundle", "readOtherRelease",
		"writeOtherBundle", "listReleases", "readUnitsState", "writeSystemd", "metadata"} {
		if got[attack] == "ok" || got[attack] == "" {
			t.Errorf("%s: %q, want it refused", attack, got[attack])
		}
	}
	// IPAddressDeny drops the packets: the connect times out (the node
	// itself reaches the address, see sandboxNode).
	if ownBundleWritable != (got["writeOwnBundle"] == "ok") {
		t.Errorf("writeOwnBundle: %q, want writable=%v", got["writeOwnBundle"], ownBundleWritable)
	}
	for _, need := range []string{"readOwnBundle", "writeTmp", "outboundTCP"} {
		if got[need] != "ok" {
			t.Errorf("%s: %q, want ok (a worker needs it)", need, got[need])
		}
	}
	if got["agentSecretsInEnv"] != "" {
		t.Errorf("secrets-like variables in the environment: %s", got["agentSecretsInEnv"])
	}
}

// TestSystemdSandboxHoldsAHostileWorker starts the rendered unit of a
// hostile Node.js worker under a real systemd and has it try what a
// compromised dependency would: read node.yaml and the secrets, read and
// write another worker's bundle (live and in the release dir), list the
// releases, write a systemd unit, reach the cloud metadata service. Each
// attempt fails, while the worker still runs Node.js (JIT and all),
// answers on its port, reads its bundle and its environment file, writes
// /tmp and connects out over TCP.
func TestSystemdSandboxHoldsAHostileWorker(t *testing.T) {
	n := sandboxNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	port := freePorts(t, 1)
	w := spec.Worker{
		Name: "evil", Exec: []string{"node", "probe.js"}, Instances: 1, Port: port,
		Env:             hostileEnv(),
		EnvironmentFile: "/etc/drover/env/evil/evil.env",
		Health:          spec.Health{Path: "/healthz"},
	}
	files, err := Render(w, "/srv/drover/current")
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		n.WriteFile(t, "/etc/systemd/system/"+name, data, 0o644)
	}
	if _, err := n.Systemctl(ctx, "daemon-reload"); err != nil {
		t.Fatal(err)
	}
	unit := InstanceName("evil", port)
	if _, err := n.Systemctl(ctx, "start", unit); err != nil {
		t.Fatalf("%v\n%s", err, n.Journal(unit, 30))
	}
	url := "http://127.0.0.1:" + strconv.Itoa(port) + "/probe"
	var out string
	for i := 0; ; i++ {
		if out, err = n.Run(ctx, "curl", "-sf", "--max-time", "10", url); err == nil {
			break
		} else if i == 100 {
			t.Fatalf("the Node.js worker does not answer under the sandbox: %v\n%s", err, n.Journal(unit, 30))
		}
		time.Sleep(100 * time.Millisecond)
	}
	wantContained(t, out, false)
	if _, err := os.Stat(n.Path("/etc/systemd/system/pwned.service")); err == nil {
		t.Error("the worker wrote a systemd unit")
	}
	if _, err := os.Stat(filepath.Join(n.Path("/srv/drover/releases/r1/workers/other"), "pwned")); err == nil {
		t.Error("the worker wrote into another worker's bundle")
	}
}
