package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sort"
	"time"

	"github.com/drover-dev/drover/reconcile"
	"github.com/drover-dev/drover/spec"
)

// nodeStatus is `drover status -o json` for one node.
type nodeStatus struct {
	reconcile.Status
	Halted map[string]reconcile.Halt `json:"halted"`
}

func cmdStatus(_ context.Context, args []string, stdout, stderr io.Writer) error {
	flags := newFlags("status", stderr)
	config := flags.String("config", spec.DefaultNodeFile, "node config file")
	output := flags.String("o", "text", "output format: text or json")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	if *output != "text" && *output != "json" {
		return usageError{"-o must be text or json"}
	}
	cfg, err := spec.LoadNode(*config)
	if err != nil {
		return err
	}
	reg := &reconcile.FileRegistry{Dir: cfg.StateDir}
	st, err := reg.ReadStatus()
	if errors.Is(err, fs.ErrNotExist) {
		st = reconcile.Status{Node: cfg.Name, Step: reconcile.StepIdle}
	} else if err != nil {
		return fmt.Errorf("read status: %w", err)
	}
	halted, err := reg.HaltedAll()
	if err != nil {
		return err
	}
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(nodeStatus{Status: st, Halted: halted})
	}
	fmt.Fprintf(stdout, "node     %s\n", cfg.Name)
	fmt.Fprintf(stdout, "live     %s\n", shortRev(st.Rev))
	step := string(st.Step)
	if st.Target != "" {
		step += " " + shortRev(st.Target)
	}
	if !st.Since.IsZero() {
		step += fmt.Sprintf(" (since %s)", st.Since.Local().Format(time.DateTime))
	}
	fmt.Fprintf(stdout, "step     %s\n", step)
	if !st.Seen.IsZero() {
		fmt.Fprintf(stdout, "polled   %s ago\n", time.Since(st.Seen).Round(time.Second))
	}
	if st.Error != "" {
		fmt.Fprintf(stdout, "error    %s\n", st.Error)
	}
	revs := make([]string, 0, len(halted))
	for r := range halted {
		revs = append(revs, r)
	}
	sort.Slice(revs, func(i, j int) bool { return halted[revs[i]].At.After(halted[revs[j]].At) })
	for _, r := range revs {
		fmt.Fprintf(stdout, "halted   %s at %s: %s\n", shortRev(r), halted[r].At.Local().Format(time.DateTime), firstLine(halted[r].Reason))
	}
	return nil
}

func firstLine(s string) string {
	for i, c := range s {
		if c == '\n' {
			return s[:i] + " …"
		}
	}
	return s
}
