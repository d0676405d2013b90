//go:build e2e

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/reconcile"
)

// policyBreaches asks, in one revision, for everything the node policy
// refuses (spec/policy.go): root, a data dir outside the worker's own, an
// environment file outside its own, LD_PRELOAD, and a file:// artifact.
const policyBreaches = `    user: root
    dataDirs: [/var/lib/postgresql]
    environmentFile: /etc/drover/node.yaml
    env: {LD_PRELOAD: /tmp/evil.so}
  - name: leak
    artifact: {url: "file:///etc/drover/webhook.secret", sha256: "` + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" + `"}
    exec: [node, server.js]
    port: 4900
    health: {path: /healthz}
`

// policyWant is what both validate and the agent must say, with the line of
// each field in the drover.yaml that commit writes.
var policyWant = []string{
	`drover.yaml:16:11: workers[0].user: workers never run as root`,
	`drover.yaml:17:16: workers[0].dataDirs[0]: "/var/lib/postgresql" is outside /var/lib/drover-data/api`,
	`drover.yaml:18:22: workers[0].environmentFile: "/etc/drover/node.yaml" is outside /etc/drover/env/api`,
	`drover.yaml:19:23: workers[0].env["LD_PRELOAD"]: LD_PRELOAD is not allowed`,
	`drover.yaml:21:21: workers[1].artifact.url: "file:///etc/drover/webhook.secret" is not an https:// URL`,
}

// TestPolicyRefusedByValidateAndAgent: a push that asks for what the node
// policy refuses is refused by `drover validate` before the push and by the
// agent before prepare, each refusal with its field and line; the agent
// halts the revision, keeps serving the live one, and prepares nothing.
func TestPolicyRefusedByValidateAndAgent(t *testing.T) {
	t.Parallel() // the agent mostly waits on its LB's checks: tests share the CPUs
	n := newTestNode(t)
	a := n.commit("blog A", "api A")
	n.startAgent()
	n.waitLive(a)

	n.specExtra = policyBreaches
	b := n.commit("blog B", "api B")

	// Without --node the default policy; with it, the node's (here the
	// default too: its node.yaml has no policy section).
	for _, args := range [][]string{{n.repo}, {"--node", n.config, n.repo}} {
		outb, err := exec.Command(droverBin, append([]string{"validate"}, args...)...).CombinedOutput()
		out := string(outb)
		if err == nil {
			t.Fatalf("drover validate %v accepted the policy breaches:\n%s", args, out)
		}
		for _, w := range policyWant {
			if !strings.Contains(out, w) {
				t.Errorf("drover validate %v lacks %q:\n%s", args, w, out)
			}
		}
	}

	st := n.waitFor("B halted", func(st reconcile.Status) bool {
		return strings.Contains(st.Error, "revision "+b[:12]+" is halted") || st.Target == b && st.Step == reconcile.StepFailed
	})
	halted, _ := os.ReadFile(layout.New(n.state).Halted())
	for _, w := range policyWant {
		if !strings.Contains(string(halted), w) && !strings.Contains(st.Error, w) {
			t.Errorf("the agent's halt lacks %q:\nstatus: %s\nhalted.json: %s", w, st.Error, halted)
		}
	}
	if got := n.live(); got != a {
		t.Fatalf("current -> %s, want A %s", got, a)
	}
	n.serves("blog A", "api A")
	if _, err := os.Stat(filepath.Join(n.state, "releases", b)); err == nil {
		t.Errorf("a release of the refused revision was prepared")
	}
}

// TestNodePolicyAppliedByValidateAndAgent: node.yaml's policy section is
// the node's own. A node that allows root, a data dir and an environment
// file under its own prefixes takes a revision asking for them, which the
// default policy refuses (validate without --node says so, with each field
// and line); and the env prefix that node forbids is refused by
// `validate --node` and by its agent before prepare, which halts the
// revision and keeps serving the live one.
func TestNodePolicyAppliedByValidateAndAgent(t *testing.T) {
	t.Parallel() // the agent mostly waits on its LB's checks: tests share the CPUs
	n := newTestNode(t)
	n.configure("test", "./repo", fmt.Sprintf(`policy:
  allowRoot: true
  dataDirs: [/var/lib/drover-data, %[1]s/data]
  environmentFiles: [/etc/drover/env, %[1]s/env]
  forbiddenEnv: [AWS_*]
`, n.dir))
	n.write("env/api/api.env", "GREETING=hi\n")
	n.specExtra = fmt.Sprintf("    user: root\n    dataDirs: [%[1]s/data/api]\n    environmentFile: %[1]s/env/api/api.env\n", n.dir)
	a := n.commit("blog A", "api A")

	validate := func(args ...string) (string, error) {
		out, err := exec.Command(droverBin, append([]string{"validate"}, args...)...).CombinedOutput()
		return string(out), err
	}
	out, err := validate(n.repo)
	if err == nil {
		t.Fatalf("drover validate (the default policy) accepted root, the node's data dir and environment file:\n%s", out)
	}
	for _, w := range []string{
		`drover.yaml:16:11: workers[0].user: workers never run as root`,
		`drover.yaml:17:16: workers[0].dataDirs[0]: "` + n.dir + `/data/api" is outside /var/lib/drover-data/api`,
		`drover.yaml:18:22: workers[0].environmentFile: "` + n.dir + `/env/api/api.env" is outside /etc/drover/env/api/`,
	} {
		if !strings.Contains(out, w) {
			t.Errorf("drover validate lacks %q:\n%s", w, out)
		}
	}
	if out, err := validate("--node", n.config, n.repo); err != nil {
		t.Fatalf("drover validate --node refused what the node's policy allows: %v\n%s", err, out)
	}

	n.startAgent()
	n.waitLive(a)
	n.serves("blog A", "api A")
	// The instance runs as root, with the node-local environment file read.
	if uid, env := instanceOf(t, n.apiPort); uid != "0" || !strings.Contains(env, "\x00GREETING=hi\x00") {
		t.Errorf("the api instance on port %d runs as uid %q with env %q; want root, with GREETING from its environment file", n.apiPort, uid, env)
	}

	n.specExtra += "    env: {AWS_SECRET_ACCESS_KEY: x}\n"
	b := n.commit("blog B", "api B")
	want := `drover.yaml:19:34: workers[0].env["AWS_SECRET_ACCESS_KEY"]: AWS_SECRET_ACCESS_KEY is not allowed on this node (node.yaml policy.forbiddenEnv: AWS_*)`
	if out, err := validate("--node", n.config, n.repo); err == nil || !strings.Contains(out, want) {
		t.Errorf("drover validate --node: %v, want %q:\n%s", err, want, out)
	}
	st := n.waitFor("B halted", func(st reconcile.Status) bool {
		return strings.Contains(st.Error, "revision "+b[:12]+" is halted") || st.Target == b && st.Step == reconcile.StepFailed
	})
	halted, _ := os.ReadFile(layout.New(n.state).Halted())
	if !strings.Contains(string(halted), want) && !strings.Contains(st.Error, want) {
		t.Errorf("the agent's halt lacks %q:\nstatus: %s\nhalted.json: %s", want, st.Error, halted)
	}
	if got := n.live(); got != a {
		t.Fatalf("current -> %s, want A %s", got, a)
	}
	n.serves("blog A", "api A")
	if _, err := os.Stat(filepath.Join(n.state, "releases", b)); err == nil {
		t.Errorf("a release of the refused revision was prepared")
	}

	// The policy tightened (its own prefixes gone) and the agent restarted:
	// A, which the old policy let in, is brought up again (the exec
	// supervisor's workers stopped with the agent), not refused; a new
	// revision meets the new policy.
	n.stopAgent(syscall.SIGTERM)
	n.configure("test", "./repo", "policy: {allowRoot: true}\n")
	if out, err := validate("--node", n.config, n.repo); err == nil || !strings.Contains(out, `workers[0].dataDirs[0]: "`+n.dir+`/data/api" is outside /var/lib/drover-data/api`) {
		t.Errorf("drover validate --node with the tightened policy: %v\n%s", err, out)
	}
	n.startAgent()
	// Up again: serving from both instances, and back in the LB. One good
	// answer is not enough: the exec supervisor's workers died with the
	// agent and come back one at a time, and nginx skips an instance for
	// its fail_timeout (2 s) after a failed try, so an early answer can
	// be followed by 502s while the second instance starts. (The old
	// agent left the LB before its workers stopped; the new one re-joins
	// once it verified them.)
	n.waitFor("A up again", func(st reconcile.Status) bool {
		if st.Rev != a || n.lbHealth() != 200 {
			return false
		}
		for range 4 {
			if code, body := n.get("api.test", "/version"); code != 200 || body != "api A" {
				return false
			}
		}
		return true
	})
	if st := n.status(); st.Step == reconcile.StepFailed {
		t.Errorf("the live release was refused after the policy tightened: %+v", st)
	}
	n.serves("blog A", "api A")
	n.specExtra = "    user: root\n"
	c := n.commit("blog C", "api C")
	n.waitLive(c)
	n.serves("blog C", "api C")
}

// instanceOf finds the process that has PORT=port in its environment and
// returns its real uid and its environment (NUL-separated, NUL-framed).
func instanceOf(t *testing.T, port int) (uid, env string) {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/environ")
	for _, p := range procs {
		data, err := os.ReadFile(p)
		if err != nil || !strings.Contains("\x00"+string(data), fmt.Sprintf("\x00PORT=%d\x00", port)) {
			continue
		}
		status, err := os.ReadFile(filepath.Join(filepath.Dir(p), "status"))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(status), "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[0] == "Uid:" {
				return f[1], "\x00" + string(data)
			}
		}
	}
	t.Fatalf("no process has PORT=%d in its environment", port)
	return "", ""
}
