package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/drover-dev/drover/nodestate"
)

// chanSink keeps what it is sent.
type chanSink struct {
	mu  sync.Mutex
	got []Event
}

func (s *chanSink) Name() string { return "test" }

func (s *chanSink) Send(_ context.Context, e Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, e)
	return nil
}

func (s *chanSink) events() []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

// fakeCluster is the cluster as an Alerter reads it.
type fakeCluster struct {
	mu     sync.Mutex
	nodes  []nodestate.NodeStatus
	err    error
	notice map[string]time.Time
	canary map[string]nodestate.Canary
}

func (c *fakeCluster) Nodes(context.Context) ([]nodestate.NodeStatus, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.nodes), c.err
}

func (c *fakeCluster) NoticeTime(_ context.Context, id string) (time.Time, error) {
	return c.notice[id], nil
}

func (c *fakeCluster) CanaryOf(_ context.Context, rev string) (nodestate.Canary, bool, error) {
	rec, ok := c.canary[rev]
	return rec, ok, nil
}

// forward is a node's statuses from idle on from to live on to, one second
// apart.
func forward(from, to string) []nodestate.Status {
	return []nodestate.Status{
		{Step: nodestate.StepIdle, Rev: from},
		{Step: nodestate.StepPreparing, Rev: from, Target: to},
		{Step: nodestate.StepWaiting, Rev: from, Target: to},
		{Step: nodestate.StepDraining, Rev: from, Target: to},
		{Step: nodestate.StepSwitching, Rev: from, Target: to},
		{Step: nodestate.StepVerifying, Rev: to, Target: to},
		{Step: nodestate.StepUndraining, Rev: to, Target: to},
		{Step: nodestate.StepIdle, Rev: to},
	}
}

// alertRun feeds an Alerter of node n1 in cluster prod the statuses, a
// second apart in the bubble's clock (the first change at 0 s), calls then,
// and returns the events the sink got.
func alertRun(t *testing.T, cl Cluster, steps []nodestate.Status, then func(a *Alerter)) []Event {
	t.Helper()
	var got []Event
	synctest.Test(t, func(t *testing.T) {
		sink := &chanSink{}
		n := Start(t.Context(), Config{Sinks: []Sink{sink}})
		defer n.Close()
		a := NewAlerter(n, cl, "prod", "n1", slog.New(slog.DiscardHandler))
		ctx := context.Background()
		for i := 1; i < len(steps); i++ {
			a.Observe(ctx, steps[i-1], steps[i])
			time.Sleep(time.Second)
		}
		if then != nil {
			then(a)
		}
		synctest.Wait()
		got = sink.events()
	})
	return got
}

func ids(es []Event) []string {
	var s []string
	for _, e := range es {
		s = append(s, e.ID)
	}
	return s
}

// TestAlerterRollout: a node's turn is started (on the drain) and, once
// every live node is on the revision, completed, both named by the
// revision and the one left; a node that still serves the old one holds
// the completion back, a silent one does not.
func TestAlerterRollout(t *testing.T) {
	const a, b = "aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"
	node := func(name, rev string, alive bool) nodestate.NodeStatus {
		return nodestate.NodeStatus{Status: nodestate.Status{Node: name, Rev: rev}, Alive: alive}
	}
	for _, c := range []struct {
		name string
		cl   Cluster
		want []string
	}{
		{"one node", nil, []string{"started:" + b + ":" + a, "completed:" + b + ":" + a}},
		{"last node", &fakeCluster{nodes: []nodestate.NodeStatus{node("n1", a, true), node("n2", b, true)}},
			[]string{"started:" + b + ":" + a, "completed:" + b + ":" + a}},
		{"another node to go", &fakeCluster{nodes: []nodestate.NodeStatus{node("n1", a, true), node("n2", a, true)}},
			[]string{"started:" + b + ":" + a}},
		{"the other node silent", &fakeCluster{nodes: []nodestate.NodeStatus{node("n1", a, true), node("n2", a, false)}},
			[]string{"started:" + b + ":" + a, "completed:" + b + ":" + a}},
		// Without the count of nodes, no completion: better none than early.
		{"nodes unreadable", &fakeCluster{err: errors.New("redis down")}, []string{"started:" + b + ":" + a}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := alertRun(t, c.cl, forward(a, b), nil)
			if !slices.Equal(ids(got), c.want) {
				t.Fatalf("events %q, want %q", ids(got), c.want)
			}
			for _, e := range got {
				if e.Cluster != "prod" || e.Node != "n1" || e.Revision != b {
					t.Errorf("%s: cluster %q node %q revision %q", e.ID, e.Cluster, e.Node, e.Revision)
				}
			}
			if len(got) == 2 {
				// Drained at 2 s, live at 6 s in the bubble's clock.
				if e := got[1]; e.Kind != KindCompleted || e.Duration != 4 || e.Text != "rollout of bbbbbbbbbbbb completed in 4s" {
					t.Errorf("completed: %+v", e)
				}
			}
		})
	}
}

// TestAlerterCompletedFromFirstStart: the completion's duration runs from
// the first node's start, as the cluster recorded its notice.
func TestAlerterCompletedFromFirstStart(t *testing.T) {
	// A minute before the bubble's clock starts (synctest: midnight UTC,
	// 2000-01-01).
	start := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC).Add(-time.Minute)
	cl := &fakeCluster{notice: map[string]time.Time{"started:B:A": start}}
	got := alertRun(t, cl, forward("A", "B"), nil)
	if len(got) != 2 || got[1].Duration != 60+6 {
		t.Fatalf("events %+v, want a completion 66 s after the first start", got)
	}
}

// TestAlerterHaltGuardCanary: a halt while preparing names the rollout
// that would have started; the guard taking the node out and a canary's
// decision are events of their own.
func TestAlerterHaltGuardCanary(t *testing.T) {
	t.Run("halt", func(t *testing.T) {
		steps := []nodestate.Status{{Step: nodestate.StepIdle, Rev: "A"}, {Step: nodestate.StepPreparing, Rev: "A", Target: "B"}}
		got := alertRun(t, nil, steps, func(a *Alerter) { a.Halt(context.Background(), "B", "drover.yaml:3: bad\nmore") })
		if len(got) != 1 || got[0].ID != "halted:B:A" || got[0].Kind != KindHalted || got[0].Error != "drover.yaml:3: bad\nmore" ||
			got[0].Text != "rollout of B halted on n1: drover.yaml:3: bad …" {
			t.Fatalf("events %+v", got)
		}
	})
	t.Run("guard out", func(t *testing.T) {
		since := time.Unix(100, 0)
		steps := []nodestate.Status{{Step: nodestate.StepIdle, Rev: "A", Health: nodestate.HealthFailing},
			{Step: nodestate.StepIdle, Rev: "A", Health: nodestate.HealthOut, HealthWhy: "web: 502", HealthSince: since}}
		got := alertRun(t, nil, steps, nil)
		if len(got) != 1 || got[0].ID != "out:n1:100000000000" || got[0].Kind != KindGuardOut || got[0].Text != "n1 is out of the load balancer: web: 502" {
			t.Fatalf("events %+v", got)
		}
	})
	t.Run("canary passed", func(t *testing.T) {
		cl := &fakeCluster{canary: map[string]nodestate.Canary{"B": {Rev: "B", Node: "n1", State: nodestate.CanaryPassed, Reason: "0 errors"}}}
		steps := []nodestate.Status{{Step: nodestate.StepCanary, Rev: "B", Target: "B", Canary: "canary on n1: observing"},
			{Step: nodestate.StepCanary, Rev: "B", Target: "B", Canary: "canary on n1: passed, 0 errors"}}
		got := alertRun(t, cl, steps, nil)
		if len(got) != 1 || got[0].ID != "canary:B:passed" || got[0].Kind != KindCanary ||
			!strings.HasSuffix(got[0].Text, "; drover promote B releases the other nodes") {
			t.Fatalf("events %+v", got)
		}
	})
}

// TestAlerterWatchSilent: a node whose heartbeat expired is told of once
// per silence, however many times it is seen silent: each poll names the
// silence by its last beat, which the claim dedupes.
func TestAlerterWatchSilent(t *testing.T) {
	beat := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cl := &fakeCluster{nodes: []nodestate.NodeStatus{
		{Status: nodestate.Status{Node: "n1", Rev: "A"}, Alive: true},
		{Status: nodestate.Status{Node: "n2", Rev: "A"}, Beat: beat},
	}}
	var got []Event
	synctest.Test(t, func(t *testing.T) {
		sink := &chanSink{}
		claim := &memClaim{seen: map[string]bool{}}
		n := Start(t.Context(), Config{Sinks: []Sink{sink}, Claim: claim})
		defer n.Close()
		a := NewAlerter(n, cl, "prod", "n1", slog.New(slog.DiscardHandler))
		ctx, cancel := context.WithTimeout(t.Context(), 35*time.Second)
		defer cancel()
		a.WatchSilent(ctx, 10*time.Second)
		synctest.Wait()
		got = sink.events()
	})
	if len(got) != 1 || got[0].ID != fmt.Sprintf("silent:n2:%d", beat.UnixNano()) || got[0].Kind != KindSilent ||
		got[0].Text != "n2 is silent since 2026-01-02T03:04:05Z (heartbeat expired)" {
		t.Fatalf("events %+v", got)
	}
}
