package printers

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/drover-dev/drover/cluster"
	"github.com/drover-dev/drover/internal/sdnotify"
	"github.com/drover-dev/drover/reconcile"
)

// Node is drover status without a cluster: this node's status file, its
// halted revisions (newest first) and its pin; now dates the last poll.
func Node(w io.Writer, st reconcile.Status, halted map[string]reconcile.Halt, pin *reconcile.Pin, now time.Time) {
	fmt.Fprintf(w, "node     %s\n", st.Node)
	fmt.Fprintf(w, "live     %s\n", short(st.Rev))
	if st.Signer != "" {
		fmt.Fprintf(w, "signer   %s\n", st.Signer)
	}
	fmt.Fprintf(w, "step     %s\n", stepText(st))
	if !st.Seen.IsZero() {
		fmt.Fprintf(w, "polled   %s ago\n", now.Sub(st.Seen).Round(time.Second))
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
		fmt.Fprintf(w, "halted   %s at %s: %s\n", short(r), dateTime(halted[r].At), firstLine(halted[r].Reason))
	}
	if pin != nil {
		fmt.Fprintf(w, "pinned   %s\n", pinText(*pin))
	}
}

// Cluster is drover status of a cluster: pause and pin, a table of the
// nodes, who signed what they run, the canaries, the lock's holders, the
// halted revisions and the last events (at most events of them).
func Cluster(w io.Writer, s cluster.ClusterStatus, events int) {
	fmt.Fprintf(w, "cluster %s at %s\n", s.Cluster, dateTime(s.Time))
	if s.Paused != nil {
		fmt.Fprintf(w, "PAUSED since %s by %s: %s\n", dateTime(s.Paused.At), s.Paused.Node, s.Paused.Reason)
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
			alive = "no (last beat " + clock(n.Beat) + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", n.Node, short(n.Rev), stepText(n.Status), healthColumn(n.Status, 100), alive, firstLine(n.Error))
	}
	tw.Flush()
	signers(w, s.Nodes)
	canaries(w, s.Canaries)
	fmt.Fprintln(w)
	if len(s.Holders) == 0 {
		fmt.Fprintln(w, "rollout lock: free")
	}
	for _, h := range s.Holders {
		fmt.Fprintf(w, "rollout lock slot %d: %s, for %s, since %s\n", h.Slot, h.Node, short(h.Rev), dateTime(h.Since))
	}
	for _, h := range s.Halted {
		fmt.Fprintf(w, "halted %s (by %s at %s): %s\n", short(h.Rev), h.Node, dateTime(h.At), firstLine(h.Reason))
	}
	evs := s.Events
	if len(evs) > events {
		evs = evs[len(evs)-events:]
	}
	if len(evs) > 0 {
		fmt.Fprintln(w, "\nrecent events:")
	}
	for _, e := range evs {
		line := fmt.Sprintf("  %s  %-8s %-12s %s", clock(e.Time), e.Node, e.Step, short(e.Rev))
		if e.Msg != "" {
			line += "  " + e.Msg
		}
		if e.Err != "" {
			line += "  error: " + firstLine(e.Err)
		}
		fmt.Fprintln(w, strings.TrimRight(line, " "))
	}
}

func stepText(st reconcile.Status) string {
	s := string(st.Step)
	if st.Target != "" {
		s += " " + short(st.Target)
	}
	if !st.Since.IsZero() {
		s += fmt.Sprintf(" (since %s)", dateTime(st.Since))
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
		h += " since " + clock(st.HealthSince)
	}
	return h
}

// pinText says what the pin is, who set it, when and why.
func pinText(p reconcile.Pin) string {
	s := fmt.Sprintf("%s by %s at %s", short(p.Rev), p.By, dateTime(p.At))
	if p.Reason != "" {
		s += ": " + p.Reason
	}
	return s
}

// signers is a line per live revision saying who signed it (with
// repo.verify), once per revision however many nodes run it.
func signers(w io.Writer, nodes []cluster.NodeStatus) {
	done := map[string]bool{}
	for _, n := range nodes {
		if n.Signer != "" && !done[n.Rev] {
			done[n.Rev] = true
			fmt.Fprintf(w, "%s signed by %s\n", short(n.Rev), n.Signer)
		}
	}
}

// canaries is the canary record of each revision a node serves or moves
// to.
func canaries(w io.Writer, cs []reconcile.Canary) {
	for _, c := range cs {
		fmt.Fprintf(w, "canary %s %s", short(c.Rev), c.Summary())
		if c.BaselineRequests > 0 {
			fmt.Fprintf(w, "; old revision %d requests, %d errors (z %.2f)", c.BaselineRequests, c.BaselineErrors, c.Z)
		}
		fmt.Fprintln(w)
	}
}
