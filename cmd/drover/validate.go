package main

import (
	"context"
	"fmt"
	"io"

	"github.com/drover-dev/drover/control"
)

func cmdValidate(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("validate", stderr)
	nodeFile := fs.String("node", "", "also validate this node.yaml")
	verify := fs.Bool("verify", false, "also check HEAD's signature against the node.yaml's repo.verify keys (needs --node)")
	setUsage(fs, stderr, "Usage: drover validate [--node node.yaml [--verify]] [DIR]\n\nChecks DIR/drover.yaml (default DIR: .) and the files it refers to, against the node policy of\nnode.yaml (its policy section) with --node, else the default one.\nExit 0 when valid; exit 1 with every problem, one per line, as file:line:col: field: why.\n"+
		"Migrations are loaded too; a destructive statement (DROP TABLE, DROP COLUMN, RENAME, TRUNCATE,\n"+
		"ALTER COLUMN TYPE) is reported as file:line: warning: why, which does not change the exit code:\n"+
		"workers of the previous revision still run against the new schema during a rollout.\n\n")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 1 {
		return usageError{"at most one DIR"}
	}
	dir := "."
	if fs.NArg() == 1 {
		dir = fs.Arg(0)
	}
	if *verify && *nodeFile == "" {
		return usageError{"--verify needs --node: the keys are node.yaml's repo.verify"}
	}
	v := control.Validate(dir, *nodeFile, *verify)
	for _, w := range v.Warnings {
		fmt.Fprintln(stderr, w)
	}
	if v.Signed != "" {
		fmt.Fprintln(stdout, v.Signed)
	}
	if len(v.Problems) > 0 {
		for _, p := range v.Problems {
			fmt.Fprintln(stderr, p)
		}
		return exitError{exitFailure}
	}
	fmt.Fprintf(stdout, "%s: valid (%d sites, %d workers)\n", v.File, len(v.Spec.Sites), len(v.Spec.Workers))
	return nil
}
