package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/drover-dev/drover/cluster"
	"github.com/drover-dev/drover/control"
)

func cmdHistory(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags, config := configFlag("history", stderr)
	n := flags.Int("n", 20, "how many revisions to show, newest first (0: all kept)")
	output := flags.String("o", "text", "output format: text or json")
	flags.Usage = func() {
		fmt.Fprintf(stderr, "Usage: drover history [--config node.yaml] [-n N] [-o text|json]\n\nEvery revision the cluster saw (node.yaml history.keep of them): the commit,\nwhen it was first seen, what each node did with it and how long it was\ndrained, the outcome, and who pinned, unpinned, cleared or paused what.\n\n")
		flags.PrintDefaults()
	}
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	if flags.NArg() > 0 {
		return usageError{"history takes no arguments"}
	}
	if *output != "text" && *output != "json" {
		return usageError{"-o must be text or json"}
	}
	if *n < 0 {
		return usageError{"-n must not be negative"}
	}
	return withControl(ctx, *config, stderr, func(k *control.Control) error {
		revs, err := k.History().List(ctx, *n)
		if err != nil {
			return err
		}
		if *output == "json" {
			if revs == nil {
				revs = []cluster.Revision{}
			}
			return writeJSON(stdout, revs)
		}
		printHistory(stdout, revs)
		return nil
	})
}

func printHistory(w io.Writer, revs []cluster.Revision) {
	if len(revs) == 0 {
		fmt.Fprintln(w, "no revision seen yet")
		return
	}
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "REVISION\tFIRST SEEN\tOUTCOME\tAUTHOR\tSIGNED\tSUBJECT")
	for _, r := range revs {
		signed := r.Signature
		if signed == "" {
			signed = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", shortRev(r.Rev), r.FirstSeen.Local().Format(time.DateTime),
			firstLine(r.Outcome), r.Author, signed, r.Subject)
		for _, run := range r.Nodes {
			fmt.Fprintf(tw, "  %s\t%s\t\t\t\t\n", run.Node, runText(run))
		}
		if r.Halt != nil {
			fmt.Fprintf(tw, "  halted\tby %s at %s: %s\t\t\t\t\n", r.Halt.Node, r.Halt.At.Local().Format(time.DateTime), firstLine(r.Halt.Reason))
		}
		if r.Canary != nil {
			fmt.Fprintf(tw, "  canary\t%s at %s\t\t\t\t\n", firstLine(r.Canary.Summary()), r.Canary.Updated.Local().Format(time.DateTime))
		}
		for _, a := range r.Actions {
			line := a.What + " by " + a.By + " at " + a.At.Local().Format(time.DateTime)
			if a.Reason != "" {
				line += ": " + a.Reason
			}
			fmt.Fprintf(tw, "  operator\t%s\t\t\t\t\n", line)
		}
	}
	tw.Flush()
}

func runText(run cluster.NodeRun) string {
	var parts []string
	if !run.Live.IsZero() {
		parts = append(parts, "live at "+run.Live.Local().Format(time.DateTime))
	}
	if !run.Failed.IsZero() {
		s := "failed at " + run.Failed.Local().Format(time.DateTime)
		if run.RolledBack {
			s += ", rolled back to " + shortRev(run.From)
		}
		parts = append(parts, s+": "+firstLine(run.Error))
	}
	if run.Drained > 0 {
		parts = append(parts, "drained "+run.Drained.Round(time.Millisecond).String())
	}
	if len(parts) == 0 {
		return "seen"
	}
	return strings.Join(parts, ", ")
}
