package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/drover-dev/drover/cluster"
	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/reconcile"
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
func (n *node) startTraffic(ctx context.Context) (stop func(), err error) {
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
func (n *node) publishTraffic(ctx context.Context, counter *traffic.Counter) {
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

func cmdPromote(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return canaryOp(ctx, "promote", args, stdout, stderr)
}

func cmdAbort(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return canaryOp(ctx, "abort", args, stdout, stderr)
}

// canaryOp is drover promote REV / drover abort REV.
func canaryOp(ctx context.Context, op string, args []string, stdout, stderr io.Writer) error {
	flags := newFlags(op, stderr)
	config := flags.String("config", spec.DefaultNodeFile, "node config file")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	if flags.NArg() != 1 {
		return usageError{"usage: drover " + op + " REV (the full commit id of the canary's revision)"}
	}
	rev := flags.Arg(0)
	return withCluster(ctx, *config, nil, func(cfg *spec.Node, c *cluster.Cluster) error {
		if c == nil {
			return needCluster(op)
		}
		rec, ok, err := c.CanaryOf(ctx, rev)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%s has no canary (give the full commit id; drover status shows it)", shortRev(rev))
		}
		if op == "promote" {
			if err := c.Promote(ctx, rev, operator()); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "promoted %s (canary on %s: %s): the other nodes take it now\n", shortRev(rev), rec.Node, rec.Summary())
		} else {
			if err := c.Abort(ctx, rev, operator()); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "aborted %s: halted cluster-wide; %s rolls back to %s, drained first\n", shortRev(rev), rec.Node, shortRev(rec.From))
		}
		return c.PublishSync(ctx, op+" by "+operator())
	})
}

// printCanaries writes the canary record of each revision a node serves or
// moves to.
func printCanaries(w io.Writer, cs []reconcile.Canary) {
	for _, c := range cs {
		fmt.Fprintf(w, "canary %s %s", shortRev(c.Rev), c.Summary())
		if c.BaselineRequests > 0 {
			fmt.Fprintf(w, "; old revision %d requests, %d errors (z %.2f)", c.BaselineRequests, c.BaselineErrors, c.Z)
		}
		fmt.Fprintln(w)
	}
}
