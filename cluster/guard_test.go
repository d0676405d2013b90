package cluster

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/testsvc"
	"github.com/drover-dev/drover/nodestate"
)

func withHealth(st nodestate.Status, h nodestate.Health, why string) nodestate.Status {
	st.Health, st.HealthWhy = h, why
	return st
}

// The guard's take-out obeys the capacity rule counting nodes that fail
// their checks, a node it took out counts as out of service for rollouts,
// and a rollout's capacity wait waits for it.
func TestTakeOutCountsFailingAndOutNodes(t *testing.T) {
	t.Parallel()
	r := testsvc.StartRedis(t)
	cfg := Config{Addrs: []string{r.Addr}, PollMax: 100 * time.Millisecond}
	ctx := t.Context()
	a, b, c := open(t, cfg, "a"), open(t, cfg, "b"), open(t, cfg, "c")
	for _, n := range []*Cluster{a, b, c} {
		if err := n.Report(ctx, status(n.Node(), nodestate.StepIdle, "")); err != nil {
			t.Fatal(err)
		}
	}
	outFn := func(n *Cluster, why string) func(context.Context) error {
		return func(ctx context.Context) error {
			return n.Report(ctx, withHealth(status(n.Node(), nodestate.StepIdle, ""), nodestate.HealthOut, why))
		}
	}

	// b fails its checks too (a shared failure): a stays in.
	if err := b.Report(ctx, withHealth(status("b", nodestate.StepIdle, ""), nodestate.HealthFailing, "check db: refused")); err != nil {
		t.Fatal(err)
	}
	taken, reason, err := a.TakeOut(ctx, 1, outFn(a, "worker api: 500"))
	if err != nil || taken || !strings.Contains(reason, "b (failing)") {
		t.Fatalf("TakeOut with b failing = %v, %q, %v; want refused naming b", taken, reason, err)
	}
	// b healthy again: a may go, and is then out of service for everyone.
	if err := b.Report(ctx, withHealth(status("b", nodestate.StepIdle, ""), nodestate.HealthOK, "")); err != nil {
		t.Fatal(err)
	}
	taken, reason, err = a.TakeOut(ctx, 1, outFn(a, "worker api: 500"))
	if err != nil || !taken {
		t.Fatalf("TakeOut with room = %v, %q, %v; want taken", taken, reason, err)
	}
	out, _, err := c.OutOfService(ctx)
	if err != nil || len(out) != 1 || !strings.Contains(out[0], "a (out (guard: worker api: 500))") {
		t.Fatalf("OutOfService seen by c = %q, %v; want a out by the guard", out, err)
	}
	// c's guard cannot take c out now, with maxUnavailable 1 …
	if taken, _, err := c.TakeOut(ctx, 1, outFn(c, "x")); err != nil || taken {
		t.Fatalf("second take-out = %v, %v; want refused", taken, err)
	}
	// … and c's rollout waits for capacity until a is back.
	if err := c.Report(ctx, status("c", nodestate.StepWaiting, "rev-new")); err != nil {
		t.Fatal(err)
	}
	var reasons atomic.Value
	done := make(chan error, 1)
	go func() {
		done <- c.WaitCapacity(ctx, 1, func(r string) { reasons.Store(r) })
	}()
	time.Sleep(300 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("WaitCapacity returned (%v) while a is out by its guard", err)
	default:
	}
	if r, _ := reasons.Load().(string); !strings.Contains(r, "a (out (guard:") {
		t.Fatalf("waiting reason %q does not name a's guard", r)
	}
	if err := a.Report(ctx, withHealth(status("a", nodestate.StepIdle, ""), nodestate.HealthOK, "")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitCapacity still waiting after a came back")
	}
	// The capacity claim: c is published as draining before it returns, so
	// a guard deciding now sees it.
	if taken, reason, err := b.TakeOut(ctx, 1, outFn(b, "y")); err != nil || taken || !strings.Contains(reason, "c (draining)") {
		t.Fatalf("take-out right after c's capacity wait = %v, %q, %v; want refused because c drains", taken, reason, err)
	}
}

// Guards of many nodes deciding at once take out at most maxUnavailable.
func TestTakeOutRaceKeepsCapacity(t *testing.T) {
	t.Parallel()
	r := testsvc.StartRedis(t)
	cfg := Config{Addrs: []string{r.Addr}, PollMax: 100 * time.Millisecond}
	ctx := t.Context()
	var nodes []*Cluster
	for _, name := range []string{"n1", "n2", "n3", "n4", "n5"} {
		n := open(t, cfg, name)
		if err := n.Report(ctx, status(name, nodestate.StepIdle, "")); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	var taken atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, n := range nodes {
		wg.Go(func() {
			<-start
			ok, _, err := n.TakeOut(ctx, 2, func(ctx context.Context) error {
				return n.Report(ctx, withHealth(status(n.Node(), nodestate.StepIdle, ""), nodestate.HealthOut, "z"))
			})
			if err != nil {
				t.Error(err)
			}
			if ok {
				taken.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	if got := taken.Load(); got != 2 {
		t.Fatalf("%d of 5 racing guards took their node out with maxUnavailable 2; want exactly 2", got)
	}
}
