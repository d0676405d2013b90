//go:build e2e

package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/systemdtest"
	"github.com/drover-dev/drover/units"
)

// agentNode makes a config repo of files with one commit, serves it to
// node from /srv/config.git, and installs there what a server has: the
// drover binary, a node.yaml with drover's defaults (state in
// /var/lib/drover, nginx's config in /etc/nginx run by nginx.service,
// workers by systemd) on the node's loopback, and the shipped
// drover.service. It returns the commit.
func agentNode(t *testing.T, node *systemdtest.Node, name string, files map[string]string) string {
	t.Helper()
	work := t.TempDir()
	gitCmd := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=test", "-c", "user.email=test@example.com"}, args...)...)
		cmd.Dir = work
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	gitCmd("init", "-q", "-b", "main", ".")
	for f, content := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(work, f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(work, f), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	gitCmd("add", "-A")
	gitCmd("commit", "-q", "-m", "a revision")
	rev := gitCmd("rev-parse", "HEAD")
	gitCmd("clone", "-q", "--bare", work, node.Path("/srv/config.git"))

	node.CopyFile(t, droverBin, "/usr/local/bin/drover", 0o755)
	node.WriteFile(t, "/etc/drover/node.yaml", []byte(`name: `+name+`
repo: {url: "file:///srv/config.git", pollInterval: 1s}
nginx: {listen: 127.0.0.1, httpsPort: 8443, healthPort: 8080}
`), 0o644)
	unit, err := os.ReadFile("../../examples/systemd/drover.service")
	if err != nil {
		t.Fatal(err)
	}
	node.WriteFile(t, "/etc/systemd/system/drover.service", unit, 0o644)
	return rev
}

// hostileRevision is a config repo whose worker "evil" runs probe.js
// (units/testdata/hostile) both as its install step and as its exec: it
// tries to read /etc/drover, read and write the other worker's bundle,
// write a systemd unit and reach the metadata service.
const hostileRevision = `version: 1
rollout: {soak: 0s, healthTimeout: 30s}
workers:
  - name: other
    source: workers/other
    exec: [node, server.js]
    port: 3100
    health: {path: /healthz, interval: 100ms, successes: 1}
  - name: evil
    source: workers/evil
    install: [node, probe.js, --once]
    exec: [node, probe.js]
    port: 3000
    health: {path: /healthz, interval: 100ms, successes: 1}
    env:
      STATE_DIR: /var/lib/drover
      REV: any
      OWN_BUNDLE: .
      OTHER_BUNDLE: ../other  # the install: the new release's; the worker: the live one
`

const otherWorker = `require("node:http").createServer((q, s) => s.end("other\n")).listen(Number(process.env.PORT), "127.0.0.1");
`

// TestAgentUnderSystemdContainsAHostileRevision: the shipped drover.service
// on a real systemd node rolls out a revision whose install step and worker
// are hostile. The install runs as nobody, with a clean environment, and
// gets nowhere but its own bundle; the worker, in its sandbox, gets
// nowhere at all (not /etc/drover, not the other bundle, not a unit file,
// not the metadata address); the revision goes live with both workers
// serving.
func TestAgentUnderSystemdContainsAHostileRevision(t *testing.T) {
	node := systemdtest.Boot(t, systemdtest.Options{Name: "hostile", PrivateNetwork: true})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	probe, err := os.ReadFile("../../units/testdata/hostile/probe.js")
	if err != nil {
		t.Fatal(err)
	}
	rev := agentNode(t, node, "hostile", map[string]string{"drover.yaml": hostileRevision, "workers/evil/probe.js": string(probe),
		"workers/other/server.js": otherWorker, "workers/other/SECRET.txt": "other's code\n"})
	node.WriteFile(t, "/etc/drover/webhook.secret", []byte("s3cret\n"), 0o600)
	node.WriteFile(t, "/etc/nginx/nginx.conf", []byte("pid /run/nginx.pid;\nevents {}\nhttp {}\n"), 0o644)
	node.WriteFile(t, "/etc/systemd/system/drover.service.d/test.conf", []byte("[Service]\nTimeoutStartSec=60s\nEnvironment=DROVER_TEST_TOKEN=agent-secret\n"), 0o644)
	// The metadata service's stand-in, and something to connect out to.
	node.ServeMetadata(t, units.MetadataAddr)
	if err := node.DaemonReload(ctx); err != nil {
		t.Fatal(err)
	}
	if err := node.StartUnit(ctx, "nginx.service"); err != nil {
		t.Fatalf("%v\n%s", err, node.Journal("nginx.service", 20))
	}
	defer func() {
		if t.Failed() {
			t.Logf("journal of drover.service:\n%s", node.Journal("drover.service", 80))
		}
	}()
	if err := node.StartUnit(ctx, "drover.service"); err != nil {
		t.Fatal(err)
	}
	want := "idle on " + rev[:12]
	for began := time.Now(); ; {
		out, _ := node.Systemctl(ctx, "show", "-p", "StatusText", "--value", "drover.service")
		if strings.HasPrefix(out, want) { // "; healthy" may follow
			break
		}
		if time.Since(began) > 2*time.Minute {
			t.Fatalf("StatusText %q, want %q", out, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if out, err := node.Run(ctx, "curl", "-sf", "http://127.0.0.1:3100/"); err != nil || out != "other\n" {
		t.Errorf("the other worker: %q %v", out, err)
	}

	report := func(raw, where string) map[string]string {
		t.Helper()
		_, js, ok := strings.Cut(raw, "PROBE ")
		if !ok {
			js = raw
		}
		var got map[string]string
		if err := json.Unmarshal([]byte(strings.TrimSpace(js)), &got); err != nil {
			t.Fatalf("%s: probe report %q: %v", where, raw, err)
		}
		t.Logf("%s: %v", where, got)
		return got
	}
	refused := func(where string, got map[string]string, attacks ...string) {
		t.Helper()
		for _, a := range attacks {
			if got[a] == "ok" || got[a] == "" {
				t.Errorf("%s: %s: %q, want it refused", where, a, got[a])
			}
		}
	}
	log, err := os.ReadFile(node.Path("/var/lib/drover/releases/" + rev + "/install-evil.log"))
	if err != nil {
		t.Fatal(err)
	}
	install := report(string(log), "install step")
	// The step ran in a transient unit with the workers' sandbox: it sees
	// nothing of /etc/drover or the other bundles, cannot write a unit and
	// cannot reach the metadata address.
	refused("install step", install, "readNodeYAML", "readSecret", "listEtcDrover", "readOtherBundle", "writeOtherBundle",
		"writeSystemd", "readUnitsState", "metadata")
	// Of the state dir it sees only the way to its bundle.
	if install["releasesSeen"] != rev {
		t.Errorf("install step: sees releases %q, want only its own %s", install["releasesSeen"], rev)
	}
	if install["writeOwnBundle"] != "ok" || install["agentSecretsInEnv"] != "" {
		t.Errorf("install step: own bundle %q, agent's secrets in env %q", install["writeOwnBundle"], install["agentSecretsInEnv"])
	}

	out, err := node.Run(ctx, "curl", "-sf", "--max-time", "10", "http://127.0.0.1:3000/probe")
	if err != nil {
		t.Fatal(err)
	}
	worker := report(out, "worker")
	refused("worker", worker, "readNodeYAML", "readSecret", "listEtcDrover", "readOtherBundle", "writeOtherBundle",
		"listReleases", "readUnitsState", "writeSystemd", "writeOwnBundle", "metadata")
	for _, need := range []string{"readOwnBundle", "writeTmp", "outboundTCP"} {
		if worker[need] != "ok" {
			t.Errorf("worker: %s: %q, want ok", need, worker[need])
		}
	}
	if worker["agentSecretsInEnv"] != "" {
		t.Errorf("worker: the agent's secrets in its environment: %s", worker["agentSecretsInEnv"])
	}
	for _, p := range []string{"/etc/systemd/system/pwned.service", "/var/lib/drover/releases/" + rev + "/workers/other/pwned"} {
		if _, err := os.Lstat(node.Path(p)); err == nil {
			t.Errorf("%s was written", p)
		}
	}
}
