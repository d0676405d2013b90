package agent

import (
	"context"
	"os"
	"sync"
	"time"

	"github.com/drover-dev/drover/cluster"
	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/spec"
	"github.com/drover-dev/drover/traffic"
)

// The canary's parts on a node (issue 14): while the live spec has
// rollout.canary, nginx writes a line per request to the traffic log beside
// the health log; the agent follows and counts it (package traffic),
// publishes its figures for the cluster every cluster.TrafficEvery, and
// hands reconcile the counter and the cluster's canary records.

// nodeTraffic is the node's counter as reconcile.Traffic.
type nodeTraffic struct{ c *traffic.Counter }

func (t nodeTraffic) Live(rev string, sp *spec.Spec, now time.Time) {
	t.c.Live(rev, traffic.TargetsOf(sp), now)
}

func (t nodeTraffic) Figures(from, to time.Time) traffic.Figures { return t.c.Figures(from, to) }

// startTraffic follows the traffic log and publishes the figures of the
// live release until the returned stop. Without a cluster there is
// nothing to compare with and nothing starts.
func (n *Node) startTraffic(ctx context.Context) (stop func(), err error) {
	if n.cl == nil {
		return func() {}, nil
	}
	counter := traffic.NewCounter(nil)
	f := traffic.NewFollower(layout.New(n.cfg.StateDir).TrafficLog(), counter, 0)
	f.Start(time.Second)
	n.traffic = nodeTraffic{counter}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(cluster.TrafficEvery)
		defer t.Stop()
		for {
			n.publishTraffic(ctx, counter)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
	return func() { cancel(); wg.Wait(); f.Close() }, nil
}

// publishTraffic counts for the live release and publishes its figures.
func (n *Node) publishTraffic(ctx context.Context, counter *traffic.Counter) {
	cur, err := n.store.Current()
	if err != nil || cur == "" {
		return
	}
	if rev, _ := counter.Revision(); rev != cur {
		r, err := n.store.Release(cur)
		if err != nil {
			return
		}
		data, err := os.ReadFile(r.SpecFile())
		if err != nil {
			return
		}
		sp, err := spec.ParseRelease(spec.FileName, data) // the policy let it in before prepare
		if err != nil {
			return
		}
		counter.Live(cur, traffic.TargetsOf(sp), time.Now())
	}
	pctx, cancel := context.WithTimeout(ctx, cluster.TrafficEvery/2)
	defer cancel()
	if err := n.cl.PublishTraffic(pctx, counter.Snapshot(n.cfg.Name, time.Now())); err != nil && ctx.Err() == nil {
		n.log.Warn("publish traffic", "err", err)
	}
}
