//go:build e2e

// Faults at every step, under load (issue 16): the agent of the node
// holding the lock SIGKILLed at each step of its turn in turn, and a node
// cut off from Redis and the forge while idle and while it holds the lock.
// Each checks the five invariants: capacity from HAProxy's view, no
// unverified or halted revision answering (stopLoad), migrations once, every
// node whole on one release, and no request lost; then that the cluster
// converges.
package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/e2e/lab"
)

// n. One revision with a slow migration; the lock holder's agent is
// SIGKILLed while migrating, then (whichever node holds the lock next)
// while draining, switching, verifying and undraining. systemd restarts
// each agent, which recovers (finishing forward what was verified, putting
// back what was not, undraining what it drained), and the rollout goes on.
func scenarioKillAtEachStep(t *scenarioT, l *lab.Lab) {
	ctx := context.Background()
	nodes := l.Nodes()[:3]
	load := l.StartLoad(ctx, clients, think, lab.DefaultTargets)
	w := watchLB(l)
	rev := commit(t, l, "feedback-api v9 and a slow migration, killed at every step", map[string]string{
		"workers/feedback-api/server.js": setVersion(t, read(t, l, "workers/feedback-api/server.js"), "9"),
		// pg_sleep keeps the migrating step long enough to be caught.
		"migrations/0005_e2e_kills.sql": "CREATE TABLE e2e_kills (id serial PRIMARY KEY);\nINSERT INTO e2e_kills DEFAULT VALUES;\nSELECT pg_sleep(4);\n",
	})
	for _, step := range []string{"migrating", "draining", "switching", "verifying", "undraining"} {
		var victim *lab.Node
		waitFor(t, 3*time.Minute, "a node "+step+" "+short(rev), func() bool {
			victim = atStep(t, l, nodes, rev, step)
			return victim != nil
		})
		if err := victim.KillAgent(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("SIGKILLed the agent of %s while %s (out of the LB now: %v)", victim.Name(), step, w.outNow())
		// The next step to catch must be another turn's: wait until the
		// restarted agent is past this one.
		waitFor(t, time.Minute, victim.Name()+"'s agent back", func() bool {
			out, err := victim.Run(ctx, "systemctl", "is-active", "drover.service")
			return err == nil && strings.TrimSpace(out) == "active"
		})
	}
	waitConverged(t, l, rev, 6*time.Minute)
	res := stopLoad(t, l, load)
	lb := w.stop()
	t.Logf("load: %s; LB: %s", res, lb)
	if res.Failed > 0 {
		t.Errorf("%d of %d requests failed: %v", res.Failed, res.Requests, res.Errors)
	}
	if lb.maxOut > 1 {
		t.Errorf("%d nodes were out at once: %s", lb.maxOut, lb)
	}
	if n := queryInt(t, l, "SELECT count(*) FROM e2e_kills"); n != 1 {
		t.Errorf("the migration ran %d times, want once", n)
	}
	for _, n := range nodes {
		checkWhole(t, n, rev, "9")
	}
}

// atStep finds the node whose journal says it is at step of rev; for
// migrating (before the journal), the node whose connection runs the
// migration's pg_sleep.
func atStep(t testing.TB, l *lab.Lab, nodes []*lab.Node, rev, step string) *lab.Node {
	if step == "migrating" {
		ip := queryString(t, l, "SELECT coalesce((SELECT host(client_addr) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%pg_sleep(4)%' AND pid <> pg_backend_pid() LIMIT 1), '')")
		for _, n := range nodes {
			if ip != "" && n.IP() == ip {
				return n
			}
		}
		return nil
	}
	for _, n := range nodes {
		if to, s, ok := n.JournalEntry(); ok && to == rev && s == step {
			return n
		}
	}
	return nil
}

// checkWhole checks that n is on rev alone: its live link, its nginx config
// (the revision header) and every worker instance (the version it answers,
// from both ports).
func checkWhole(t testing.TB, n *lab.Node, rev, version string) {
	t.Helper()
	if live := n.Live(); live != rev {
		t.Errorf("%s is live on %s, want %s", n.Name(), short(live), short(rev))
	}
	ports := map[string]bool{}
	for i := 0; i < 20 && len(ports) < 2; i++ {
		code, body, hdr, err := fetchHeader(n, "app.example.com", "/api/version", "X-Drover-Revision")
		if err != nil || code != 200 {
			t.Errorf("%s: /api/version: %d %v", n.Name(), code, err)
			return
		}
		if hdr != rev {
			t.Errorf("%s: nginx answers for revision %s, want %s", n.Name(), short(hdr), short(rev))
		}
		if !strings.Contains(body, `"version":"`+version+`"`) {
			t.Errorf("%s: a worker instance answers %s, want version %s", n.Name(), body, version)
		}
		for _, p := range []string{"3000", "3001"} {
			if strings.Contains(body, `"port":`+p) {
				ports[p] = true
			}
		}
	}
	if len(ports) < 2 {
		t.Errorf("%s: only instances %v answered", n.Name(), ports)
	}
}

// o. A node is cut off from Redis and the forge (its LB traffic still
// flows): first while idle, then while it holds the lock mid-turn. Idle, it
// goes on serving and nothing moves; mid-turn, it loses the lock, goes back
// to the release it left while still drained, and re-joins; no other node
// drains while it is out; healed, the cluster converges.
func scenarioPartition(t *scenarioT, l *lab.Lab) {
	ctx := context.Background()
	nodes := l.Nodes()[:3]
	load := l.StartLoad(ctx, clients, think, lab.DefaultTargets)
	w := watchLB(l)
	before := nodes[0].Live()

	idle := nodes[2]
	if err := idle.Partition(); err != nil {
		t.Fatal(err)
	}
	if idle.CanReachRedis(ctx) {
		t.Fatalf("%s still reaches Redis after the partition", idle.Name())
	}
	t.Logf("cut %s off from Redis and the forge while idle", idle.Name())
	time.Sleep(20 * time.Second)
	if err := idle.Heal(); err != nil {
		t.Fatal(err)
	}
	if !idle.CanReachRedis(ctx) {
		t.Fatalf("%s does not reach Redis after the partition healed", idle.Name())
	}
	if lb := w.snapshot(); len(lb.left) > 0 {
		t.Errorf("nodes left the LB while one idle node was cut from Redis: %s", lb)
	}

	rev := commit(t, l, "feedback-api v10, a node cut off mid-turn", map[string]string{
		"workers/feedback-api/server.js": setVersion(t, read(t, l, "workers/feedback-api/server.js"), "10"),
	})
	var victim *lab.Node
	waitFor(t, 3*time.Minute, "a node switching "+short(rev), func() bool {
		victim = atStep(t, l, nodes, rev, "switching")
		return victim != nil
	})
	if err := victim.Partition(); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	if victim.CanReachRedis(ctx) {
		t.Fatalf("%s still reaches Redis after the partition", victim.Name())
	}
	t.Logf("cut %s off from Redis and the forge while switching to %s", victim.Name(), short(rev))
	time.Sleep(30 * time.Second)
	out := w.outNow()
	if err := victim.Heal(); err != nil {
		t.Fatal(err)
	}
	t.Logf("healed %s after %s; out of the LB then: %v", victim.Name(), time.Since(cut).Round(time.Second), out)
	waitConverged(t, l, rev, 5*time.Minute)
	res := stopLoad(t, l, load)
	lb := w.stop()
	t.Logf("load: %s; LB: %s (the cluster was on %s)", res, lb, short(before))
	if res.Failed > 0 {
		t.Errorf("%d of %d requests failed: %v", res.Failed, res.Requests, res.Errors)
	}
	if lb.maxOut > 1 {
		t.Errorf("%d nodes were out at once: %s", lb.maxOut, lb)
	}
	for _, n := range nodes {
		checkWhole(t, n, rev, "10")
	}
}

// fetchHeader is fetch, also returning the answer's header h.
func fetchHeader(n *lab.Node, host, path, h string) (int, string, string, error) {
	var hdr string
	code, body, err := fetchWith(n, host, path, func(v func(string) string) { hdr = v(h) })
	return code, body, hdr, err
}

func queryString(t testing.TB, l *lab.Lab, q string) string {
	t.Helper()
	var s string
	queryRow(t, l, q, &s)
	return s
}
