package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/drover-dev/drover/cluster"
	"github.com/drover-dev/drover/gitsource"
	"github.com/drover-dev/drover/nodestate"
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
// reports: the history recorder and the metrics see every status change and
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

// historyRecorder writes what this node does with each revision into the
// history, from the node's status changes.
type historyRecorder struct {
	hist   history
	node   string
	commit func(ctx context.Context, rev string) (gitsource.Commit, error)
	signer func(rev string) string
	log    *slog.Logger

	// known: revisions whose commit details this recorder wrote; turn:
	// the node's turn so far, the same reading of the statuses as the
	// metrics' and the alerts'. Rollout goroutine only.
	known map[string]bool
	turn  nodestate.TurnTracker
	// pending are the writes that failed, oldest first (do).
	pending []func(context.Context) error
}

// historyTimeout bounds each history write: a slow Redis must not hold up
// a rollout for the sake of its record.
const historyTimeout = 2 * time.Second

func (h *historyRecorder) observe(ctx context.Context, prev, cur reconcile.Status) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), historyTimeout)
	defer cancel()
	h.flush(ctx)
	now := time.Now().UTC()
	if t := cur.Target; t != "" && !h.known[t] {
		meta := cluster.RevisionMeta{Rev: t}
		if c, err := h.commit(ctx, t); err == nil {
			meta.Author, meta.Committer, meta.Subject = c.Author, c.Committer, c.Message
			if h.signer != nil {
				meta.Signature = h.signer(t)
			}
			h.known[t] = true
		}
		h.do(ctx, func(ctx context.Context) error { return h.hist.Seen(ctx, meta) })
	}
	if end, ok := h.turn.Observe(prev, cur, now); ok {
		h.record(ctx, end, now)
		return
	}
	// A revision refused before the node left the LB (a bad spec or
	// artifact at prepare, a failed migration): the node never switched,
	// so its run is a failure with nothing rolled back. A check that
	// failed on the new release is not recorded here: the turn's end
	// (rolled back, or the way back failing too) says what became of it.
	if cur.Step == reconcile.StepFailed && cur.Target != "" && cur.Rev != cur.Target &&
		prev.Step != reconcile.StepRollingBack && prev.Step != cur.Step {
		h.do(ctx, func(ctx context.Context) error {
			return h.hist.Node(ctx, cur.Target, cluster.NodeRun{Node: h.node, Failed: now, Error: cur.Error})
		})
	}
}

// record writes the run of a turn that ended. A turn that ended with no
// rollout (an error while preparing or waiting) leaves no run: the
// revision is tried again, or its halt is recorded by halt.
func (h *historyRecorder) record(ctx context.Context, end nodestate.TurnEnd, now time.Time) {
	if end.Target == "" {
		return
	}
	run := cluster.NodeRun{Node: h.node, Drained: end.Drained, Error: end.Error}
	switch end.Outcome {
	case nodestate.TurnLive:
		run.Live, run.From, run.Error = now, end.From, ""
	case nodestate.TurnRolledBack, nodestate.TurnLockLost:
		// The lock lost: the node went back to the release it left and
		// will try the revision again; the old release did not go live
		// anew, so nothing is recorded for it.
		run.Failed, run.RolledBack, run.From = now, true, end.From
	case nodestate.TurnFailed, nodestate.TurnRefused:
		run.Failed = now
	default:
		return
	}
	h.do(ctx, func(ctx context.Context) error { return h.hist.Node(ctx, end.Target, run) })
}

func (h *historyRecorder) halt(ctx context.Context, rev, reason string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), historyTimeout)
	defer cancel()
	h.do(ctx, func(ctx context.Context) error {
		return h.hist.HaltRev(ctx, cluster.Halt{Rev: rev, Reason: reason, Node: h.node, At: time.Now().UTC()})
	})
}

// maxPending bounds the history writes kept while Redis is unreachable.
const maxPending = 200

// do runs a history write after those still pending, in order; a write
// that fails (Redis failing over, say) is kept and tried again at the next
// status change or poll, so the record of what happened during an outage
// is not lost. Writes are idempotent, so a retry of one that did land
// is harmless.
func (h *historyRecorder) do(ctx context.Context, write func(context.Context) error) {
	h.pending = append(h.pending, write)
	if len(h.pending) > maxPending {
		h.log.Warn("history writes pending too long; dropping the oldest", "dropped", len(h.pending)-maxPending)
		h.pending = h.pending[len(h.pending)-maxPending:]
	}
	h.flush(ctx)
}

func (h *historyRecorder) flush(ctx context.Context) {
	for len(h.pending) > 0 {
		if err := h.pending[0](ctx); err != nil {
			h.log.Warn("record history; will retry", "pending", len(h.pending), "err", err)
			return
		}
		h.pending = h.pending[1:]
	}
}
