package agent

import (
	"context"
	"sync"

	"github.com/drover-dev/drover/cluster"
	"github.com/drover-dev/drover/reconcile"
	"github.com/drover-dev/drover/spec"
)

// History is the cluster's durable record of revisions: in Redis, or the
// state dir's history.json without a cluster.
type History interface {
	Seen(ctx context.Context, meta cluster.RevisionMeta) error
	Node(ctx context.Context, rev string, run cluster.NodeRun) error
	HaltRev(ctx context.Context, h cluster.Halt) error
	Action(ctx context.Context, rev string, a cluster.Action) error
	List(ctx context.Context, n int) ([]cluster.Revision, error)
}

// OpenHistory is node.yaml's history: the cluster's c, or the state dir's.
func OpenHistory(cfg *spec.Node, c *cluster.Cluster) History {
	if c != nil {
		return c.History(cfg.History.Keep)
	}
	return &cluster.FileHistory{Dir: cfg.StateDir, Keep: cfg.History.Keep, NodeName: cfg.Name}
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
