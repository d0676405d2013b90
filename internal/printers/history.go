package printers

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/drover-dev/drover/cluster"
)

// History is drover history: a row per revision, newest first, with a line
// under it per node that ran it, its halt, its canary and each operator's
// act on it.
func History(w io.Writer, revs []cluster.Revision) {
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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", short(r.Rev), dateTime(r.FirstSeen), firstLine(r.Outcome), r.Author, signed, r.Subject)
		for _, run := range r.Nodes {
			fmt.Fprintf(tw, "  %s\t%s\t\t\t\t\n", run.Node, runText(run))
		}
		if r.Halt != nil {
			fmt.Fprintf(tw, "  halted\tby %s at %s: %s\t\t\t\t\n", r.Halt.Node, dateTime(r.Halt.At), firstLine(r.Halt.Reason))
		}
		if r.Canary != nil {
			fmt.Fprintf(tw, "  canary\t%s at %s\t\t\t\t\n", firstLine(r.Canary.Summary()), dateTime(r.Canary.Updated))
		}
		for _, a := range r.Actions {
			line := a.What + " by " + a.By + " at " + dateTime(a.At)
			if a.Reason != "" {
				line += ": " + a.Reason
			}
			fmt.Fprintf(tw, "  operator\t%s\t\t\t\t\n", line)
		}
	}
	tw.Flush()
}

// runText is what one node did with a revision.
func runText(run cluster.NodeRun) string {
	var parts []string
	if !run.Live.IsZero() {
		parts = append(parts, "live at "+dateTime(run.Live))
	}
	if !run.Failed.IsZero() {
		s := "failed at " + dateTime(run.Failed)
		if run.RolledBack {
			s += ", rolled back to " + short(run.From)
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
