package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/drover-dev/drover/cluster"
	"github.com/drover-dev/drover/reconcile"
	"github.com/drover-dev/drover/spec"
)

// history is the cluster's durable record of revisions: in Redis, or the
// state dir's history.json without a cluster.
type history interface {
	Seen(ctx context.Context, meta cluster.RevisionMeta) error
	Node(ctx context.Context, rev string, run cluster.NodeRun) error
	HaltRev(ctx context.Context, h cluster.Halt) error
	Action(ctx context.Context, rev string, a cluster.Action) error
	List(ctx context.Context, n int) ([]cluster.Revision, error)
}

func openHistory(cfg *spec.Node, c *cluster.Cluster) history {
	if c != nil {
		return c.History(cfg.History.Keep)
	}
	return &cluster.FileHistory{Dir: cfg.StateDir, Keep: cfg.History.Keep, NodeName: cfg.Name}
}

func cmdHistory(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags := newFlags("history", stderr)
	config := flags.String("config", spec.DefaultNodeFile, "node config file")
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
	return withCluster(ctx, *config, nil, func(cfg *spec.Node, c *cluster.Cluster) error {
		revs, err := openHistory(cfg, c).List(ctx, *n)
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

// observedRegistry is the node's registry with watchers of what the node
// reports: the history recorder (cluster.HistoryRecorder), the alerts and
// the metrics see every status change and
// every halt without reconcile knowing about either. A watcher must not
// block: it runs in the rollout's goroutine, bounded by its own timeouts.
type observedRegistry struct {
	reconcile.Registry
	mu      sync.Mutex
	prev    reconcile.Status
	watch   []func(ctx context.Context, prev, cur reconcile.Status)
	onHalt  []func(ctx context.Context, rev, reason string)
	started bool
}

func (o *observedRegistry) Report(ctx context.Context, st reconcile.Status) error {
	err := o.Registry.Report(ctx, st)
	// The loop and the guard both report: the watchers see one change
	// at a time, in order.
	o.mu.Lock()
	defer o.mu.Unlock()
	prev := o.prev
	if !o.started {
		prev, o.started = st, true
	}
	o.prev = st
	for _, w := range o.watch {
		w(ctx, prev, st)
	}
	return err
}

func (o *observedRegistry) Halt(ctx context.Context, rev, reason string) error {
	err := o.Registry.Halt(ctx, rev, reason)
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, h := range o.onHalt {
		h(ctx, rev, reason)
	}
	return err
}

// Notice forwards the guard's events (reconcile.Noticer) to a registry that
// records them.
func (o *observedRegistry) Notice(ctx context.Context, rev, msg string) error {
	if nt, ok := o.Registry.(reconcile.Noticer); ok {
		return nt.Notice(ctx, rev, msg)
	}
	return nil
}
