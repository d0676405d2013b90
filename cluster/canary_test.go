package cluster

import (
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/testsvc"
	"github.com/drover-dev/drover/nodestate"
	"github.com/drover-dev/drover/reconcile"
	"github.com/drover-dev/drover/traffic"
)

var _ reconcile.Canaries = (*Cluster)(nil)

const (
	oldRev = "1111111111111111111111111111111111111111"
	newRev = "2222222222222222222222222222222222222222"
)

// The baseline is the other live nodes still on the old revision, over the
// canary's minutes: not the canary itself, not a node already on the new
// revision, not a silent node, and a forged record cannot push the rate
// above 1 or the decoder past its caps.
func TestTrafficBaseline(t *testing.T) {
	r := testsvc.StartRedis(t)
	cfg := Config{Addrs: []string{r.Addr}, Cluster: "t", HeartbeatTTL: 600 * time.Millisecond}
	ctx := t.Context()
	t0 := time.Now().Truncate(time.Minute).Add(-5 * time.Minute)
	snap := func(rev string, n, e uint64) traffic.Snapshot {
		s := traffic.Snapshot{Rev: rev, At: time.Now()}
		for i := range 6 {
			s.Minutes = append(s.Minutes, traffic.Minute{Start: t0.Add(time.Duration(i)*time.Minute).Unix() / 60, Counts: traffic.Counts{Requests: n, Errors: e}})
		}
		s.Targets = map[string]traffic.Target{"worker:api": {Counts: traffic.Counts{Requests: n, Errors: e}}}
		return s
	}
	nodes := map[string]struct {
		rev  string
		n, e uint64
	}{"canary": {newRev, 100, 50}, "old1": {oldRev, 100, 1}, "old2": {oldRev, 200, 0}, "new2": {newRev, 100, 90}, "dead": {oldRev, 1000, 1000}}
	cs := map[string]*Cluster{}
	for name, v := range nodes {
		c := open(t, cfg, name)
		cs[name] = c
		if err := c.Report(ctx, nodestate.Status{Node: name, Rev: v.rev, Step: nodestate.StepIdle}); err != nil {
			t.Fatal(err)
		}
		if err := c.PublishTraffic(ctx, snap(v.rev, v.n, v.e)); err != nil {
			t.Fatal(err)
		}
	}
	rdb(t, r.Addr).Del(ctx, cs["dead"].key("alive", "dead"))

	from, to := t0.Add(2*time.Minute), t0.Add(4*time.Minute+30*time.Second) // 3 minutes
	got, err := cs["canary"].Baseline(ctx, newRev, from, to)
	if err != nil {
		t.Fatal(err)
	}
	if want := (traffic.Counts{Requests: 3 * 300, Errors: 3 * 1}); got.Total != want {
		t.Fatalf("baseline %+v, want %+v (old1 and old2 over 3 minutes)", got.Total, want)
	}
	if want := (traffic.Counts{Requests: 300, Errors: 1}); len(got.Targets) != 1 || got.Targets["worker:api"] != want {
		t.Fatalf("baseline by target %+v, want worker:api %+v (old1 and old2's snapshots)", got.Targets, want)
	}
	s, ok, err := cs["canary"].TrafficOf(ctx, "old2", oldRev)
	if err != nil || !ok || s.Node != "old2" || len(s.Minutes) != 6 {
		t.Fatalf("traffic of old2: %+v %v %v", s, ok, err)
	}
	if ttl := rdb(t, r.Addr).TTL(ctx, cs["old1"].key("traffic", "old1", oldRev)).Val(); ttl <= 0 || ttl > TrafficTTL {
		t.Fatalf("ttl %s", ttl)
	}

	// Forged: errors above requests, and a value over the cap.
	rdb(t, r.Addr).Set(ctx, cs["old1"].key("traffic", "old1", oldRev),
		`{"rev":"`+oldRev+`","minutes":[{"t":`+itoa(from.Unix()/60)+`,"n":10,"e":1000000}]}`, time.Minute)
	rdb(t, r.Addr).Set(ctx, cs["old2"].key("traffic", "old2", oldRev), strings.Repeat("x", MaxValue+1), time.Minute)
	got, err = cs["canary"].Baseline(ctx, newRev, from, to)
	if err != nil || got.Total != (traffic.Counts{Requests: 10, Errors: 10}) {
		t.Fatalf("forged baseline %+v, %v", got, err)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// One node claims a revision's canary however many race; an operator's
// promote or abort overrides the canary's own state, except a failure; an
// abort halts; each decision is in the history.
func TestCanaryRecords(t *testing.T) {
	r := testsvc.StartRedis(t)
	cfg := Config{Addrs: []string{r.Addr}, Cluster: "c"}
	ctx := t.Context()
	var (
		mu      sync.Mutex
		winners []string
		wg      sync.WaitGroup
	)
	cs := []*Cluster{open(t, cfg, "n1"), open(t, cfg, "n2"), open(t, cfg, "n3")}
	for _, c := range cs {
		wg.Go(func() {
			got, mine, err := c.ClaimCanary(ctx, nodestate.Canary{Rev: newRev, Node: c.node, From: oldRev, State: nodestate.CanaryObserving})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if mine {
				winners = append(winners, c.node)
			} else if got.Node == c.node {
				t.Errorf("%s lost the claim to itself", c.node)
			}
		})
	}
	wg.Wait()
	if len(winners) != 1 {
		t.Fatalf("winners %v", winners)
	}
	canary := cs[0]
	for _, c := range cs {
		if c.node == winners[0] {
			canary = c
		}
	}
	rec, _, _ := canary.CanaryOf(ctx, newRev)
	rec.State, rec.Reason, rec.Requests = nodestate.CanaryPassed, "within limits", 1000
	if err := canary.UpdateCanary(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if err := cs[2].Promote(ctx, "3333333333333333333333333333333333333333", "ops"); err == nil {
		t.Fatal("promoted a revision without a canary")
	}
	if err := cs[2].Promote(ctx, newRev, "ops"); err != nil {
		t.Fatal(err)
	}
	got, ok, err := cs[1].CanaryOf(ctx, newRev)
	if err != nil || !ok || got.State != nodestate.CanaryPromoted || got.Requests != 1000 {
		t.Fatalf("after promote: %+v %v %v", got, ok, err)
	}
	// The canary's own next write does not undo the operator's word.
	if err := canary.UpdateCanary(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := cs[1].CanaryOf(ctx, newRev); got.State != nodestate.CanaryPromoted {
		t.Fatalf("a canary write undid the promotion: %+v", got)
	}
	// The canary then records the promotion itself, with the reason it
	// passed on: that is the decision, for the history (it once compared
	// equal to the record with the operator's word applied, and was lost).
	rec.State = nodestate.CanaryPromoted
	if err := canary.UpdateCanary(ctx, rec); err != nil {
		t.Fatal(err)
	}

	// Abort on another revision halts it at once.
	const badRev = "4444444444444444444444444444444444444444"
	if _, _, err := canary.ClaimCanary(ctx, nodestate.Canary{Rev: badRev, Node: canary.node, State: nodestate.CanaryObserving}); err != nil {
		t.Fatal(err)
	}
	if err := cs[2].Abort(ctx, badRev, "ops"); err != nil {
		t.Fatal(err)
	}
	if reason, halted, err := cs[1].Halted(ctx, badRev); err != nil || !halted || !strings.Contains(reason, "canary aborted by ops") {
		t.Fatalf("abort did not halt: %q %v %v", reason, halted, err)
	}
	failed := nodestate.Canary{Rev: badRev, Node: canary.node, State: nodestate.CanaryFailed, Reason: "aborted by an operator"}
	if err := canary.UpdateCanary(ctx, failed); err != nil {
		t.Fatal(err)
	}
	if err := cs[2].Promote(ctx, badRev, "ops"); err == nil || !strings.Contains(err.Error(), "failed") {
		t.Fatalf("promoted a failed canary: %v", err)
	}
	revs, err := cs[0].History(0).List(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for _, rv := range revs {
		if rv.Canary != nil {
			seen[rv.Rev] = string(rv.Canary.State)
		}
	}
	if seen[newRev] != "promoted" || seen[badRev] != "failed" {
		t.Fatalf("history canaries %v", seen)
	}
}
