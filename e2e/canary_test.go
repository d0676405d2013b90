//go:build e2e

// The canary (issue 14) on the lab, under load through the LB that does not
// retry: a good revision is promoted after the canary's duration; one whose
// API answers 500 on 5% of requests (and passes /healthz) is failed on the
// canary's own traffic, halted, rolled back, and served by no other node.
package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/cluster"
	"github.com/drover-dev/drover/e2e/lab"
)

const canaryDuration = 20 * time.Second

// withCanary returns the lab's drover.yaml with rollout.canary set to c,
// or without it when c is "".
func withCanary(t testing.TB, spec, c string) string { return withRollout(t, spec, "canary", c) }

// p. The canary: on, a good revision goes to one node first, the others
// wait for the canary's duration and then follow; a revision whose
// /api/version answers 500 on 5% of requests is failed on the canary, which
// rolls back; no other node ever answers from it. p runs with the default
// rollout.handover (auto: here the overlap, new instances started beside
// the live ones before each drain), the only scenario that does; the
// manual canary after it turns the canary off and restart on again.
func scenarioCanary(t *scenarioT, l *lab.Lab) {
	ctx := context.Background()
	nodes := l.Nodes()[:3]
	src := read(t, l, "workers/feedback-api/server.js")

	// A good revision, with the canary turned on.
	load := l.StartLoad(ctx, clients, think, lab.DefaultTargets)
	w := watchLB(l)
	pushed := time.Now()
	good := commit(t, l, "feedback-api v11 behind a canary", map[string]string{
		"drover.yaml":                    withHandover(t, withCanary(t, read(t, l, "drover.yaml"), "{duration: 20s, maxErrorRate: 1%, minRequests: 200}"), ""),
		"workers/feedback-api/server.js": setVersion(t, src, "11"),
	})
	var canary string
	waitFor(t, 3*time.Minute, "a canary serving "+short(good), func() bool {
		st, err := l.Status(ctx)
		if err != nil {
			return false
		}
		waiting := 0
		for _, n := range st.Nodes {
			if n.Step == "canary" && n.Rev == good {
				canary = n.Node
			}
			if n.Step == "waiting" && strings.Contains(n.Canary, "canary on") {
				waiting++
			}
		}
		return canary != "" && waiting == 2
	})
	t.Logf("%s is the canary of %s; the other two wait for it", canary, short(good))
	waitConverged(t, l, good, 4*time.Minute)
	took := time.Since(pushed)
	res := stopLoad(t, l, load)
	lb := w.stop()
	t.Logf("good revision behind a %s canary: push → 3 nodes converged in %s; load: %s; LB: %s", canaryDuration, took.Round(time.Millisecond), res, lb)
	if res.Failed > 0 {
		t.Errorf("%d of %d requests failed: %v", res.Failed, res.Requests, res.Errors)
	}
	// The hold, from the cluster's events: no other node drained for the
	// revision until the canary had served it for the canary's duration.
	events, err := l.Events(ctx, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var served, followed time.Time
	for _, e := range events {
		switch {
		case e.Rev != good || e.Step != "draining" && e.Step != "undraining":
		case e.Node == canary && e.Step == "undraining" && served.IsZero():
			served = e.Time
		case e.Node != canary && e.Step == "draining" && followed.IsZero():
			followed = e.Time
		}
	}
	t.Logf("the canary served %s from %s; the next node drained %s later", short(good), served.Format(time.TimeOnly), followed.Sub(served).Round(time.Millisecond))
	if served.IsZero() || followed.IsZero() || followed.Sub(served) < canaryDuration {
		t.Errorf("another node drained for %s at %s, %s after the canary began serving it at %s; want at least the canary's %s",
			short(good), followed.Format(time.TimeOnly), followed.Sub(served), served.Format(time.TimeOnly), canaryDuration)
	}
	if c := find(history(t, l), good); c == nil || c.Canary == nil || (c.Canary.State != "passed" && c.Canary.State != "promoted") {
		t.Errorf("history does not record the canary of %s as passed: %+v", short(good), c)
	}

	// A bad revision: 500 on 5% of /api/version, /healthz fine.
	load = l.StartLoad(ctx, clients, think, lab.DefaultTargets)
	w = watchLB(l)
	bad := commit(t, l, "feedback-api v12: 5% of API answers are 500", map[string]string{
		"workers/feedback-api/server.js": strings.Replace(setVersion(t, src, "12"),
			`if (path === "/version") {`,
			`if (path === "/version" && Math.random() < 0.05) {
    res.writeHead(500, { "Content-Type": "text/plain" });
    return res.end("bad luck\n");
  }
  if (path === "/version") {`, 1),
	})
	var badCanary string
	waitFor(t, 3*time.Minute, "a canary serving "+short(bad), func() bool {
		for _, n := range nodes {
			if n.Live() == bad {
				badCanary = n.Name()
				return true
			}
		}
		return false
	})
	switched := time.Now()
	reason := waitHalted(t, l, bad, 3*time.Minute)
	decided := time.Since(switched)
	t.Logf("halted on the canary %s %s after it switched: %s", badCanary, decided.Round(time.Millisecond), firstLine(reason))
	waitAllOn(t, l, good, 2*time.Minute)
	time.Sleep(3 * time.Second) // nobody else tries
	res = load.Stop()
	lb = w.stop()
	checkNamed(t, res)
	checkAnswersExcept(t, l, res, badCanary, bad)
	t.Logf("load: %s; LB: %s", res, lb)
	for node, changes := range res.Changes {
		for _, c := range changes {
			if c.Rev == bad && node != badCanary {
				t.Errorf("%s answered from the failed revision %s at %s", node, short(bad), c.At.Format("15:04:05.000"))
			}
		}
	}
	// The bad answers: the 500s the canary gave, within its share of the
	// traffic for the time it took to decide.
	bad500 := int64(res.Errors["api-version: status 500"])
	rate := float64(res.Requests) / res.Took.Seconds()
	bound := int64(rate / 3 * decided.Seconds())
	t.Logf("bad answers served: %d (500s from the canary), of %d answers from it; bound (its share of the traffic × %s to decide) %d",
		bad500, res.ByRevision[bad], decided.Round(time.Millisecond), bound)
	if res.Failed != bad500 {
		t.Errorf("%d requests failed, %d of them the revision's own 500s: %v", res.Failed, bad500, res.Errors)
	}
	if bad500 > bound {
		t.Errorf("%d bad answers, more than the canary's share during the decision (%d)", bad500, bound)
	}
	if lb.maxOut > 1 || len(lb.left) != 1 || lb.left[badCanary] == 0 {
		t.Errorf("LB: %s; want only the canary %s out (for its rollout and its rollback)", lb, badCanary)
	}
	if r := find(history(t, l), bad); r == nil || r.Canary == nil || r.Canary.State != "failed" || !strings.HasPrefix(r.Outcome, "halted") {
		t.Errorf("history does not record the canary of %s as failed and the revision halted: %+v", short(bad), r)
	}

	scenarioCanaryManual(t, l, src)
}

// The manual canary, under load: the fix goes to a canary with promote:
// manual; its agent is SIGKILLed while it observes, and no other node takes
// the revision until the restarted canary has judged again, passed, and an
// operator ran drover promote. The next revision is stopped by drover
// abort mid-canary: halted, the canary rolled back (drained first), served
// by no other node. Then the canary goes off for the scenarios after this.
func scenarioCanaryManual(t *scenarioT, l *lab.Lab, src string) {
	ctx := context.Background()
	const manual = "{duration: 10s, maxErrorRate: 1%, minRequests: 100, promote: manual}"
	load := l.StartLoad(ctx, clients, think, lab.DefaultTargets)
	w := watchLB(l)
	fixed := commit(t, l, "feedback-api v12, fixed; a manual canary", map[string]string{
		"drover.yaml":                    withCanary(t, read(t, l, "drover.yaml"), manual),
		"workers/feedback-api/server.js": setVersion(t, src, "12"),
	})
	canary := waitCanary(t, l, fixed, "observing")
	victim := l.Node(canary)
	if err := victim.KillAgent(ctx); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	t.Logf("SIGKILLed the agent of the canary %s mid-canary", canary)
	// The restarted agent judges again from the start, passes, and waits
	// for the operator; the others wait all along.
	if again := waitCanary(t, l, fixed, "passed"); again != canary {
		t.Fatalf("the canary of %s moved from %s to %s", short(fixed), canary, again)
	}
	time.Sleep(3 * time.Second) // a passed manual canary holds the others
	for _, n := range l.Nodes()[:3] {
		if n.Name() != canary && n.Live() == fixed {
			t.Fatalf("%s took %s before drover promote", n.Name(), short(fixed))
		}
	}
	for _, e := range events(t, l) {
		if e.Rev == fixed && e.Node != canary && e.Step == "draining" {
			t.Fatalf("%s drained for %s at %s, before drover promote", e.Node, short(fixed), e.Time.Format(time.TimeOnly))
		}
		if e.Rev == fixed && e.Node == canary && e.Step == "canary" && e.Time.After(killed) {
			killed = time.Time{} // the restarted agent is the canary again
		}
	}
	if !killed.IsZero() {
		t.Errorf("no canary event from %s's restarted agent", canary)
	}
	promoter := l.Nodes()[0]
	if promoter.Name() == canary {
		promoter = l.Nodes()[1]
	}
	out, err := promoter.Run(ctx, "drover", "promote", "--config", "/etc/drover/node.yaml", fixed)
	if err != nil {
		t.Fatalf("drover promote: %v\n%s", err, out)
	}
	t.Logf("drover promote: %s", strings.TrimSpace(out))
	waitConverged(t, l, fixed, 4*time.Minute)
	if c := find(history(t, l), fixed); c == nil || c.Canary == nil || c.Canary.State != "promoted" {
		t.Errorf("history does not record the canary of %s as promoted: %+v", short(fixed), c)
	}

	// drover abort, mid-canary.
	aborted := commit(t, l, "feedback-api v13, aborted on its canary", map[string]string{
		"workers/feedback-api/server.js": setVersion(t, src, "13"),
	})
	abortCanary := waitCanary(t, l, aborted, "observing")
	out, err = promoter.Run(ctx, "drover", "abort", "--config", "/etc/drover/node.yaml", aborted)
	if err != nil {
		t.Fatalf("drover abort: %v\n%s", err, out)
	}
	t.Logf("drover abort: %s", strings.TrimSpace(out))
	reason := waitHalted(t, l, aborted, 2*time.Minute)
	waitAllOn(t, l, fixed, 2*time.Minute)
	res := load.Stop()
	lb := w.stop()
	t.Logf("halted by drover abort: %s; load: %s; LB: %s", firstLine(reason), res, lb)
	checkNamed(t, res)
	// The aborted canary answered from its revision, verified, until the
	// abort: the only answers from a halted revision allowed.
	checkAnswersExcept(t, l, res, abortCanary, aborted)
	if res.Failed > 0 {
		t.Errorf("%d of %d requests failed: %v", res.Failed, res.Requests, res.Errors)
	}
	for node, changes := range res.Changes {
		for _, c := range changes {
			if c.Rev == aborted && node != abortCanary {
				t.Errorf("%s answered from the aborted revision %s at %s", node, short(aborted), c.At.Format("15:04:05.000"))
			}
		}
	}
	if lb.maxOut > 1 {
		t.Errorf("%d nodes were out at once: %s", lb.maxOut, lb)
	}
	if r := find(history(t, l), aborted); r == nil || r.Canary == nil || r.Canary.State != "aborted" || !strings.HasPrefix(r.Outcome, "halted") {
		t.Errorf("history does not record the canary of %s as aborted and the revision halted: %+v", short(aborted), r)
	}

	// The canary off again for the scenarios after this one.
	off := commit(t, l, "feedback-api v13; no canary, handover restart again", map[string]string{
		"drover.yaml":                    withHandover(t, withCanary(t, read(t, l, "drover.yaml"), ""), "restart"),
		"workers/feedback-api/server.js": setVersion(t, src, "13"),
	})
	waitConverged(t, l, off, 4*time.Minute)
}

// waitCanary waits until a node runs rev's canary with its record in state,
// and returns its name.
func waitCanary(t testing.TB, l *lab.Lab, rev, state string) string {
	t.Helper()
	var canary string
	waitFor(t, 3*time.Minute, "a canary of "+short(rev)+" "+state, func() bool {
		st, err := l.Status(context.Background())
		if err != nil {
			return false
		}
		for _, n := range st.Nodes {
			if n.Step == "canary" && n.Rev == rev && strings.Contains(n.Canary, ": "+state) {
				canary = n.Node
				return true
			}
		}
		return false
	})
	return canary
}

func events(t testing.TB, l *lab.Lab) []cluster.Event {
	t.Helper()
	es, err := l.Events(context.Background(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

func firstLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}
