//go:build e2e

// The steady-state guard's scenarios (issue 11): between rollouts a node's
// health endpoint tells the truth, within the capacity rule, and what
// drifted from the live release is put back.
package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/e2e/lab"
)

// The guard's defaults (node.yaml guard: interval 2s, unhealthyAfter 3,
// healthyAfter 3) and the lab LB's fall window give the bound on how long a
// broken node may stay in the LB.
const (
	guardDetectBound = 12 * time.Second
	apiUnit0         = "drover-feedback-api@3000.service"
	apiUnit1         = "drover-feedback-api@3001.service"
)

// h. Both feedback-api instances of one node hang (SIGSTOP): the guard takes
// the node out of the LB within the bound, no other node leaves, the status
// says which check failed; SIGCONT brings it back.
func scenarioGuardHungWorkers(t *scenarioT, l *lab.Lab) {
	ctx := context.Background()
	victim := l.Nodes()[0]
	load := l.StartLoad(ctx, clients, think, lab.DefaultTargets)
	w := watchLB(l)
	time.Sleep(2 * time.Second) // the load settles
	before := load.Snapshot()
	signalUnits(t, victim, "SIGSTOP", apiUnit0, apiUnit1)
	hung := time.Now()
	waitFor(t, 30*time.Second, victim.Name()+" out of the LB", func() bool {
		st := w.stateNow()[victim.Name()]
		return st != "" && !strings.HasPrefix(st, "UP")
	})
	detected := time.Since(hung)
	atOut := load.Snapshot()
	t.Logf("requests completed while the node was hung and in the LB: %d", atOut.Requests-before.Requests)
	st := nodeStatus(t, l, victim.Name())
	t.Logf("hung at %s; out of the LB after %s; %s health %q: %s", hung.Format(time.TimeOnly), detected.Round(time.Millisecond), victim.Name(), st.Health, st.HealthWhy)
	if detected > guardDetectBound {
		t.Errorf("the node left the LB %s after its workers hung; bound %s (3 checks at 2 s + the LB's fall window)", detected.Round(time.Millisecond), guardDetectBound)
	}
	if st.Health != "out" || !strings.Contains(st.HealthWhy, "worker feedback-api instance") {
		t.Errorf("%s reports health %q (%s), want out naming the hung worker", victim.Name(), st.Health, st.HealthWhy)
	}
	// Out for a while: the LB sends it nothing new, and every request it
	// holds has waited more than lab.SlowAnswer when it answers at SIGCONT.
	time.Sleep(lab.SlowAnswer + time.Second)
	signalUnits(t, victim, "SIGCONT", apiUnit0, apiUnit1)
	resumed := time.Now()
	waitFor(t, 30*time.Second, victim.Name()+" back in the LB", func() bool { return w.stateNow().up(victim.Name()) })
	back := time.Since(resumed)
	waitFor(t, 10*time.Second, victim.Name()+" healthy", func() bool { return nodeStatus(t, l, victim.Name()).Health == "healthy" })
	res := stopLoad(t, l, load)
	lb := w.stop()
	// The bound is the hung node's share of the traffic while it was still
	// in the LB: a third of what the clients send in the detection window, at
	// the rate they sent before the hang (clients stuck on the hung node send
	// nothing else, so the completed requests of the window undercount it).
	// Only the API third of the node's traffic hangs.
	rate := float64(before.Requests) / before.Took.Seconds()
	window := int64(rate * detected.Seconds())
	bound := window / 3
	t.Logf("load: %s; LB: %s; back in the LB %s after SIGCONT", res, lb, back.Round(time.Millisecond))
	t.Logf("failed %d requests, and %d more answered after more than %s (held by the hung node until SIGCONT); bound (the node's share during detection) %d of %d requests in %s: %.1f%% of the bound failed, %.1f%% failed or held",
		res.Failed, res.Slow, lab.SlowAnswer, bound, window, detected.Round(time.Millisecond),
		100*float64(res.Failed)/float64(max(bound, 1)), 100*float64(res.Failed+res.Slow)/float64(max(bound, 1)))
	if res.Failed+res.Slow > bound {
		t.Errorf("%d requests failed or were held, more than the node's share during detection (%d)", res.Failed+res.Slow, bound)
	}
	if lb.maxOut > 1 || len(lb.left) != 1 || lb.left[victim.Name()] != 1 {
		t.Errorf("LB: %s; want only %s out, once", lb, victim.Name())
	}
}

// i. The unit file and nginx.conf edited by hand and an instance stopped by
// hand on one node: each is put back within two guard intervals, an event
// names it, and no request fails while nginx is restored (it reloads out of
// the LB, within the capacity rule).
func scenarioGuardDrift(t *scenarioT, l *lab.Lab) {
	ctx := context.Background()
	n := l.Nodes()[1]
	tmpl := "/etc/systemd/system/drover-feedback-api@.service"
	unitBefore := nodeRun(t, n, "cat", tmpl)
	confBefore := nodeRun(t, n, "cat", "/etc/nginx/nginx.conf")
	load := l.StartLoad(ctx, clients, think, lab.DefaultTargets)
	w := watchLB(l)
	edited := time.Now()
	nodeRun(t, n, "sh", "-c", "echo '# edited by hand' >> "+tmpl+" && echo '# edited by hand' >> /etc/nginx/nginx.conf")
	waitFor(t, 15*time.Second, "unit file and nginx.conf put back", func() bool {
		return nodeRun(t, n, "cat", tmpl) == unitBefore && nodeRun(t, n, "cat", "/etc/nginx/nginx.conf") == confBefore
	})
	restored := time.Since(edited)
	ev := waitEvent(t, l, n.Name(), edited, "drift", 10*time.Second)
	for _, want := range []string{"drover-feedback-api@.service was changed", "nginx config /etc/nginx/nginx.conf was changed"} {
		if !strings.Contains(ev, want) {
			t.Errorf("drift event %q does not name %q", ev, want)
		}
	}
	time.Sleep(2 * time.Second) // the load goes on past nginx's reload
	res := stopLoad(t, l, load)
	t.Logf("edited files put back after %s; event %q; load: %s", restored.Round(time.Millisecond), ev, res)
	// Two guard intervals, plus the LB's fall window: nginx reloads out of
	// the LB, since a reload closes the LB's keep-alive connections.
	if bound := 2*2*time.Second + 1500*time.Millisecond; restored > bound {
		t.Errorf("put back after %s, more than two intervals and the LB's fall window (%s)", restored, bound)
	}
	if res.Failed > 0 {
		t.Errorf("%d of %d requests failed while nginx was restored: %v", res.Failed, res.Requests, res.Errors)
	}

	// An instance stopped by hand is started again.
	stopped := time.Now()
	nodeRun(t, n, "systemctl", "stop", apiUnit1)
	waitFor(t, 10*time.Second, apiUnit1+" active again", func() bool {
		out, _ := n.Run(ctx, "systemctl", "is-active", apiUnit1)
		return strings.TrimSpace(out) == "active"
	})
	t.Logf("%s active again after %s", apiUnit1, time.Since(stopped).Round(time.Millisecond))
	if ev := waitEvent(t, l, n.Name(), stopped, apiUnit1, 10*time.Second); !strings.Contains(ev, "inactive") {
		t.Errorf("drift event %q does not say the instance was inactive", ev)
	}
	if lb := w.stop(); lb.maxOut > 1 || len(lb.left) > 1 || (len(lb.left) == 1 && lb.left[n.Name()] == 0) {
		t.Errorf("LB during drift repair: %s; want at most %s out (for nginx's reload)", lb, n.Name())
	}
}

// j. A node the guard has out holds up another node's rollout: the rollout
// waits for capacity, never two nodes out, and goes on once the node is back.
func scenarioGuardOutHoldsRollout(t *scenarioT, l *lab.Lab) {
	victim := l.Nodes()[0]
	w := watchLB(l)
	signalUnits(t, victim, "SIGSTOP", apiUnit0, apiUnit1)
	waitFor(t, 30*time.Second, victim.Name()+" out by its guard", func() bool {
		return nodeStatus(t, l, victim.Name()).Health == "out" && !w.stateNow().up(victim.Name())
	})
	// The victim's own agent would take the lock as readily as the others
	// and heal itself with the new release; stop it, so another node's turn
	// comes first and must wait (its published status stays: out).
	nodeRun(t, victim, "systemctl", "stop", "drover")
	rev := commit(t, l, "feedback-api v7 while a node is out", map[string]string{
		"workers/feedback-api/server.js": setVersion(t, read(t, l, "workers/feedback-api/server.js"), "7"),
	})
	pushed := time.Now()
	// The capacity wait's reason lists the nodes out of service; a guard's
	// "degraded" event of another node lists the victim too, as out or
	// failing, and is not what this waits for.
	ev := waitEvent(t, l, "", pushed, "nodes out of service ("+victim.Name()+" (out (guard:", 25*time.Second)
	t.Logf("waiting: %s", ev)
	if out := w.outNow(); len(out) != 1 || out[0] != victim.Name() {
		t.Errorf("out of the LB while %s is out by its guard: %v, want only it", victim.Name(), out)
	}
	signalUnits(t, victim, "SIGCONT", apiUnit0, apiUnit1)
	nodeRun(t, victim, "systemctl", "start", "drover")
	waitConverged(t, l, rev, 4*time.Minute)
	lb := w.stop()
	t.Logf("converged %s after the push; LB: %s", time.Since(pushed).Round(time.Millisecond), lb)
	if lb.maxOut > 1 {
		t.Errorf("%d nodes out at once: %s", lb.maxOut, lb)
	}
}

// k. The same failure on every node at once: no node leaves the LB (an LB
// with no healthy node serves nobody), all report degraded and why, and the
// rollout lock still works: a push rolls out one node at a time.
func scenarioGuardAllDegraded(t *scenarioT, l *lab.Lab) {
	w := watchLB(l)
	nodes := l.Nodes()[:3]
	for _, n := range nodes {
		signalUnits(t, n, "SIGSTOP", apiUnit0, apiUnit1)
	}
	hung := time.Now()
	waitFor(t, 30*time.Second, "every node degraded", func() bool {
		for _, n := range nodes {
			if nodeStatus(t, l, n.Name()).Health != "degraded" {
				return false
			}
		}
		return true
	})
	time.Sleep(6 * time.Second) // three more rounds: still nobody leaves
	for _, n := range nodes {
		st := nodeStatus(t, l, n.Name())
		t.Logf("%s: %s (%s)", n.Name(), st.Health, st.HealthWhy)
		if st.Health != "degraded" || !strings.Contains(st.HealthWhy, "out or failing too") {
			t.Errorf("%s reports %q (%s), want degraded naming the others", n.Name(), st.Health, st.HealthWhy)
		}
	}
	if out := w.outNow(); len(out) > 0 {
		t.Errorf("nodes out of the LB %s after every node's workers hung: %v", time.Since(hung).Round(time.Second), out)
	}
	rev := commit(t, l, "feedback-api v8 while every node is degraded", map[string]string{
		"workers/feedback-api/server.js": setVersion(t, read(t, l, "workers/feedback-api/server.js"), "8"),
	})
	waitConverged(t, l, rev, 5*time.Minute)
	lb := w.stop()
	t.Logf("rolled out while degraded; LB: %s", lb)
	if lb.maxOut > 1 {
		t.Errorf("%d nodes out at once: %s", lb.maxOut, lb)
	}
	if got := fmt.Sprint(lb.left); len(lb.left) != 3 {
		t.Errorf("nodes that left the LB: %s, want each once, for its rollout", got)
	}
	waitFor(t, 20*time.Second, "every node healthy", func() bool {
		for _, n := range nodes {
			if nodeStatus(t, l, n.Name()).Health != "healthy" {
				return false
			}
		}
		return true
	})
}

// --- helpers ---------------------------------------------------------------

type guardStatus struct{ Health, HealthWhy string }

func nodeStatus(t testing.TB, l *lab.Lab, name string) guardStatus {
	t.Helper()
	st, err := l.Status(context.Background())
	if err != nil {
		return guardStatus{}
	}
	for _, n := range st.Nodes {
		if n.Node == name {
			return guardStatus{n.Health, n.HealthWhy}
		}
	}
	return guardStatus{}
}

// signalUnits sends sig to every process of each unit on n.
func signalUnits(t testing.TB, n *lab.Node, sig string, units ...string) {
	t.Helper()
	nodeRun(t, n, append([]string{"systemctl", "kill", "--signal=" + sig}, units...)...)
}

func nodeRun(t testing.TB, n *lab.Node, argv ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := n.Run(ctx, argv...)
	if err != nil {
		t.Fatalf("%s on %s: %v: %s", strings.Join(argv, " "), n.Name(), err, out)
	}
	return out
}

// waitEvent waits for an event after since (of node, if not "") whose
// message contains what, and returns its message.
func waitEvent(t testing.TB, l *lab.Lab, node string, since time.Time, what string, d time.Duration) string {
	t.Helper()
	var msg string
	waitFor(t, d, "an event with "+what, func() bool {
		st, err := l.Status(context.Background())
		if err != nil {
			return false
		}
		for _, e := range st.Events {
			if e.Time.After(since) && (node == "" || e.Node == node) && strings.Contains(e.Msg, what) {
				msg = e.Node + ": " + e.Msg
				return true
			}
		}
		return false
	})
	return msg
}
