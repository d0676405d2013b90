package main

import (
	"context"
	"io"
	"time"

	"github.com/drover-dev/drover/internal/printers"

	"github.com/drover-dev/drover/control"
)

func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags, config := configFlag("status", stderr)
	output := newOutputFlag(flags)
	events := flags.Int("events", 10, "how many recent events to show")
	if err := parseNoArgs(flags, args); err != nil {
		return err
	}
	stdout = printers.Terminal(stdout) // what status prints comes from Redis: no escapes
	return withControl(ctx, *config, stderr, func(k *control.Control) error {
		if c := k.Cluster(); c != nil {
			snap, err := c.Snapshot(ctx)
			if err != nil {
				return err
			}
			return output.write(stdout, snap, func() { printers.Cluster(stdout, snap, *events) })
		}
		ns, err := k.LocalStatus(ctx)
		if err != nil {
			return err
		}
		return output.write(stdout, ns, func() { printers.Node(stdout, ns.Status, ns.Halted, ns.Pin, time.Now()) })
	})
}
