//go:build e2e

package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/drover-dev/drover/cluster"
	"github.com/drover-dev/drover/internal/testsvc"
	"github.com/drover-dev/drover/reconcile"
)

// These tests run several real agents on one config repo, coordinating
// through real redis-server processes, and check invariants 1 and 2 of
// DESIGN.md from what the agents did: the step lines of their own logs,
// which survive a Redis failover that the event stream may not.

// testCluster is N agents sharing one repo and one Redis.
type testCluster struct {
	t     *testing.T
	nodes []*testNode
	repo  *testNode // owns the shared repo
	cl    *cluster.Cluster
}

func newTestCluster(t *testing.T, size int, clusterYAML string, redisCfg cluster.Config) *testCluster {
	t.Helper()
	tc := &testCluster{t: t}
	tc.repo = newTestNode(t)
	for i := range size {
		n := newTestNode(t)
		n.configure(fmt.Sprintf("node%d", i+1), tc.repo.repo, clusterYAML)
		tc.nodes = append(tc.nodes, n)
	}
	redisCfg.Cluster = "test"
	redisCfg.HeartbeatTTL = 3 * time.Second
	c, err := cluster.Open(context.Background(), redisCfg, "observer", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	tc.cl = c
	return tc
}

// commit writes a revision of static sites only (workers' ports are the
// same on every node, and these nodes share one machine). The site's
// health path is healthPath: a missing file makes the revision fail its
// checks.
func (tc *testCluster) commit(blog, healthPath string) string {
	r := tc.repo
	r.write("repo/drover.yaml", fmt.Sprintf(`version: 1
rollout: {healthTimeout: 5s, soak: 1s, drainTimeout: 2s, progressDeadline: 3m}
sites:
  - name: blog
    serverNames: [blog.test]
    source: sites/blog
    health: {path: %s}
`, healthPath))
	r.write("repo/sites/blog/index.html", blog+"\n")
	r.git("-C", r.repo, "add", "-A")
	r.git("-C", r.repo, "commit", "-q", "-m", blog)
	return r.git("-C", r.repo, "rev-parse", "HEAD")
}

func (tc *testCluster) start() {
	for _, n := range tc.nodes {
		n.startAgent()
	}
}

// waitAll waits until every node is idle and live on rev.
func (tc *testCluster) waitAll(rev string, timeout time.Duration) {
	tc.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ns, err := tc.cl.Nodes(context.Background())
		done := 0
		if err == nil {
			for _, n := range ns {
				if n.Rev == rev && n.Step == reconcile.StepIdle {
					done++
				}
			}
		}
		if done == len(tc.nodes) {
			return
		}
		if time.Now().After(deadline) {
			tc.t.Fatalf("%d of %d nodes live on %s after %s: %+v (err %v)", done, len(tc.nodes), rev[:8], timeout, ns, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var stepLine = regexp.MustCompile(`^time=(\S+) level=INFO msg=step node=(\S+) step=(\S+) rev=(\S+)`)

// window is the time a node was out of service: from its drain to the
// step that put it back (idle), or to the end of the test.
type window struct {
	node      string
	from, to  time.Time
	rev       string
	stillOpen bool
}

// outOfService reads every node's logs and returns its drained windows.
func (tc *testCluster) outOfService() []window {
	var ws []window
	for _, n := range tc.nodes {
		var open *window
		for _, line := range strings.Split(n.logs(), "\n") {
			m := stepLine.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			at, err := time.Parse(time.RFC3339Nano, m[1])
			if err != nil {
				tc.t.Fatalf("bad time in %q", line)
			}
			switch step := reconcile.Step(m[3]); {
			case step == reconcile.StepDraining && open == nil:
				open = &window{node: m[2], from: at, rev: m[4]}
			case step == reconcile.StepIdle && open != nil:
				open.to = at
				ws = append(ws, *open)
				open = nil
			}
		}
		if open != nil {
			open.to, open.stillOpen = time.Now(), true
			ws = append(ws, *open)
		}
	}
	return ws
}

// checkCapacity fails if more than max nodes were ever out at once.
func (tc *testCluster) checkCapacity(max int) []window {
	tc.t.Helper()
	ws := tc.outOfService()
	type edge struct {
		at    time.Time
		delta int
		node  string
	}
	var edges []edge
	for _, w := range ws {
		edges = append(edges, edge{w.from, +1, w.node}, edge{w.to, -1, w.node})
	}
	sort.Slice(edges, func(i, j int) bool {
		if edges[i].at.Equal(edges[j].at) {
			return edges[i].delta < edges[j].delta
		}
		return edges[i].at.Before(edges[j].at)
	})
	out := 0
	for _, e := range edges {
		out += e.delta
		if out > max {
			tc.t.Errorf("%d nodes out of service at %s (max %d): %+v", out, e.at.Format(time.StampMicro), max, ws)
			return ws
		}
	}
	if len(ws) == 0 {
		tc.t.Errorf("no node was ever drained: the check proves nothing")
	}
	return ws
}

func clusterSection(redisAddr string) string {
	return fmt.Sprintf("cluster: {name: test, redis: [%s], lockExpiry: 3s, heartbeatTTL: 3s}\n", redisAddr)
}

func TestClusterRollsOutOneNodeAtATime(t *testing.T) {
	t.Parallel() // a cluster's agents mostly wait on their LB and lock: two clusters share the CPUs
	r := testsvc.StartRedis(t)
	tc := newTestCluster(t, 5, clusterSection(r.Addr), cluster.Config{Addrs: []string{r.Addr}})
	a := tc.commit("blog A", "/")
	tc.start()
	tc.waitAll(a, 2*time.Minute)
	b := tc.commit("blog B", "/")
	// A push wakes every agent through Redis at once; polling is the fallback.
	runCLI(t, "sync", "--config", tc.nodes[0].config)
	tc.waitAll(b, 2*time.Minute)
	ws := tc.checkCapacity(1)
	if got := countRev(ws, b); got != len(tc.nodes) {
		t.Errorf("%d drained windows for B, want one per node (%d)", got, len(tc.nodes))
	}
	for _, n := range tc.nodes {
		if code, body := n.get("blog.test", "/"); code != 200 || body != "blog B" {
			t.Errorf("%s serves %d %q, want blog B", n.dir, code, body)
		}
	}
	out := runCLI(t, "status", "--config", tc.nodes[0].config)
	for _, want := range []string{"cluster test", "node5", "rollout lock: free", "recent events:"} {
		if !strings.Contains(out, want) {
			t.Errorf("drover status lacks %q:\n%s", want, out)
		}
	}
}

func countRev(ws []window, rev string) int {
	n := 0
	for _, w := range ws {
		if strings.HasPrefix(rev, w.rev) {
			n++
		}
	}
	return n
}

// TestClusterHaltsARevisionThatFailsItsChecks: the first node to take a bad
// revision rolls back, the revision is halted, no other node switches to it,
// and the next commit resumes the rollout.
func TestClusterHaltsARevisionThatFailsItsChecks(t *testing.T) {
	t.Parallel() // a cluster's agents mostly wait on their LB and lock: two clusters share the CPUs
	r := testsvc.StartRedis(t)
	tc := newTestCluster(t, 3, clusterSection(r.Addr), cluster.Config{Addrs: []string{r.Addr}})
	a := tc.commit("blog A", "/")
	tc.start()
	tc.waitAll(a, 2*time.Minute)

	bad := tc.commit("blog bad", "/missing.html")
	deadline := time.Now().Add(time.Minute)
	for {
		halts, err := tc.cl.HaltedAll(context.Background())
		if err == nil && len(halts) == 1 && halts[0].Rev == bad {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("revision not halted: %+v %v", halts, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	tc.waitAll(a, time.Minute)  // the failed node is back on A
	time.Sleep(3 * time.Second) // a few more polls: nobody takes the bad revision
	switched := 0
	for _, n := range tc.nodes {
		switched += strings.Count(n.logs(), "step=switching rev="+bad[:12])
		if code, body := n.get("blog.test", "/"); code != 200 || body != "blog A" {
			t.Errorf("%s serves %d %q, want blog A", n.dir, code, body)
		}
	}
	if switched != 1 {
		t.Fatalf("%d nodes switched to the halted revision, want exactly the first", switched)
	}
	good := tc.commit("blog C", "/")
	tc.waitAll(good, 2*time.Minute)
	tc.checkCapacity(1)
}

// TestClusterKilledLockHolder SIGKILLs the agent holding the lock in the
// middle of its turn. Its node stays out of service (it counts as out until
// it is back), so the others wait rather than drain; the killed node,
// started again, rolls back its step, re-joins, and the rollout finishes.
func TestClusterKilledLockHolder(t *testing.T) {
	t.Parallel() // a cluster's agents mostly wait on their LB and lock: two clusters share the CPUs
	r := testsvc.StartRedis(t)
	tc := newTestCluster(t, 3, clusterSection(r.Addr), cluster.Config{Addrs: []string{r.Addr}})
	a := tc.commit("blog A", "/")
	tc.start()
	tc.waitAll(a, 2*time.Minute)
	b := tc.commit("blog B", "/")

	var victim *testNode
	deadline := time.Now().Add(time.Minute)
	for victim == nil {
		for _, n := range tc.nodes {
			if strings.Contains(n.agentLog.String(), "step=verifying rev="+b[:12]) {
				victim = n
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no node reached verifying")
		}
		time.Sleep(5 * time.Millisecond)
	}
	victim.stopAgent(syscall.SIGKILL)
	killedAt := time.Now()
	// The lock expires (3 s) and the node's heartbeat goes silent (3 s):
	// the others may take the lock but must not drain while it is out.
	time.Sleep(8 * time.Second)
	tc.checkCapacity(1)
	if _, err := os.Stat(filepath.Join(victim.state, "journal.json")); err != nil {
		t.Fatalf("the killed node has no journal: %v", err)
	}
	victim.startAgent()
	tc.waitAll(b, 2*time.Minute)
	ws := tc.checkCapacity(1)
	for _, w := range ws {
		if w.node != victim.name && w.from.After(killedAt) && w.from.Before(killedAt.Add(3*time.Second)) {
			t.Errorf("%s drained %s after the holder was killed, while it was still out", w.node, w.from.Sub(killedAt))
		}
	}
}

// TestClusterSurvivesRedisFailover kills the Redis master (Sentinel) in the
// middle of a rollout: after the failover the rollout goes on, and never are
// two nodes drained at once.
func TestClusterSurvivesRedisFailover(t *testing.T) {
	t.Parallel() // a cluster's agents mostly wait on their LB and lock: two clusters share the CPUs
	master := testsvc.StartRedis(t)
	replica := testsvc.StartRedis(t, "--replicaof", "127.0.0.1", fmt.Sprint(master.Port))
	_ = replica
	var sentinels []string
	for range 3 {
		sentinels = append(sentinels, testsvc.StartSentinel(t, "drover", master.Addr, 2).Addr)
	}
	section := fmt.Sprintf("cluster: {name: test, sentinels: [%s], masterName: drover, lockExpiry: 3s, heartbeatTTL: 3s}\n", strings.Join(sentinels, ", "))
	tc := newTestCluster(t, 3, section, cluster.Config{SentinelAddrs: sentinels, MasterName: "drover"})
	a := tc.commit("blog A", "/")
	tc.start()
	tc.waitAll(a, 2*time.Minute)
	b := tc.commit("blog B", "/")
	deadline := time.Now().Add(time.Minute)
	for {
		holders, _ := tc.cl.Holders(context.Background())
		if len(holders) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("nobody took the lock for B")
		}
		time.Sleep(5 * time.Millisecond)
	}
	master.Kill()
	tc.waitAll(b, 3*time.Minute)
	tc.checkCapacity(1)
	// The history is in Redis too. B's runs were written during and after
	// the failover (a write that failed is retried): all three are there.
	// A's were written before it: they survive when the promoted replica
	// had them, which this harness does not always give (then the events
	// from before the kill are gone too).
	revs, err := tc.cl.History(0).List(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	byRev := map[string]cluster.Revision{}
	for _, rv := range revs {
		byRev[rv.Rev] = rv
		got = append(got, fmt.Sprintf("%s %q %s (%d runs)", rv.Rev[:8], rv.Subject, rv.Outcome, len(rv.Nodes)))
	}
	if rv := byRev[b]; rv.Outcome != "live" || len(rv.Nodes) != len(tc.nodes) {
		t.Fatalf("history after the failover: %s; want B live with %d runs", strings.Join(got, ", "), len(tc.nodes))
	}
	evs, err := tc.cl.Events(context.Background(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	keptOld := false
	for _, e := range evs {
		keptOld = keptOld || e.Rev == a && e.Step == reconcile.StepVerifying
	}
	// What the replica had is a prefix of what was written, and a write
	// that failed at the kill is retried on the new master: A may come back
	// with only some of its runs (and without its commit details), but
	// always in its place, superseded by B.
	switch rv, ok := byRev[a]; {
	case ok && rv.Outcome != "superseded":
		t.Errorf("history after the failover: %s; want A superseded", strings.Join(got, ", "))
	case ok && len(rv.Nodes) != len(tc.nodes):
		t.Logf("the promoted replica had part of A's history (%d of %d runs): %s", len(rv.Nodes), len(tc.nodes), strings.Join(got, ", "))
	case !ok && keptOld:
		t.Errorf("the failover kept A's events but not its history: %s", strings.Join(got, ", "))
	case !ok:
		t.Logf("the promoted replica had none of the data written before the kill (history and events): %s", strings.Join(got, ", "))
	}
}

// TestClusterWebhookPauseResume: with polling an hour apart, a signed push
// to one node's webhook wakes every node; a forged one changes nothing;
// pause holds a rollout until resume.
func TestClusterWebhookPauseResume(t *testing.T) {
	t.Parallel() // a cluster's agents mostly wait on their LB and lock: two clusters share the CPUs
	r := testsvc.StartRedis(t)
	hookPort := testsvc.FreePort(t)
	secret := filepath.Join(testsvc.WorldDir(t, "hook"), "secret")
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tc := newTestCluster(t, 3, clusterSection(r.Addr), cluster.Config{Addrs: []string{r.Addr}})
	for i, n := range tc.nodes {
		extra := clusterSection(r.Addr)
		if i == 0 {
			extra += fmt.Sprintf("webhook: {listen: 127.0.0.1:%d, secretFile: %s, provider: github}\n", hookPort, secret)
		}
		n.configure(n.name, tc.repo.repo, extra)
		cfg, _ := os.ReadFile(n.config)
		n.write("node.yaml", strings.Replace(string(cfg), "pollInterval: 1s", "pollInterval: 1h", 1))
	}
	a := tc.commit("blog A", "/")
	tc.start() // every agent syncs once at start
	tc.waitAll(a, 2*time.Minute)

	push := func(body, sig string) int {
		req, _ := http.NewRequest("POST", fmt.Sprintf("http://127.0.0.1:%d/_drover/webhook", hookPort), strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-GitHub-Event", "push")
		req.Header.Set("X-GitHub-Delivery", fmt.Sprint(time.Now().UnixNano()))
		req.Header.Set("X-Hub-Signature-256", sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	sign := func(body string) string {
		m := hmac.New(sha256.New, []byte("s3cret"))
		m.Write([]byte(body))
		return "sha256=" + hex.EncodeToString(m.Sum(nil))
	}
	body := `{"ref":"refs/heads/main","after":"x"}`

	b := tc.commit("blog B", "/")
	if code := push(body, "sha256="+strings.Repeat("0", 64)); code != http.StatusUnauthorized {
		t.Fatalf("forged push answered %d, want 401", code)
	}
	time.Sleep(3 * time.Second)
	for _, n := range tc.nodes {
		if code, got := n.get("blog.test", "/"); code != 200 || got != "blog A" {
			t.Fatalf("a forged push changed %s: %d %q", n.name, code, got)
		}
	}
	if code := push(body, sign(body)); code != http.StatusAccepted {
		t.Fatalf("signed push answered %d, want 202", code)
	}
	tc.waitAll(b, time.Minute)

	runCLI(t, "pause", "--config", tc.nodes[1].config, "--reason", "freeze")
	c := tc.commit("blog C", "/")
	if code := push(body, sign(body)); code != http.StatusAccepted {
		t.Fatalf("signed push answered %d, want 202", code)
	}
	time.Sleep(4 * time.Second)
	if out := runCLI(t, "status", "--config", tc.nodes[2].config); !strings.Contains(out, "PAUSED") || !strings.Contains(out, "freeze") {
		t.Errorf("drover status does not show the pause:\n%s", out)
	}
	for _, n := range tc.nodes {
		if strings.Contains(n.logs(), "step=draining rev="+c[:12]) {
			t.Fatalf("%s drained for C while rollouts were paused", n.name)
		}
	}
	runCLI(t, "resume", "--config", tc.nodes[2].config)
	tc.waitAll(c, time.Minute)
	tc.checkCapacity(1)
}
