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
	output := flags.String("o", "text", "output format: text or json")
	events := flags.Int("events", 10, "how many recent events to show")
	if err := parseNoArgs(flags, args); err != nil {
		return err
	}
	if *output != "text" && *output != "json" {
		return usageError{"-o must be text or json"}
	}
	stdout = printers.Terminal(stdout) // what status prints comes from Redis: no escapes
	return withControl(ctx, *config, stderr, func(k *control.Control) error {
		if c := k.Cluster(); c != nil {
			snap, err := c.Snapshot(ctx)
			if err != nil {
				return err
			}
			if *output == "json" {
				return printers.JSON(stdout, snap)
			}
			printers.Cluster(stdout, snap, *events)
			return nil
		}
		ns, err := k.LocalStatus(ctx)
		if err != nil {
			return err
		}
		if *output == "json" {
			return printers.JSON(stdout, ns)
		}
		printers.Node(stdout, ns.Status, ns.Halted, ns.Pin, time.Now())
		return nil
	})
}
