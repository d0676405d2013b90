//go:build e2e

package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/testsvc"
	"github.com/drover-dev/drover/reconcile"
)

// commitOverlap is commit with rollout.handover: overlap and the worker's
// second range at alt.
func (n *testNode) commitOverlap(alt int, blog, version string) string {
	n.t.Helper()
	spec := fmt.Sprintf(`version: 1
rollout: {healthTimeout: 15s, soak: 1s, drainTimeout: 5s, handover: overlap}
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
    altPort: %d
    health: {path: /healthz, interval: 100ms, successes: 2}
    routes: [{serverName: api.test, path: /}]
`, n.apiPort, alt)
	n.write("repo/drover.yaml", spec)
	n.write("repo/sites/blog/index.html", blog+"\n")
	n.write("repo/workers/api/server.js", workerJS)
	n.write("repo/workers/api/version.txt", version+"\n")
	n.git("-C", n.repo, "add", "-A")
	n.git("-C", n.repo, "commit", "-q", "-m", "blog "+blog+", api "+version)
	return n.git("-C", n.repo, "rev-parse", "HEAD")
}

// answers is what each port says to GET /version ("" for nothing).
func answers(ports ...int) []string {
	c := &http.Client{Timeout: 2 * time.Second}
	var out []string
	for _, p := range ports {
		resp, err := c.Get("http://127.0.0.1:" + strconv.Itoa(p) + "/version")
		if err != nil {
			out = append(out, "")
			continue
		}
		var b [64]byte
		k, _ := resp.Body.Read(b[:])
		resp.Body.Close()
		out = append(out, strings.TrimSpace(string(b[:k])))
	}
	return out
}

// TestAgentOverlapHandover: with rollout.handover: overlap, the agent (exec
// supervisor, real nginx) starts each new release on the worker's other
// range before it drains, serves it through nginx, and stops the old range
// after; a release that never gets healthy is halted with the node never
// drained; the next release flips back to the first range.
func TestAgentOverlapHandover(t *testing.T) {
	n := newTestNode(t)
	alt := testsvc.FreePorts(t, 2)
	first, second := []int{n.apiPort, n.apiPort + 1}, []int{alt, alt + 1}
	ports := append(append([]int{}, first...), second...)
	mustAnswer := func(when string, want ...string) {
		t.Helper()
		// The old range stops just after the node reports idle.
		deadline := time.Now().Add(10 * time.Second)
		for {
			got := answers(ports...)
			if strings.Join(got, "|") == strings.Join(want, "|") {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: ports %v answer %q, want %q", when, ports, got, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	a := n.commitOverlap(alt, "blog A", "api A")
	n.startAgent()
	n.waitLive(a)
	n.serves("blog A", "api A")
	mustAnswer("first deploy (restart: nothing to overlap)", "api A", "api A", "", "")

	b := n.commitOverlap(alt, "blog B", "api B")
	n.waitLive(b)
	n.serves("blog B", "api B")
	mustAnswer("after the overlap to B", "", "", "api B", "api B")
	// "settled" is logged once the old range has stopped, which is what
	// mustAnswer saw: a moment after it.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(n.agentLog.String(), "workers settled on the live release") && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	logs := n.agentLog.String()
	for _, want := range []string{"new release's workers healthy beside the live ones", "overlap memory", "workers settled on the live release"} {
		if !strings.Contains(logs, want) {
			t.Errorf("agent log lacks %q", want)
		}
	}
	// The new range was healthy before the drain began.
	if i, j := strings.Index(logs, "step=starting rev="+b[:12]), strings.Index(logs, "step=draining rev="+b[:12]); i < 0 || j < i {
		t.Errorf("starting at %d, draining at %d in the log: want starting first", i, j)
	}
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, b[:12]) && (strings.Contains(l, "step=") || strings.Contains(l, "overlap memory")) {
			t.Log(l)
		}
	}
	places, _ := os.ReadFile(filepath.Join(n.state, "workers.json"))
	if !strings.Contains(string(places), `"alt": true`) || !strings.Contains(string(places), b) {
		t.Errorf("workers.json does not place B on the second range:\n%s", places)
	}

	// C's workers crash at start: halted before any drain, B keeps serving.
	c := n.commitOverlap(alt, "blog C", "crash C")
	n.waitFor("C halted", func(st reconcile.Status) bool {
		return st.Target == c && st.Step == reconcile.StepFailed || strings.Contains(st.Error, "revision "+c[:12]+" is halted")
	})
	if logs := n.agentLog.String(); strings.Contains(logs, "step=draining rev="+c[:12]) {
		t.Errorf("the node drained for C, whose workers never got healthy")
	}
	n.serves("blog B", "api B")
	mustAnswer("after C's halt", "", "", "api B", "api B")

	d := n.commitOverlap(alt, "blog D", "api D")
	n.waitLive(d)
	n.serves("blog D", "api D")
	mustAnswer("after the overlap to D", "api D", "api D", "", "")
}
