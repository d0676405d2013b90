package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/drover-dev/drover/cluster"
	"github.com/drover-dev/drover/control"
	"github.com/drover-dev/drover/internal/sdnotify"
	"github.com/drover-dev/drover/reconcile"
)

func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags, config := configFlag("status", stderr)
	output := flags.String("o", "text", "output format: text or json")
	events := flags.Int("events", 10, "how many recent events to show")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	if *output != "text" && *output != "json" {
		return usageError{"-o must be text or json"}
	}
	stdout = &printable{w: stdout} // what status prints comes from Redis: no escapes
	return withControl(ctx, *config, stderr, func(k *control.Control) error {
		if c := k.Cluster(); c != nil {
			snap, err := c.Snapshot(ctx)
			if err != nil {
				return err
			}
			if *output == "json" {
				return writeJSON(stdout, snap)
			}
			printCluster(stdout, snap, *events)
			return nil
		}
		ns, err := k.LocalStatus(ctx)
		if err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(stdout, ns)
		}
		printNode(stdout, ns.Status, ns.Halted)
		if ns.Pin != nil {
			fmt.Fprintf(stdout, "pinned   %s\n", pinText(*ns.Pin))
		}
		return nil
	})
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printNode(w io.Writer, st reconcile.Status, halted map[string]reconcile.Halt) {
	fmt.Fprintf(w, "node     %s\n", st.Node)
	fmt.Fprintf(w, "live     %s\n", shortRev(st.Rev))
	if st.Signer != "" {
		fmt.Fprintf(w, "signer   %s\n", st.Signer)
	}
	fmt.Fprintf(w, "step     %s\n", stepText(st))
	if !st.Seen.IsZero() {
		fmt.Fprintf(w, "polled   %s ago\n", time.Since(st.Seen).Round(time.Second))
	}
	if h := healthColumn(st, 0); h != "" {
		fmt.Fprintf(w, "health   %s\n", h)
	}
	if st.Error != "" {
		fmt.Fprintf(w, "error    %s\n", st.Error)
	}
	revs := make([]string, 0, len(halted))
	for r := range halted {
		revs = append(revs, r)
	}
	sort.Slice(revs, func(i, j int) bool { return halted[revs[i]].At.After(halted[revs[j]].At) })
	for _, r := range revs {
		fmt.Fprintf(w, "halted   %s at %s: %s\n", shortRev(r), halted[r].At.Local().Format(time.DateTime), firstLine(halted[r].Reason))
	}
}

func stepText(st reconcile.Status) string {
	s := string(st.Step)
	if st.Target != "" {
		s += " " + shortRev(st.Target)
	}
	if !st.Since.IsZero() {
		s += fmt.Sprintf(" (since %s)", st.Since.Local().Format(time.DateTime))
	}
	return s
}

func printCluster(w io.Writer, s cluster.ClusterStatus, events int) {
	fmt.Fprintf(w, "cluster %s at %s\n", s.Cluster, s.Time.Local().Format(time.DateTime))
	if s.Paused != nil {
		fmt.Fprintf(w, "PAUSED since %s by %s: %s\n", s.Paused.At.Local().Format(time.DateTime), s.Paused.Node, s.Paused.Reason)
	}
	if s.Pin != nil {
		fmt.Fprintf(w, "PINNED to %s (new commits are prepared, not applied; drover unpin follows the branch again)\n", pinText(*s.Pin))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tLIVE\tSTEP\tHEALTH\tALIVE\tERROR")
	for _, n := range s.Nodes {
		alive := "yes"
		if !n.Alive {
			alive = "no (last beat " + n.Beat.Local().Format(time.TimeOnly) + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", n.Node, shortRev(n.Rev), stepText(n.Status), healthColumn(n.Status, 100), alive, firstLine(n.Error))
	}
	tw.Flush()
	printSigners(w, s.Nodes)
	printCanaries(w, s.Canaries)
	fmt.Fprintln(w)
	if len(s.Holders) == 0 {
		fmt.Fprintln(w, "rollout lock: free")
	}
	for _, h := range s.Holders {
		fmt.Fprintf(w, "rollout lock slot %d: %s, for %s, since %s\n", h.Slot, h.Node, shortRev(h.Rev), h.Since.Local().Format(time.DateTime))
	}
	for _, h := range s.Halted {
		fmt.Fprintf(w, "halted %s (by %s at %s): %s\n", shortRev(h.Rev), h.Node, h.At.Local().Format(time.DateTime), firstLine(h.Reason))
	}
	evs := s.Events
	if len(evs) > events {
		evs = evs[len(evs)-events:]
	}
	if len(evs) > 0 {
		fmt.Fprintln(w, "\nrecent events:")
	}
	for _, e := range evs {
		line := fmt.Sprintf("  %s  %-8s %-12s %s", e.Time.Local().Format(time.TimeOnly), e.Node, e.Step, shortRev(e.Rev))
		if e.Msg != "" {
			line += "  " + e.Msg
		}
		if e.Err != "" {
			line += "  error: " + firstLine(e.Err)
		}
		fmt.Fprintln(w, strings.TrimRight(line, " "))
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

// healthColumn is the guard's verdict with the time it changed, cut to
// width runes when width > 0; "-" before the guard's first verdict.
func healthColumn(st reconcile.Status, width int) string {
	h := firstLine(sdnotify.HealthText(st))
	if h == "" {
		if width == 0 {
			return ""
		}
		return "-"
	}
	if r := []rune(h); width > 0 && len(r) > width {
		h = string(r[:width-3]) + "..."
	}
	if !st.HealthSince.IsZero() {
		h += " since " + st.HealthSince.Local().Format(time.TimeOnly)
	}
	return h
}

// pinText says what the pin is, who set it, when and why.
func pinText(p reconcile.Pin) string {
	s := fmt.Sprintf("%s by %s at %s", shortRev(p.Rev), p.By, p.At.Local().Format(time.DateTime))
	if p.Reason != "" {
		s += ": " + p.Reason
	}
	return s
}
