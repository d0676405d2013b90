package main

import (
	"context"
	"fmt"
	"io"

	"github.com/drover-dev/drover/cluster"
	"github.com/drover-dev/drover/reconcile"
	"github.com/drover-dev/drover/spec"
)

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
