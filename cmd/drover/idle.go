package main

import (
	"context"
	"fmt"
	"io"

	"github.com/drover-dev/drover/internal/sdnotify"
	"github.com/drover-dev/drover/spec"
)

// cmdIdle is what the package's postinst runs before it restarts the
// agent onto a new binary: a restart is safe at any instant (the next agent
// recovers), but one that lands mid-turn ends the turn: the node's drained
// window grows by the restart and the recovery, and the lock goes back to
// the queue. So an upgrade waits for the agent to be between rollouts.
func cmdIdle(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("idle", stderr)
	config := fs.String("config", spec.DefaultNodeFile, "node config file (for its stateDir)")
	unit := fs.String("unit", "drover.service", "the agent's systemd unit")
	timeout := fs.Duration("wait", 0, "wait up to this long for the agent to be idle (0: answer now)")
	setUsage(fs, stderr, "Usage: drover idle [--config node.yaml] [--wait 15m]\n\n"+
		"Exit 0 when this node's agent is between rollouts: no change in flight (STATE/journal.json)\n"+
		"and its systemd status is idle, paused or failed, or its unit is not running; else exit 1,\n"+
		"after waiting up to --wait for it. The package's postinst restarts the agent onto a new\n"+
		"drover only once this says idle.\n\n")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	cfg, err := spec.LoadNode(*config)
	if err != nil {
		return err
	}
	status, busy, err := sdnotify.WaitIdle(ctx, cfg.StateDir, *unit, *timeout, func(why string) {
		fmt.Fprintf(stderr, "waiting: %s\n", why)
	})
	if err != nil {
		return err
	}
	if busy {
		fmt.Fprintf(stderr, "drover idle: busy after %s: %s\n", *timeout, status)
		return exitError{exitFailure}
	}
	fmt.Fprintf(stdout, "%s is idle (%s)\n", *unit, status)
	return nil
}
