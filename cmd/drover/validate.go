package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"

	"github.com/drover-dev/drover/migrate"
	"github.com/drover-dev/drover/secretenv"
	"github.com/drover-dev/drover/spec"
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
	var problems []error
	// With --node, the spec is checked against that node's policy, as its
	// agent will check it; without, against the default policy.
	var nodeCfg *spec.Node
	policy := spec.DefaultPolicy()
	if *nodeFile != "" {
		var err error
		if nodeCfg, err = spec.LoadNode(*nodeFile); err != nil {
			problems = append(problems, err)
		} else {
			policy = nodeCfg.Policy
		}
	}
	file := filepath.Join(dir, spec.FileName)
	sp, err := spec.LoadDir(dir, policy)
	if err != nil {
		problems = append(problems, err)
	}
	if sp != nil {
		problems = append(problems, secretenv.CheckFiles(file, dir, sp)...)
	}
	if sp != nil && sp.Migrations != nil {
		warnings, err := migrate.LintDir(dir, sp)
		if err != nil {
			problems = append(problems, err)
		}
		for _, w := range warnings {
			fmt.Fprintln(stderr, w)
		}
	}
	if nodeCfg != nil && *verify {
		line, err := verifyHead(dir, *nodeFile, nodeCfg)
		if err != nil {
			problems = append(problems, err)
		} else {
			fmt.Fprintln(stdout, line)
		}
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(stderr, p)
		}
		return exitError{exitFailure}
	}
	fmt.Fprintf(stdout, "%s: valid (%d sites, %d workers)\n", file, len(sp.Sites), len(sp.Workers))
	return nil
}
