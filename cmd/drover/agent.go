package main

import (
	"context"
	"fmt"
	"io"

	"github.com/drover-dev/drover/agent"
	"github.com/drover-dev/drover/spec"
)

func cmdAgent(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("agent", stderr)
	config := fs.String("config", spec.DefaultNodeFile, "node config file")
	once := fs.Bool("once", false, "recover, sync once and exit (exit 1 if the sync failed)")
	setUsage(fs, stderr, "Usage: drover agent [--config node.yaml] [--once]\n\nRuns the node agent: finishes or undoes a change an earlier agent left in\nflight, then polls the repo and rolls out each new revision. SIGUSR1 asks for\na sync now.\n\n")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	n, err := agent.Open(ctx, *config, stderr)
	if err != nil {
		return err
	}
	defer n.Close()
	if !*once {
		return n.Run(ctx, version)
	}
	out, err := n.RunOnce(ctx)
	if err != nil {
		return err
	}
	if out.Applied {
		fmt.Fprintf(stdout, "%s: live on %s (was %s)\n", n.Name(), shortRev(out.To), shortRev(out.From))
	} else {
		fmt.Fprintf(stdout, "%s: already on %s\n", n.Name(), shortRev(out.To))
	}
	return nil
}
