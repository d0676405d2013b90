package main

import (
	"context"
	"io"

	"github.com/drover-dev/drover/internal/printers"

	"github.com/drover-dev/drover/cluster"
	"github.com/drover-dev/drover/control"
)

func cmdHistory(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags, config := configFlag("history", stderr)
	n := flags.Int("n", 20, "how many revisions to show, newest first (0: all kept)")
	output := newOutputFlag(flags)
	setUsage(flags, stderr, "Usage: drover history [--config node.yaml] [-n N] [-o text|json]\n\nEvery revision the cluster saw (node.yaml history.keep of them): the commit,\nwhen it was first seen, what each node did with it and how long it was\ndrained, the outcome, and who pinned, unpinned, cleared or paused what.\n\n")
	if err := parseNoArgs(flags, args); err != nil {
		return err
	}
	if *n < 0 {
		return usageError{"-n must not be negative"}
	}
	return withControl(ctx, *config, stderr, func(k *control.Control) error {
		revs, err := k.History().List(ctx, *n)
		if err != nil {
			return err
		}
		if revs == nil {
			revs = []cluster.Revision{} // [] in JSON, not null
		}
		return output.write(stdout, revs, func() { printers.History(stdout, revs) })
	})
}
