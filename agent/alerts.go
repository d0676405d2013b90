package agent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/drover-dev/drover/cluster"
	"github.com/drover-dev/drover/notify"
	"github.com/drover-dev/drover/spec"
)

// newNotifier builds node.yaml's notify section (nil without one). c dedupes
// across the cluster's nodes (nil: one node, nothing to dedupe).
func newNotifier(ctx context.Context, cfg *spec.Node, c *cluster.Cluster, log *slog.Logger) (*notify.Notifier, error) {
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

// startAlerts wires node.yaml's notify section into the agent; stop closes
// the notifier.
func (n *Node) startAlerts(ctx context.Context) (stop func(), err error) {
	nt, err := newNotifier(ctx, n.cfg, n.cl, n.log)
	if err != nil || nt == nil {
		return func() {}, err
	}
	// A nil *cluster.Cluster must reach the alerter as a nil interface:
	// one node without a cluster has no other nodes to wait for.
	var cl notify.Cluster
	if n.cl != nil {
		cl = n.cl
	}
	a := notify.NewAlerter(nt, cl, clusterName(n.cfg), n.cfg.Name, n.log.With("part", "notify"))
	obs := n.observed()
	obs.mu.Lock()
	obs.watch = append(obs.watch, a.Observe)
	obs.onHalt = append(obs.onHalt, a.Halt)
	obs.mu.Unlock()
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	if n.cl != nil {
		go func() { defer close(done); a.WatchSilent(sctx, n.cfg.Cluster.HeartbeatTTL.D()) }()
	} else {
		close(done)
	}
	return func() { cancel(); <-done; nt.Close() }, nil
}

// NotifyNow sends a command's event (pin, unpin, rollback) before the
// command exits; a failing receiver costs at most its tries.
func NotifyNow(ctx context.Context, cfg *spec.Node, e notify.Event) {
	nt, err := newNotifier(ctx, cfg, nil, slog.New(slog.DiscardHandler))
	if err != nil || nt == nil {
		return
	}
	defer nt.Close()
	e.Cluster = clusterName(cfg)
	sctx, cancel := context.WithTimeout(ctx, 2*cfg.Notify.Timeout.D()+time.Second)
	defer cancel()
	nt.Send(sctx, e)
}
