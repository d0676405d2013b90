//go:build e2e

// Operating the cluster (issue 12): rollback, pin and unpin under load, the
// notifications the lab's receiver gets, each node's /metrics read by
// Prometheus's own text parser, and the durable history.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/drover-dev/drover/e2e/lab"
)

// m. v2 goes live; `drover rollback` takes every node back to v1 one at a
// time under load with no failed request; a commit made while pinned is
// prepared on every node but applied on none; `drover unpin` rolls the
// branch head out. Each step is announced once to the lab's receiver, and
// each node's metrics agree with the history.
func scenarioRollbackPinUnpin(t *scenarioT, l *lab.Lab) {
	ctx := context.Background()
	nodes := l.Nodes()[:3]
	v1 := nodes[0].Live()
	before := map[string]*nodeMetrics{}
	for _, n := range nodes {
		before[n.Name()] = scrape(t, n)
	}
	seen := len(notifications(t, l))
	load := l.StartLoad(ctx, clients, think, lab.DefaultTargets)
	w := watchLB(l)
	src := read(t, l, "workers/feedback-api/server.js")
	v2 := commit(t, l, "feedback-api v7 (to be rolled back)", map[string]string{"workers/feedback-api/server.js": setVersion(t, src, "7")})
	waitConverged(t, l, v2, 4*time.Minute)

	out, err := nodes[1].Run(ctx, "drover", "rollback", "--config", "/etc/drover/node.yaml", "--reason", "e2e: v7 misbehaves")
	if err != nil || !strings.Contains(out, "pinned to "+v1) {
		t.Fatalf("drover rollback: %v\n%s", err, out)
	}
	rolledBack := time.Now()
	waitConverged(t, l, v1, 4*time.Minute)
	t.Logf("rolled back to %s on every node in %s", v1[:12], time.Since(rolledBack).Round(time.Millisecond))
	if st := statusText(l); !strings.Contains(st, "e2e: v7 misbehaves") || !strings.Contains(st, v1[:12]) {
		t.Errorf("drover status does not show the pin and its reason:\n%s", st)
	}

	// A commit while pinned: every node fetches and prepares it, none
	// applies it.
	v3 := commit(t, l, "feedback-api v8, pushed while pinned", map[string]string{"workers/feedback-api/server.js": setVersion(t, src, "8")})
	waitFor(t, 2*time.Minute, "every node prepared "+v3[:12]+" ahead", func() bool {
		for _, n := range nodes {
			prepared := false
			for _, line := range strings.Split(n.Journal("drover.service", 300), "\n") {
				prepared = prepared || strings.Contains(line, "branch head prepared") && strings.Contains(line, v3[:12])
			}
			if !prepared {
				return false
			}
		}
		return true
	})
	drainsBefore := w.snapshot().left
	time.Sleep(3 * time.Second) // a poll's worth: still nobody moves
	for _, n := range nodes {
		if live := n.Live(); live != v1 {
			t.Errorf("%s went live on %s while pinned to %s", n.Name(), live, v1[:12])
		}
	}
	if now := w.snapshot().left; fmt.Sprint(now) != fmt.Sprint(drainsBefore) {
		t.Errorf("nodes left the LB while pinned with nothing to do: %v, then %v", drainsBefore, now)
	}

	if out, err := nodes[2].Run(ctx, "drover", "unpin", "--config", "/etc/drover/node.yaml"); err != nil {
		t.Fatalf("drover unpin: %v\n%s", err, out)
	}
	waitConverged(t, l, v3, 4*time.Minute)
	res := stopLoad(t, l, load)
	lb := w.stop()
	t.Logf("load: %s; LB: %s", res, lb)
	if res.Failed > 0 {
		t.Errorf("%d of %d requests failed: %v", res.Failed, res.Requests, res.Errors)
	}
	if lb.maxOut > 1 {
		t.Errorf("%d nodes were out at once: %s", lb.maxOut, lb)
	}
	// v2, the rollback to v1 and v3: each node left the LB once for each.
	for _, n := range nodes {
		if got := lb.left[n.Name()]; got != 3 {
			t.Errorf("%s left the LB %d times, want 3 (v2, the rollback to v1, v3): %s", n.Name(), got, lb)
		}
	}
	for _, v := range []string{"7", "8"} {
		if res.Answers[`api-version {"version":"`+v+`","port":3000}`]+res.Answers[`api-version {"version":"`+v+`","port":3001}`] == 0 {
			t.Errorf("the load never saw feedback-api v%s: %v", v, res.Answers)
		}
	}

	// The notifications: once each, cluster-wide.
	got := notifications(t, l)[seen:]
	count := func(event, rev string) int {
		k := 0
		for _, n := range got {
			if n.Event == event && n.Revision == rev {
				k++
			}
		}
		return k
	}
	for _, want := range []struct{ event, rev string }{
		{"rollout.started", v2}, {"rollout.completed", v2},
		{"rolled.back", v1},
		{"rollout.started", v1}, {"rollout.completed", v1},
		{"unpinned", ""},
		{"rollout.started", v3}, {"rollout.completed", v3},
	} {
		if want.event == "unpinned" {
			k := 0
			for _, n := range got {
				if n.Event == "unpinned" {
					k++
				}
			}
			if k != 1 {
				t.Errorf("%d unpinned notifications, want 1", k)
			}
			continue
		}
		if k := count(want.event, want.rev); k != 1 {
			t.Errorf("%d %s notifications for %s, want exactly 1", k, want.event, want.rev[:12])
		}
	}
	for _, n := range got {
		if n.Event == "rolled.back" && n.Reason != "e2e: v7 misbehaves" {
			t.Errorf("the rollback's notification has reason %q", n.Reason)
		}
		if n.Event == "rollout.completed" && n.Duration <= 0 {
			t.Errorf("rollout.completed of %s without a duration: %+v", n.Revision[:12], n)
		}
	}
	pushed.outcome(v2, "rolled back")
	if t.Failed() {
		t.Logf("notifications since the scenario began:\n%s", notificationText(got))
	}

	// The history: v2 rolled back, v1 went live again, v3 live.
	hist := history(t, l)
	outcome := func(rev string) string {
		for _, r := range hist {
			if r.Rev == rev {
				return r.Outcome
			}
		}
		return "(missing)"
	}
	if o := outcome(v2); o != "rolled back" {
		t.Errorf("history: %s is %q, want rolled back", v2[:12], o)
	}
	if o := outcome(v3); o != "live" {
		t.Errorf("history: %s is %q, want live", v3[:12], o)
	}
	if r := find(hist, v1); r == nil || !hasAction(r, "pinned", "e2e: v7 misbehaves") {
		t.Errorf("history does not record the pin of %s with its reason: %+v", v1[:12], r)
	}

	// Each node's metrics, read by Prometheus's parser, agree: three more
	// rollouts went live, the live revision is v3, and the drained time
	// the histogram added is what the history says of those three.
	for _, n := range nodes {
		after := scrape(t, n)
		b := before[n.Name()]
		if after.liveRevision != v3 {
			t.Errorf("%s: drover_live_revision_info names %q, want %s", n.Name(), after.liveRevision, v3)
		}
		if d := after.rolloutsLive - b.rolloutsLive; d != 3 {
			t.Errorf("%s: drover_rollouts_total{outcome=\"live\"} grew by %v, want 3", n.Name(), d)
		}
		if d := after.drainedCount - b.drainedCount; d != 3 {
			t.Errorf("%s: drover_drained_seconds counted %d more, want 3", n.Name(), d)
		}
		var want time.Duration
		for _, rev := range []string{v2, v1, v3} {
			if r := find(hist, rev); r != nil {
				for _, run := range r.Nodes {
					if run.Node == n.Name() {
						want += time.Duration(run.Drained)
					}
				}
			}
		}
		sum := time.Duration((after.drainedSum - b.drainedSum) * float64(time.Second))
		t.Logf("%s: drained %s in all for the three rollouts (metrics), history %s", n.Name(), sum.Round(time.Millisecond), want.Round(time.Millisecond))
		if diff := sum - want; diff < -100*time.Millisecond || diff > 100*time.Millisecond {
			t.Errorf("%s: the metrics' drained time %s differs from the history's %s", n.Name(), sum, want)
		}
	}
}

// z. After every other scenario (a Sentinel failover, a killed node, agent
// restarts and a package upgrade among them), `drover history` lists every
// revision the scenarios pushed, in order, each with its outcome: the halted
// ones halted, the one rolled back rolled back, the last one live, every
// other superseded; and every node that runs has a record of going live on
// the last one.
func scenarioHistory(t *scenarioT, l *lab.Lab) {
	hist := history(t, l)
	revs := pushed.list()
	if len(revs) == 0 {
		t.Fatal("no revision was pushed")
	}
	last := revs[len(revs)-1].rev
	for _, p := range revs {
		want := p.outcome
		switch {
		case want != "":
		case p.rev == last:
			want = "live"
		default:
			want = "superseded"
		}
		r := find(hist, p.rev)
		switch {
		case r == nil:
			t.Errorf("history lacks %s (%s)", p.rev[:12], p.msg)
		case r.Outcome != want && !(want == "halted" && strings.HasPrefix(r.Outcome, "halted: ")):
			t.Errorf("history: %s (%s) is %q, want %q", p.rev[:12], p.msg, r.Outcome, want)
		case r.Subject != p.msg:
			t.Errorf("history: %s has subject %q, want %q", p.rev[:12], r.Subject, p.msg)
		}
	}
	// Newest first, in the order they were pushed.
	var order []string
	for _, r := range hist {
		for _, p := range revs {
			if r.Rev == p.rev {
				order = append(order, r.Rev)
			}
		}
	}
	for i := range order {
		if want := revs[len(revs)-1-i].rev; order[i] != want {
			t.Errorf("history lists %s at %d, want %s (newest first)", order[i][:12], i, want[:12])
			break
		}
	}
	if r := find(hist, last); r != nil {
		for _, n := range l.Nodes() {
			if !n.Running() {
				continue
			}
			ok := false
			for _, run := range r.Nodes {
				ok = ok || run.Node == n.Name() && run.Live != ""
			}
			if !ok {
				t.Errorf("history has no record of %s going live on %s: %+v", n.Name(), last[:12], r.Nodes)
			}
		}
	}
	t.Logf("history lists all %d revisions the scenarios pushed, with their outcomes", len(revs))
}

// pushed records the revisions the scenarios pushed, and the outcomes they
// expect of those that did not simply go live.
var pushed pushLog

type pushLog struct {
	mu   sync.Mutex
	revs []pushedRev
}

type pushedRev struct{ rev, msg, outcome string }

func (p *pushLog) add(rev, msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.revs = append(p.revs, pushedRev{rev: rev, msg: msg})
}

func (p *pushLog) outcome(rev, outcome string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range p.revs {
		if p.revs[i].rev == rev {
			p.revs[i].outcome = outcome
		}
	}
}

func (p *pushLog) list() []pushedRev {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.revs)
}

// --- notifications, history, metrics ---------------------------------------

func notifications(t testing.TB, l *lab.Lab) []lab.Notification {
	t.Helper()
	ns, err := l.Notifications()
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

func notificationText(ns []lab.Notification) string {
	var b strings.Builder
	for _, n := range ns {
		fmt.Fprintf(&b, "  %s %s %s %s\n", n.Time.Format(time.TimeOnly), n.ID, n.Event, n.Text)
	}
	return b.String()
}

// histRevision is one revision of `drover history -o json`.
type histRevision struct {
	Rev     string `json:"rev"`
	Subject string `json:"subject"`
	Outcome string `json:"outcome"`
	Nodes   []struct {
		Node       string `json:"node"`
		Live       string `json:"live"`
		Failed     string `json:"failed"`
		Drained    int64  `json:"drainedNs"`
		RolledBack bool   `json:"rolledBack"`
	} `json:"nodes"`
	Halt *struct {
		Reason string `json:"reason"`
	} `json:"halt"`
	Canary *struct {
		Node   string `json:"node"`
		State  string `json:"state"`
		Reason string `json:"reason"`
	} `json:"canary"`
	Actions []struct {
		What   string `json:"what"`
		By     string `json:"by"`
		Reason string `json:"reason"`
	} `json:"actions"`
}

func history(t testing.TB, l *lab.Lab) []histRevision {
	t.Helper()
	for _, n := range l.Nodes() {
		if !n.Running() {
			continue
		}
		out, err := n.Run(context.Background(), "drover", "history", "--config", "/etc/drover/node.yaml", "-n", "500", "-o", "json")
		if err != nil {
			t.Fatalf("drover history on %s: %v\n%s", n.Name(), err, out)
		}
		var revs []histRevision
		if err := json.Unmarshal([]byte(out), &revs); err != nil {
			t.Fatalf("drover history -o json: %v\n%.2000s", err, out)
		}
		return revs
	}
	t.Fatal("no node is running")
	return nil
}

func find(hist []histRevision, rev string) *histRevision {
	for i := range hist {
		if hist[i].Rev == rev {
			return &hist[i]
		}
	}
	return nil
}

func hasAction(r *histRevision, what, reason string) bool {
	for _, a := range r.Actions {
		if a.What == what && a.Reason == reason {
			return true
		}
	}
	return false
}

// nodeMetrics are the figures the scenarios compare, from one scrape.
type nodeMetrics struct {
	liveRevision string
	rolloutsLive float64
	drainedCount uint64
	drainedSum   float64
}

// scrape reads n's /metrics with Prometheus's own text parser.
func scrape(t testing.TB, n *lab.Node) *nodeMetrics {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + n.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", n.Name(), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("scrape %s: %s: %s", n.Name(), resp.Status, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse %s's metrics: %v", n.Name(), err)
	}
	m := &nodeMetrics{}
	label := func(x *dto.Metric, name string) string {
		for _, lp := range x.GetLabel() {
			if lp.GetName() == name {
				return lp.GetValue()
			}
		}
		return ""
	}
	if f := fams["drover_live_revision_info"]; f != nil {
		for _, x := range f.GetMetric() {
			if x.GetGauge().GetValue() == 1 {
				m.liveRevision = label(x, "revision")
			}
		}
	}
	if f := fams["drover_rollouts_total"]; f != nil {
		for _, x := range f.GetMetric() {
			if label(x, "outcome") == "live" {
				m.rolloutsLive = x.GetCounter().GetValue()
			}
		}
	}
	if f := fams["drover_drained_seconds"]; f != nil && len(f.GetMetric()) == 1 {
		h := f.GetMetric()[0].GetHistogram()
		m.drainedCount, m.drainedSum = h.GetSampleCount(), h.GetSampleSum()
	}
	for _, name := range []string{"drover_live_revision_info", "drover_rollouts_total", "drover_drained_seconds"} {
		if fams[name] == nil {
			t.Errorf("%s's /metrics has no %s", n.Name(), name)
		}
	}
	return m
}
