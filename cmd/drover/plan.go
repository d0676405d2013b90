package main

import (
	"context"
	"io"

	"github.com/drover-dev/drover/internal/printers"

	"github.com/drover-dev/drover/control"
)

func cmdPlan(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags, config := configFlag("plan", stderr)
	output := newOutputFlag(flags)
	if err := parseNoArgs(flags, args); err != nil {
		return err
	}
	return withControl(ctx, *config, stderr, func(k *control.Control) error {
		p, err := k.Plan(ctx)
		if err != nil {
			return err
		}
		return output.write(stdout, p, func() { printers.Plan(stdout, p) })
	})
}
