package main

import (
	"context"
	"fmt"
	"io"

	"github.com/drover-dev/drover/control"
)

func cmdPromote(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return canaryOp(ctx, "promote", args, stdout, stderr)
}

func cmdAbort(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return canaryOp(ctx, "abort", args, stdout, stderr)
}

// canaryOp is drover promote REV / drover abort REV.
func canaryOp(ctx context.Context, op string, args []string, stdout, stderr io.Writer) error {
	flags, config := configFlag(op, stderr)
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	if flags.NArg() != 1 {
		return usageError{"usage: drover " + op + " REV (the full commit id of the canary's revision)"}
	}
	rev := flags.Arg(0)
	return withControl(ctx, *config, stderr, func(k *control.Control) error {
		if op == "promote" {
			rec, err := k.Promote(ctx, rev)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "promoted %s (canary on %s: %s): the other nodes take it now\n", shortRev(rev), rec.Node, rec.Summary())
			return nil
		}
		rec, err := k.Abort(ctx, rev)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "aborted %s: halted cluster-wide; %s rolls back to %s, drained first\n", shortRev(rev), rec.Node, shortRev(rec.From))
		return nil
	})
}
