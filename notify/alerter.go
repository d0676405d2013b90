package notify

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/drover-dev/drover/internal/revid"
	"github.com/drover-dev/drover/nodestate"
)

// Cluster is what an Alerter reads of the cluster (*cluster.Cluster). It is
// declared here so that notify does not import cluster.
type Cluster interface {
	// Nodes are the registered nodes, with their heartbeats.
	Nodes(ctx context.Context) ([]nodestate.NodeStatus, error)
	// NoticeTime is when the event id was first claimed (zero: never).
	NoticeTime(ctx context.Context, id string) (time.Time, error)
	// CanaryOf is rev's canary record, with the operator's word applied.
	CanaryOf(ctx context.Context, rev string) (nodestate.Canary, bool, error)
}

// Alerter turns the node's status changes and halts into notifications.
// Every node watches; the notifier's claim makes one of them send each.
// Observe and Halt are called from the rollout's goroutine, one at a time.
type Alerter struct {
	n       *Notifier
	cl      Cluster
	cluster string
	node    string
	log     *slog.Logger
	// started is when this node began its turn (one node without a
	// cluster: the rollout's start), from the revision it left.
	started time.Time
	from    string
	// turn says when this node's turn ended live (rollout goroutine
	// only, like the rest).
	turn nodestate.TurnTracker
}

// NewAlerter returns an alerter that posts node's events in the cluster
// named clusterName to n. cl is nil for one node without a cluster: the
// node's own turn then completes a rollout, and no node can go silent.
func NewAlerter(n *Notifier, cl Cluster, clusterName, node string, log *slog.Logger) *Alerter {
	return &Alerter{n: n, cl: cl, cluster: clusterName, node: node, log: log}
}

// id names a rollout's event cluster-wide: the revision and the one the
// nodes leave, so that going back to a revision (drover rollback) is a
// rollout of its own, not a repeat of the first one.
func (a *Alerter) id(kind, rev string) string { return kind + ":" + rev + ":" + a.from }

func (a *Alerter) post(e Event) {
	e.Cluster = a.cluster
	a.n.Post(e)
}

// Observe takes the node's status change from prev to cur.
func (a *Alerter) Observe(ctx context.Context, prev, cur nodestate.Status) {
	if cur.Step == nodestate.StepPreparing && prev.Step != nodestate.StepPreparing {
		a.from = cur.Rev // a halt while preparing names the same rollout
	}
	if cur.Step == nodestate.StepDraining && prev.Step != nodestate.StepDraining && cur.Target != "" {
		a.started, a.from = time.Now(), cur.Rev
		a.post(Event{ID: a.id("started", cur.Target), Kind: KindStarted, Node: a.node, Revision: cur.Target,
			Text: fmt.Sprintf("rollout of %s started on %s", revid.Short(cur.Target), a.node)})
	}
	if end, ok := a.turn.Observe(prev, cur, time.Now()); ok && end.Outcome == nodestate.TurnLive {
		a.completed(ctx, cur.Rev)
	}
	a.observeCanary(ctx, prev, cur)
	if cur.Health == nodestate.HealthOut && prev.Health != nodestate.HealthOut {
		a.post(Event{ID: fmt.Sprintf("out:%s:%d", a.node, cur.HealthSince.UnixNano()), Kind: KindGuardOut, Node: a.node,
			Revision: cur.Rev, Error: cur.HealthWhy, Text: fmt.Sprintf("%s is out of the load balancer: %s", a.node, firstLine(cur.HealthWhy))})
	}
}

// completed notifies when the last node went live on rev: this node sees
// every registered node live on it.
func (a *Alerter) completed(ctx context.Context, rev string) {
	start := a.started
	if a.cl != nil {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		nodes, err := a.cl.Nodes(ctx)
		if err != nil {
			a.log.Warn("count nodes live for a notification", "err", err)
			return
		}
		for _, n := range nodes {
			// A node silent past its heartbeat does not hold the news
			// back (node.silent tells of it).
			if n.Alive && n.Node != a.node && n.Rev != rev {
				return // not done yet; the last node says so
			}
		}
		if t, err := a.cl.NoticeTime(ctx, a.id("started", rev)); err == nil && !t.IsZero() {
			start = t
		}
	}
	e := Event{ID: a.id("completed", rev), Kind: KindCompleted, Node: a.node, Revision: rev,
		Text: fmt.Sprintf("rollout of %s completed", revid.Short(rev))}
	if !start.IsZero() {
		e.Duration = time.Since(start).Seconds()
		e.Text += fmt.Sprintf(" in %s", time.Since(start).Round(100*time.Millisecond))
	}
	a.post(e)
}

// observeCanary notifies of this node's canary decisions: leaving the canary
// step (promoted, failed or aborted) and a pass that waits for drover
// promote.
func (a *Alerter) observeCanary(ctx context.Context, prev, cur nodestate.Status) {
	rev := ""
	passed := "canary on " + a.node + ": " + string(nodestate.CanaryPassed)
	switch {
	case prev.Step == nodestate.StepCanary && cur.Step != nodestate.StepCanary:
		rev = prev.Target
	case cur.Step == nodestate.StepCanary && strings.HasPrefix(cur.Canary, passed) && !strings.HasPrefix(prev.Canary, passed):
		rev = cur.Target
	}
	if rev == "" || a.cl == nil {
		return
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	rec, ok, err := a.cl.CanaryOf(cctx, rev)
	if err != nil || !ok {
		return
	}
	text := fmt.Sprintf("canary of %s on %s %s: %s", revid.Short(rev), rec.Node, rec.State, firstLine(rec.Reason))
	if rec.State == nodestate.CanaryPassed {
		text += "; drover promote " + rev + " releases the other nodes"
	}
	a.post(Event{ID: "canary:" + rev + ":" + string(rec.State), Kind: KindCanary, Node: rec.Node, Revision: rev,
		Reason: rec.Reason, Text: text})
}

// Halt notifies that this node halted rev for reason.
func (a *Alerter) Halt(_ context.Context, rev, reason string) {
	a.post(Event{ID: a.id("halted", rev), Kind: KindHalted, Node: a.node, Revision: rev, Error: reason,
		Text: fmt.Sprintf("rollout of %s halted on %s: %s", revid.Short(rev), a.node, firstLine(reason))})
}

// WatchSilent notifies, once per silence, of a registered node whose
// heartbeat expired, checking every period until ctx ends. It needs a
// cluster (NewAlerter's cl not nil).
func (a *Alerter) WatchSilent(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		nctx, cancel := context.WithTimeout(ctx, every)
		nodes, err := a.cl.Nodes(nctx)
		cancel()
		if err != nil {
			continue
		}
		for _, n := range nodes {
			if !n.Alive {
				a.post(Event{ID: fmt.Sprintf("silent:%s:%d", n.Node, n.Beat.UnixNano()), Kind: KindSilent, Node: n.Node,
					Revision: n.Rev, Text: fmt.Sprintf("%s is silent since %s (heartbeat expired)", n.Node, n.Beat.UTC().Format(time.RFC3339))})
			}
		}
	}
}

// firstLine is s's first line, " …" marking what was cut, as the CLI
// writes an error in one line (cmd/drover's firstLine).
func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}
