//go:build e2e

package main

import (
	"cmp"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/internal/testsvc"
	"github.com/drover-dev/drover/reconcile"
)

// These tests run the real drover binary as a node agent against a real git
// repo, the real nginx and Node.js workers run by the exec supervisor, and
// check what the node serves: the outcome, not the calls.

var droverBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "drover-bin-")
	if err != nil {
		panic(err)
	}
	droverBin = filepath.Join(dir, "drover")
	if out, err := exec.Command("go", "build", "-o", droverBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build drover: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// testNode is one node: a config repo, a node.yaml and the agent's state.
type testNode struct {
	t                     testing.TB
	dir, repo, config     string
	state                 string
	httpsPort, healthPort int
	apiPort               int
	statusPort            int
	agent                 *exec.Cmd
	agentDone             chan struct{}
	agentLog              *testsvc.LogBuffer
	name                  string
	// specExtra is appended to the drover.yaml of each commit.
	specExtra string
	// handover, when set, is each commit's rollout.handover (default:
	// the spec's default, auto).
	handover string
	// workerJS, when set, is the api worker's server.js in each commit
	// (default: the package's workerJS).
	workerJS string
	// allLogs keeps the logs of every agent started on this node.
	allLogs []*testsvc.LogBuffer
}

func newTestNode(t testing.TB) *testNode {
	t.Helper()
	dir := testsvc.WorldDir(t, "agent")
	n := &testNode{
		t: t, dir: dir, repo: filepath.Join(dir, "repo"), state: filepath.Join(dir, "state"),
		config:    filepath.Join(dir, "node.yaml"),
		httpsPort: testsvc.FreePort(t), healthPort: testsvc.FreePort(t), apiPort: testsvc.FreePorts(t, 2), statusPort: testsvc.FreePort(t),
	}
	n.configure("test", "./repo", "")
	if err := os.MkdirAll(filepath.Join(dir, "nginx"), 0o755); err != nil {
		t.Fatal(err)
	}
	n.git("init", "-q", "-b", "main", n.repo)
	t.Cleanup(func() {
		n.stopAgent(syscall.SIGKILL)
		if pid, err := os.ReadFile(filepath.Join(dir, "nginx", "nginx.pid")); err == nil {
			var p int
			fmt.Sscan(string(pid), &p)
			if p > 0 {
				syscall.Kill(p, syscall.SIGQUIT)
				for i := 0; i < 100 && syscall.Kill(p, 0) == nil; i++ {
					time.Sleep(20 * time.Millisecond)
				}
			}
		}
		if t.Failed() && n.agentLog != nil {
			t.Logf("agent log of %s:\n%s", n.dir, n.logs())
		}
	})
	return n
}

// configure writes the node's node.yaml: its name, where its repo is, and
// extra top-level sections (a cluster, say).
func (n *testNode) configure(name, repoURL, extra string) {
	n.t.Helper()
	n.name = name
	nodeYAML := fmt.Sprintf(`name: %s
stateDir: state
keepReleases: 3
repo: {url: %s, pollInterval: 1s}
nginx:
  binary: %s
  config: nginx/nginx.conf
  prefix: nginx
  pidFile: nginx/nginx.pid
  user: ""
  start: true
  listen: 127.0.0.1
  httpsPort: %d
  healthPort: %d
  tls: {selfSigned: true}
  statusListen: 127.0.0.1:%d
supervisor: exec
%s`, name, repoURL, testsvc.Bin(n.t, "nginx"), n.httpsPort, n.healthPort, n.statusPort, extra)
	n.write("node.yaml", nodeYAML)
}

// logs is everything every agent of this node logged, in order.
func (n *testNode) logs() string {
	var b strings.Builder
	for _, l := range n.allLogs {
		b.WriteString(l.String())
	}
	return b.String()
}

func (n *testNode) write(rel, content string) {
	n.t.Helper()
	p := filepath.Join(n.dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		n.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		n.t.Fatal(err)
	}
}

func (n *testNode) git(args ...string) string {
	n.t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "user.name=test", "-c", "user.email=test@example.com"}, args...)...)
	cmd.Dir = n.dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		n.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// commit writes a revision whose blog says blog and whose worker reports
// version, and returns its commit id.
func (n *testNode) commit(blog, version string) string {
	n.t.Helper()
	handover := ""
	if n.handover != "" {
		handover = ", handover: " + n.handover
	}
	spec := fmt.Sprintf(`version: 1
rollout: {healthTimeout: 15s, soak: 1s, drainTimeout: 5s%s}
sites:
  - name: blog
    serverNames: [blog.test]
    source: sites/blog
workers:
  - name: api
    source: workers/api
    install: [node, --check, server.js]
    exec: [node, server.js]
    instances: 2
    port: %d
    health: {path: /healthz, interval: 100ms, successes: 2}
    routes: [{serverName: api.test, path: /}]
`, handover, n.apiPort)
	n.write("repo/drover.yaml", spec+n.specExtra)
	n.write("repo/sites/blog/index.html", blog+"\n")
	n.write("repo/workers/api/server.js", cmp.Or(n.workerJS, workerJS))
	n.write("repo/workers/api/version.txt", version+"\n")
	n.git("-C", n.repo, "add", "-A")
	n.git("-C", n.repo, "commit", "-q", "-m", "blog "+blog+", api "+version)
	return n.git("-C", n.repo, "rev-parse", "HEAD")
}

func (n *testNode) startAgent() {
	n.t.Helper()
	n.agentLog = &testsvc.LogBuffer{}
	n.allLogs = append(n.allLogs, n.agentLog)
	cmd := exec.Command(droverBin, "agent", "--config", n.config)
	cmd.Stdout, cmd.Stderr = n.agentLog, n.agentLog
	if err := cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	n.agent, n.agentDone = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(n.agentDone) }()
}

func (n *testNode) stopAgent(sig syscall.Signal) {
	if n.agent == nil {
		return
	}
	n.agent.Process.Signal(sig)
	select {
	case <-n.agentDone:
	case <-time.After(30 * time.Second):
		n.agent.Process.Kill()
		<-n.agentDone
	}
	n.agent = nil
}

func (n *testNode) status() reconcile.Status {
	var st reconcile.Status
	if data, err := os.ReadFile(layout.New(n.state).Status()); err == nil {
		json.Unmarshal(data, &st)
	}
	return st
}

// waitFor polls the node's status until ok, or fails after 90 s.
func (n *testNode) waitFor(what string, ok func(reconcile.Status) bool) reconcile.Status {
	n.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		st := n.status()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("timed out waiting for %s; last status %+v", what, st)
		}
		select {
		case <-n.agentDone:
			n.t.Fatalf("agent exited while waiting for %s", what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (n *testNode) waitLive(rev string) {
	n.t.Helper()
	n.waitFor("live on "+rev[:8], func(st reconcile.Status) bool { return st.Rev == rev && st.Step == reconcile.StepIdle })
}

var client = &http.Client{
	Timeout:   5 * time.Second,
	Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true},
}

// get fetches path from host through the node's nginx.
func (n *testNode) get(host, path string) (int, string) {
	n.t.Helper()
	req, _ := http.NewRequest("GET", fmt.Sprintf("https://127.0.0.1:%d%s", n.httpsPort, path), nil)
	req.Host = host
	tr := client.Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.ServerName = host
	resp, err := (&http.Client{Timeout: 5 * time.Second, Transport: tr}).Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

func (n *testNode) lbHealth() int {
	resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", n.healthPort))
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// serves checks that the blog, both api instances and the LB endpoint all
// answer for one and the same release.
func (n *testNode) serves(blog, version string) {
	n.t.Helper()
	if code, body := n.get("blog.test", "/"); code != 200 || body != blog {
		n.t.Errorf("blog: %d %q, want 200 %q", code, body, blog)
	}
	for i := 0; i < 4; i++ { // nginx balances over both instances
		if code, body := n.get("api.test", "/version"); code != 200 || body != version {
			n.t.Errorf("api: %d %q, want 200 %q", code, body, version)
		}
	}
	if code := n.lbHealth(); code != 200 {
		n.t.Errorf("LB health endpoint: %d, want 200", code)
	}
}

func (n *testNode) live() string {
	target, err := os.Readlink(filepath.Join(n.state, "current"))
	if err != nil {
		return ""
	}
	return filepath.Base(target)
}

func TestAgentRollsOutAndHaltsABadRevision(t *testing.T) {
	t.Parallel() // the agent mostly waits on its LB's checks: tests share the CPUs
	n := newTestNode(t)
	a := n.commit("blog A", "api A")
	n.startAgent()
	n.waitLive(a)
	n.serves("blog A", "api A")

	b := n.commit("blog B", "api B")
	n.waitLive(b)
	n.serves("blog B", "api B")

	// A release whose worker crashes at start: caught, rolled back, halted.
	c := n.commit("blog C", "crash C")
	// The node reports failed until its next poll, then idle with the halt
	// as its error; a busy machine may show only the second.
	n.waitFor("C halted", func(st reconcile.Status) bool {
		return st.Target == c && st.Step == reconcile.StepFailed || strings.Contains(st.Error, "revision "+c[:12]+" is halted")
	})
	n.waitFor("back on B", func(st reconcile.Status) bool { return st.Rev == b })
	if got := n.live(); got != b {
		t.Fatalf("current -> %s, want B %s", got, b)
	}
	n.serves("blog B", "api B")
	halted, _ := os.ReadFile(layout.New(n.state).Halted())
	if !strings.Contains(string(halted), c) || !strings.Contains(string(halted), "api") {
		t.Fatalf("halted.json does not name C and the failing worker:\n%s", halted)
	}
	// The halted revision is not retried: a few polls later the node is
	// still on B and has not restarted its workers for C again.
	time.Sleep(3 * time.Second)
	// Tried once: caught before the drain (the default overlap starts its
	// instances ahead) or switched to and rolled back (restart).
	log := n.agentLog.String()
	if got := strings.Count(log, "step=starting rev="+c[:12]) + strings.Count(log, "step=switching rev="+c[:12]); got != 1 {
		t.Fatalf("the halted revision was tried %d times, want once", got)
	}
	n.serves("blog B", "api B")

	// plan runs beside the live agent and says what C would change.
	plan := runCLI(t, "plan", "--config", n.config)
	for _, want := range []string{b[:12] + " -> " + c[:12], "HALTED", "~ blog (files: 0 added, 1 changed, 0 removed)",
		"~ api (files: 0 added, 1 changed, 0 removed)", "nginx config: unchanged"} {
		if !strings.Contains(plan, want) {
			t.Errorf("drover plan lacks %q:\n%s", want, plan)
		}
	}

	// The next good commit resumes the rollout.
	d := n.commit("blog D", "api D")
	n.waitLive(d)
	n.serves("blog D", "api D")

	out := runCLI(t, "status", "--config", n.config)
	for _, want := range []string{"live     " + d[:12], "halted   " + c[:12]} {
		if !strings.Contains(out, want) {
			t.Errorf("drover status lacks %q:\n%s", want, out)
		}
	}
	n.stopAgent(syscall.SIGTERM)
	if code, _ := n.get("api.test", "/version"); code == 200 {
		t.Errorf("the exec supervisor's workers outlived the agent")
	}
	// They died with it, so it left the LB first: the health endpoint
	// (nginx outlives the agent) must not send the LB to dead workers.
	if code := n.lbHealth(); code != 503 {
		t.Errorf("after the agent stopped its workers the LB health endpoint answers %d, want 503", code)
	}
	if !strings.Contains(n.logs(), "leaving the load balancer") {
		t.Errorf("the stopping agent did not say it left the LB:\n%s", n.agentLog)
	}
}

// killAt runs a node with lb (its node.yaml lb section) from release A
// towards B, SIGKILLs the agent once it reports step on the way to B,
// checks the journal it left (check), restarts the agent with the repo
// hidden (so that it can only recover, not move on) and waits until it has.
// It returns A, B and a function that brings the repo back.
func killAt(t *testing.T, n *testNode, lb string, step reconcile.Step, check func(journal []byte, b string)) (a, b string, repoBack func()) {
	t.Helper()
	n.configure("test", "./repo", lb)
	a = n.commit("blog A", "api A")
	n.startAgent()
	n.waitLive(a)
	b = n.commit("blog B", "api B")
	n.waitFor(string(step), func(st reconcile.Status) bool { return st.Step == step && st.Target == b })
	n.stopAgent(syscall.SIGKILL)
	data, err := os.ReadFile(filepath.Join(n.state, "journal.json"))
	if err != nil {
		t.Fatalf("no journal after a kill while %s: %v", step, err)
	}
	check(data, b)
	if err := os.Rename(n.repo, n.repo+".away"); err != nil {
		t.Fatal(err)
	}
	n.startAgent()
	n.waitFor("recovered", func(st reconcile.Status) bool {
		_, err := os.Stat(filepath.Join(n.state, "journal.json"))
		return os.IsNotExist(err) && st.Step == reconcile.StepIdle && strings.Contains(st.Error, "poll repo")
	})
	return a, b, func() {
		if err := os.Rename(n.repo+".away", n.repo); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAgentKilledWhileUndrainingFinishesForward kills the agent with
// SIGKILL while it re-joins the LB with a verified release: the next agent
// must not switch back (the LB may already send the node traffic) but
// bring the same release up, check it and finish the undrain.
func TestAgentKilledWhileUndrainingFinishesForward(t *testing.T) {
	t.Parallel() // the agent mostly waits on its LB's checks: tests share the CPUs
	n := newTestNode(t)
	// A long rise window (no LB checks this node, so the undrain waits it
	// out), so the test can catch the agent in it.
	_, b, repoBack := killAt(t, n, "lb: {driver: healthcheck, healthcheck: {interval: 1s, unhealthyThreshold: 1, healthyThreshold: 2}}\n",
		reconcile.StepUndraining, func(data []byte, b string) {
			if !strings.Contains(string(data), `"step": "undraining"`) || !strings.Contains(string(data), `"verified": "`+b+`"`) {
				t.Fatalf("the journal does not say the verified release is re-joining:\n%s", data)
			}
		})
	if got := n.live(); got != b {
		t.Fatalf("after recovery current -> %s, want B %s (finished forward)", got, b)
	}
	n.serves("blog B", "api B") // the LB health endpoint included: undrained
	repoBack()
}

// TestAgentKilledMidChangeRecovers kills the agent with SIGKILL while it
// switches or verifies, and checks that the next agent finds the node on
// one whole release (nginx, sites and workers of the same revision).
func TestAgentKilledMidChangeRecovers(t *testing.T) {
	t.Parallel() // the agent mostly waits on its LB's checks: tests share the CPUs
	for _, step := range []reconcile.Step{reconcile.StepSwitching, reconcile.StepVerifying} {
		t.Run(string(step), func(t *testing.T) {
			n := newTestNode(t)
			// Restart: the overlap makes these steps a few ms long, too
			// short to catch from outside (its crash points are the
			// reconcile suite's and TestRecoverOverlapCleansTheOtherRange).
			n.handover = "restart"
			// The node leaves the LB by its health endpoint (the
			// healthcheck driver), so a kill leaves it drained.
			a, b, repoBack := killAt(t, n, "lb: {driver: healthcheck, healthcheck: {interval: 200ms, unhealthyThreshold: 1, healthyThreshold: 1}}\n",
				step, func([]byte, string) {
					if code := n.lbHealth(); code != 503 {
						t.Fatalf("the killed node answers the LB %d, want 503 (drained)", code)
					}
				})
			if got := n.live(); got != a {
				t.Fatalf("after recovery current -> %s, want A %s", got, a)
			}
			n.serves("blog A", "api A") // the LB health endpoint included: undrained
			// With the repo back, the node moves on to B.
			repoBack()
			n.waitLive(b)
			n.serves("blog B", "api B")
		})
	}
}

func runCLI(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(droverBin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("drover %v: %v\n%s", args, err, out)
	}
	return string(out)
}
