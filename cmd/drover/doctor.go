package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/drover-dev/drover/internal/printers"

	"github.com/drover-dev/drover/doctor"
	"github.com/drover-dev/drover/spec"
)

func cmdDoctor(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("doctor", stderr)
	config := fs.String("config", spec.DefaultNodeFile, "node config file")
	timeout := fs.Duration("timeout", 5*time.Second, "bound on each check")
	setUsage(fs, stderr, "Usage: drover doctor [--config node.yaml]\n\n"+
		"Checks what this node's agent will need, in a few seconds, and prints one line per check,\n"+
		"pass, warn or fail, with the fix: nginx, systemd, the repo with these credentials, the branch,\n"+
		"drover.yaml at its head, Redis/Sentinel and the clock, the load balancer's credentials, the\n"+
		"database (not through transaction pooling), the webhook secret, disk space, ports.\n"+
		"Changes nothing. Exit 0 when nothing failed, 1 otherwise.\n\n")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	start := time.Now()
	name, rs := doctor.CheckFile(ctx, *config, *timeout)
	for _, r := range rs {
		printers.DoctorResult(stdout, r)
	}
	if name == "" { // node.yaml did not load: nothing else was checked
		return exitError{exitFailure}
	}
	failed := doctor.Failed(rs)
	verdict := "ready"
	if failed {
		verdict = "not ready"
	}
	fmt.Fprintf(stdout, "%s: %s (%s)\n", name, verdict, time.Since(start).Round(10*time.Millisecond))
	if failed {
		return exitError{exitFailure}
	}
	return nil
}
