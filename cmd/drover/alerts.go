package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/drover-dev/drover/cluster"
	"github.com/drover-dev/drover/nodestate"
	"github.com/drover-dev/drover/notify"
	"github.com/drover-dev/drover/reconcile"
	"github.com/drover-dev/drover/spec"
)

// newNotifier builds node.yaml's notify section (nil without one). c dedupes
// across the cluster's nodes (nil: one node, nothing to dedupe).
func newAlertNotifier(ctx context.Context, cfg *spec.Node, c *cluster.Cluster, log *slog.Logger) (*notify.Notifier, error) {
	nt := cfg.Notify
	if nt == nil {
		return nil, nil
	}
	var sinks []notify.Sink
	for i, w := range nt.Webhooks {
		url := w.URL
		if w.URLFile != "" {
			b, err := os.ReadFile(w.URLFile)
			if err != nil {
				return nil, fmt.Errorf("notify.webhooks[%d].urlFile: %w", i, err)
			}
			url = strings.TrimSpace(string(b))
		}
		sinks = append(sinks, &notify.Webhook{URL: url, Slack: w.Format == "slack"})
	}
	if e := nt.Email; e != nil {
		host, _ := os.Hostname()
		sinks = append(sinks, &notify.Sendmail{Path: e.Sendmail, From: e.From, To: e.To, Hostname: host})
	}
	ncfg := notify.Config{Sinks: sinks, Timeout: nt.Timeout.D(), Log: log.With("part", "notify")}
	if c != nil {
		ncfg.Claim = c
	}
	return notify.Start(ctx, ncfg), nil
}

func clusterName(cfg *spec.Node) string {
	if cfg.Cluster != nil {
		return cfg.Cluster.Name
	}
	return cfg.Name
}

// alerter turns the node's status changes and halts into notifications.
// Every node watches; the notifier's claim makes one of them send each.
type alerter struct {
	n       *notify.Notifier
	cl      *cluster.Cluster
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

// id names a rollout's event cluster-wide: the revision and the one the
// nodes leave, so that going back to a revision (drover rollback) is a
// rollout of its own, not a repeat of the first one.
func (a *alerter) id(kind, rev string) string { return kind + ":" + rev + ":" + a.from }

func (a *alerter) post(e notify.Event) {
	e.Cluster = a.cluster
	a.n.Post(e)
}

func (a *alerter) observe(ctx context.Context, prev, cur reconcile.Status) {
	if cur.Step == reconcile.StepPreparing && prev.Step != reconcile.StepPreparing {
		a.from = cur.Rev // a halt while preparing names the same rollout
	}
	if cur.Step == reconcile.StepDraining && prev.Step != reconcile.StepDraining && cur.Target != "" {
		a.started, a.from = time.Now(), cur.Rev
		a.post(notify.Event{ID: a.id("started", cur.Target), Kind: notify.KindStarted, Node: a.node, Revision: cur.Target,
			Text: fmt.Sprintf("rollout of %s started on %s", shortRev(cur.Target), a.node)})
	}
	if end, ok := a.turn.Observe(prev, cur, time.Now()); ok && end.Outcome == nodestate.TurnLive {
		a.completed(ctx, cur.Rev)
	}
	a.observeCanary(ctx, prev, cur)
	if cur.Health == reconcile.HealthOut && prev.Health != reconcile.HealthOut {
		a.post(notify.Event{ID: fmt.Sprintf("out:%s:%d", a.node, cur.HealthSince.UnixNano()), Kind: notify.KindGuardOut, Node: a.node,
			Revision: cur.Rev, Error: cur.HealthWhy, Text: fmt.Sprintf("%s is out of the load balancer: %s", a.node, firstLine(cur.HealthWhy))})
	}
}

// completed notifies when the last node went live on rev: this node sees
// every registered node live on it.
func (a *alerter) completed(ctx context.Context, rev string) {
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
	e := notify.Event{ID: a.id("completed", rev), Kind: notify.KindCompleted, Node: a.node, Revision: rev,
		Text: fmt.Sprintf("rollout of %s completed", shortRev(rev))}
	if !start.IsZero() {
		e.Duration = time.Since(start).Seconds()
		e.Text += fmt.Sprintf(" in %s", time.Since(start).Round(100*time.Millisecond))
	}
	a.post(e)
}

func (a *alerter) halt(_ context.Context, rev, reason string) {
	a.post(notify.Event{ID: a.id("halted", rev), Kind: notify.KindHalted, Node: a.node, Revision: rev, Error: reason,
		Text: fmt.Sprintf("rollout of %s halted on %s: %s", shortRev(rev), a.node, firstLine(reason))})
}

// watchSilent notifies, once per silence, of a registered node whose
// heartbeat expired, checking every period until ctx ends.
func (a *alerter) watchSilent(ctx context.Context, every time.Duration) {
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
				a.post(notify.Event{ID: fmt.Sprintf("silent:%s:%d", n.Node, n.Beat.UnixNano()), Kind: notify.KindSilent, Node: n.Node,
					Revision: n.Rev, Text: fmt.Sprintf("%s is silent since %s (heartbeat expired)", n.Node, n.Beat.UTC().Format(time.RFC3339))})
			}
		}
	}
}

// startAlerts wires node.yaml's notify section into the agent; stop closes
// the notifier.
func (n *node) startAlerts(ctx context.Context) (stop func(), err error) {
	nt, err := newAlertNotifier(ctx, n.cfg, n.cl, n.log)
	if err != nil || nt == nil {
		return func() {}, err
	}
	a := &alerter{n: nt, cl: n.cl, cluster: clusterName(n.cfg), node: n.cfg.Name, log: n.log.With("part", "notify")}
	obs := n.observed()
	obs.mu.Lock()
	obs.watch = append(obs.watch, a.observe)
	obs.onHalt = append(obs.onHalt, a.halt)
	obs.mu.Unlock()
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	if n.cl != nil {
		go func() { defer close(done); a.watchSilent(sctx, n.cfg.Cluster.HeartbeatTTL.D()) }()
	} else {
		close(done)
	}
	return func() { cancel(); <-done; nt.Close() }, nil
}

// notifyNow sends a command's event (pin, unpin, rollback) before the
// command exits; a failing receiver costs at most its tries.
func notifyNow(ctx context.Context, cfg *spec.Node, e notify.Event) {
	nt, err := newAlertNotifier(ctx, cfg, nil, slog.New(slog.DiscardHandler))
	if err != nil || nt == nil {
		return
	}
	defer nt.Close()
	e.Cluster = clusterName(cfg)
	sctx, cancel := context.WithTimeout(ctx, 2*cfg.Notify.Timeout.D()+time.Second)
	defer cancel()
	nt.Send(sctx, e)
}
