package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/drover-dev/drover/spec"
)

func cmdValidate(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("validate", stderr)
	nodeFile := fs.String("node", "", "also validate this node.yaml")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: drover validate [--node node.yaml] [DIR]\n\nChecks DIR/drover.yaml (default DIR: .) and the files it refers to.\nExit 0 when valid; exit 1 with every problem, one per line, as file:line:col: field: why.\n\n")
		fs.PrintDefaults()
	}
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
	var problems []error
	file := filepath.Join(dir, spec.FileName)
	sp, err := validateDir(dir)
	if err != nil {
		problems = append(problems, err)
	}
	if *nodeFile != "" {
		if _, err := spec.LoadNode(*nodeFile); err != nil {
			problems = append(problems, err)
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

// validateDir parses dir/drover.yaml and checks the tree it refers to.
func validateDir(dir string) (*spec.Spec, error) {
	file := filepath.Join(dir, spec.FileName)
	data, err := os.ReadFile(file)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: not found; drover validate DIR expects DIR/%s", file, spec.FileName)
		}
		return nil, err
	}
	sp, err := spec.Parse(file, data)
	if err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	if err := spec.CheckTree(file, sp, root.FS()); err != nil {
		return nil, err
	}
	return sp, nil
}
