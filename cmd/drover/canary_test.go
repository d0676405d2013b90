//go:build e2e

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drover-dev/drover/cluster"
	"github.com/drover-dev/drover/internal/testsvc"
	"github.com/drover-dev/drover/reconcile"
)

// commitCanary writes a revision of the blog site with rollout.canary; with
// broken, the site has no index.html and is an SPA, so nginx answers 500 (an
// internal redirection cycle) to every page but its health file, which
// passes its checks: a revision that passes health checks and fails users.
func (tc *testCluster) commitCanary(blog string, broken bool, canary string) string {
	r := tc.repo
	index := filepath.Join(r.dir, "repo/sites/blog/index.html")
	os.Remove(index)
	r.write("repo/drover.yaml", fmt.Sprintf(`version: 1
rollout:
  healthTimeout: 5s
  soak: 1s
  drainTimeout: 2s
  progressDeadline: 3m
  canary: %s
sites:
  - name: blog
    serverNames: [blog.test]
    source: sites/blog
    spa: %v
    health: {path: /ok.txt}
`, canary, broken))
	r.write("repo/sites/blog/ok.txt", "ok\n")
	if !broken {
		r.write("repo/sites/blog/index.html", blog+"\n")
	}
	r.git("-C", r.repo, "add", "-A")
	r.git("-C", r.repo, "commit", "-q", "-m", blog)
	return r.git("-C", r.repo, "rev-parse", "HEAD")
}

const autoCanary = "{duration: 10s, minRequests: 20, maxErrorRate: 10%}"

// users send requests to every node's nginx in turn, as an LB would, and
// count the 5xx each node answered.
type users struct {
	stop   context.CancelFunc
	wg     sync.WaitGroup
	errors []atomic.Int64
	total  atomic.Int64
}

func (tc *testCluster) startUsers(path string) *users {
	ctx, cancel := context.WithCancel(context.Background())
	u := &users{stop: cancel, errors: make([]atomic.Int64, len(tc.nodes))}
	u.wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			k := i % len(tc.nodes)
			if code, _ := tc.nodes[k].get("blog.test", path); code >= 500 {
				u.errors[k].Add(1)
			}
			u.total.Add(1)
			time.Sleep(5 * time.Millisecond)
		}
	})
	tc.t.Cleanup(func() { cancel(); u.wg.Wait() })
	return u
}

func (tc *testCluster) canary(rev string) reconcile.Canary {
	c, _, _ := tc.cl.CanaryOf(context.Background(), rev)
	return c
}

// TestClusterCanary runs three real agents on real Redis and real nginx:
// a revision that passes its health checks but answers 500 to users is
// judged on the canary's own traffic log, halted there and rolled back,
// drained first, and no other node ever switches to it; a good revision
// is promoted after the canary's duration and only then taken by the
// others; drover status and drover history show the decisions.
func TestClusterCanary(t *testing.T) {
	t.Parallel() // a cluster's agents mostly wait on their LB and lock: two clusters share the CPUs
	r := testsvc.StartRedis(t)
	tc := newTestCluster(t, 3, clusterSection(r.Addr), cluster.Config{Addrs: []string{r.Addr}})
	a := tc.commit("blog A", "/")
	tc.start()
	tc.waitAll(a, 2*time.Minute)

	u := tc.startUsers("/posts/1")
	bad := tc.commitCanary("blog bad", true, autoCanary)
	deadline := time.Now().Add(90 * time.Second)
	for tc.canary(bad).State != reconcile.CanaryFailed {
		if time.Now().After(deadline) {
			t.Fatalf("canary of the bad revision not failed: %+v", tc.canary(bad))
		}
		time.Sleep(100 * time.Millisecond)
	}
	c := tc.canary(bad)
	if !strings.Contains(c.Reason, "above maxErrorRate 10%") || c.Requests < 50 {
		t.Errorf("failed canary %+v", c)
	}
	if reason, halted, err := tc.cl.Halted(context.Background(), bad); err != nil || !halted || !strings.Contains(reason, "canary failed") {
		t.Fatalf("bad revision halted %v (%q, %v)", halted, reason, err)
	}
	tc.waitAll(a, time.Minute) // the canary is back on A
	time.Sleep(3 * time.Second)
	u.stop()
	u.wg.Wait()
	switched := 0
	for i, n := range tc.nodes {
		switched += strings.Count(n.logs(), "step=switching rev="+bad[:12])
		if n.name != c.Node && u.errors[i].Load() != 0 {
			t.Errorf("%s, never the canary, answered %d 5xx", n.name, u.errors[i].Load())
		}
		if n.name == c.Node {
			t.Logf("the canary %s answered %d 5xx of the users' %d requests (a third of them its)", n.name, u.errors[i].Load(), u.total.Load())
		}
	}
	if switched != 1 {
		t.Fatalf("%d nodes switched to the bad revision, want the canary alone", switched)
	}
	canaryLog := ""
	for _, n := range tc.nodes {
		if n.name == c.Node {
			canaryLog = n.logs()
		}
	}
	// The canary drained before it rolled back.
	tail := canaryLog[strings.Index(canaryLog, "step=canary rev="+bad[:12]):]
	iDrain, iRoll := strings.Index(tail, "step=draining"), strings.Index(tail, "step=rolling-back")
	if iDrain < 0 || iRoll < 0 || iDrain > iRoll {
		t.Errorf("the canary did not drain before rolling back:\n%s", tail)
	}

	u = tc.startUsers("/")
	good := tc.commitCanary("blog good", false, autoCanary)
	tc.waitAll(good, 2*time.Minute)
	u.stop()
	u.wg.Wait()
	c = tc.canary(good)
	if c.State != reconcile.CanaryPromoted || !strings.Contains(c.Reason, "within limits") || c.Errors != 0 {
		t.Fatalf("good canary %+v", c)
	}
	for _, n := range tc.nodes {
		if n.name == c.Node {
			continue
		}
		for _, line := range strings.Split(n.logs(), "\n") {
			if !strings.Contains(line, "step=draining rev="+good[:12]) {
				continue
			}
			at, err := time.Parse(time.RFC3339, strings.Fields(strings.TrimPrefix(line, "time="))[0])
			if err != nil {
				t.Fatal(err)
			}
			if at.Before(c.Start.Add(10 * time.Second)) {
				t.Errorf("%s drained for the good revision at %s, before the canary's 10 s ended (%s)", n.name, at, c.Start)
			}
		}
	}
	out := runCLI(t, "status", "--config", tc.nodes[0].config)
	if !strings.Contains(out, "canary "+good[:12]+" canary on "+c.Node+": promoted") {
		t.Errorf("drover status lacks the good canary:\n%s", out)
	}
	out = runCLI(t, "history", "--config", tc.nodes[0].config)
	if !strings.Contains(out, "canary on "+c.Node+": promoted") || !strings.Contains(out, ": failed") {
		t.Errorf("drover history lacks the canaries:\n%s", out)
	}
}

// TestClusterCanaryManual: with promote: manual a passed canary holds the
// others (their status says on whom they wait) until drover promote; drover
// abort of the next one halts it and rolls its canary back.
func TestClusterCanaryManual(t *testing.T) {
	t.Parallel() // a cluster's agents mostly wait on their LB and lock: two clusters share the CPUs
	r := testsvc.StartRedis(t)
	tc := newTestCluster(t, 3, clusterSection(r.Addr), cluster.Config{Addrs: []string{r.Addr}})
	a := tc.commit("blog A", "/")
	tc.start()
	tc.waitAll(a, 2*time.Minute)

	manual := func(blog string) string {
		return tc.commitCanary(blog, false, "{duration: 10s, minRequests: 0, maxErrorRate: 10%, promote: manual}")
	}
	waitState := func(rev string, s reconcile.CanaryState) reconcile.Canary {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for {
			if c := tc.canary(rev); c.State == s {
				return c
			}
			if time.Now().After(deadline) {
				t.Fatalf("canary of %s is not %s: %+v", rev[:8], s, tc.canary(rev))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	b := manual("blog B")
	c := waitState(b, reconcile.CanaryPassed)
	time.Sleep(3 * time.Second) // passed, and nobody else moves
	out := runCLI(t, "status", "--config", tc.nodes[0].config)
	if strings.Count(out, "waiting "+b[:12]) != 2 || !strings.Contains(out, "canary "+b[:12]+" canary on "+c.Node+": passed") {
		t.Errorf("status while the manual canary waits:\n%s", out)
	}
	// The waiting nodes look every 5 s (reconcile's canaryTick).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		nodes, err := tc.cl.Nodes(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		waiting := 0
		for _, n := range nodes {
			if n.Node != c.Node && n.Rev == a && strings.HasPrefix(n.Canary, "waiting: canary on "+c.Node+": passed") {
				waiting++
			}
		}
		if waiting == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the others while the canary waits for promote: %+v", nodes)
		}
	}
	out = runCLI(t, "promote", "--config", tc.nodes[0].config, b)
	if !strings.Contains(out, "promoted "+b[:12]) {
		t.Errorf("promote said %q", out)
	}
	tc.waitAll(b, 2*time.Minute)
	if c := tc.canary(b); c.State != reconcile.CanaryPromoted {
		t.Fatalf("after promote: %+v", c)
	}

	d := manual("blog D")
	c = waitState(d, reconcile.CanaryPassed)
	out = runCLI(t, "abort", "--config", tc.nodes[1].config, d)
	if !strings.Contains(out, "aborted "+d[:12]) {
		t.Errorf("abort said %q", out)
	}
	if _, halted, _ := tc.cl.Halted(context.Background(), d); !halted {
		t.Fatal("abort did not halt the revision")
	}
	waitState(d, reconcile.CanaryAborted)
	tc.waitAll(b, time.Minute) // the canary rolled back
	switched := 0
	for _, n := range tc.nodes {
		switched += strings.Count(n.logs(), "step=switching rev="+d[:12])
	}
	if switched != 1 {
		t.Fatalf("%d nodes switched to the aborted revision, want the canary alone", switched)
	}
}
