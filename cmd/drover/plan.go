package main

import (
	"context"
	"io"

	"github.com/drover-dev/drover/internal/printers"

	"github.com/drover-dev/drover/control"
)

func cmdPlan(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags, config := configFlag("plan", stderr)
	output := flags.String("o", "text", "output format: text or json")
	if err := parseNoArgs(flags, args); err != nil {
		return err
	}
	if *output != "text" && *output != "json" {
		return usageError{"-o must be text or json"}
	}
	return withControl(ctx, *config, stderr, func(k *control.Control) error {
		p, err := k.Plan(ctx)
		if err != nil {
			return err
		}
		if *output == "json" {
			return printers.JSON(stdout, p)
		}
		printers.Plan(stdout, p)
		return nil
	})
}
