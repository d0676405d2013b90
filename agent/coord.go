package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/drover-dev/drover/cluster"
	"github.com/drover-dev/drover/lbdrain"
	"github.com/drover-dev/drover/reconcile"
	"github.com/drover-dev/drover/spec"
	"github.com/drover-dev/drover/webhook"
)

// This file wires the agent into its cluster: the Redis side (lock,
// registry, halts, events, sync fan-out), the load-balancer drain driver and
// the push webhook receiver, each from its node.yaml section.

// OpenCluster connects to the cluster's Redis, or returns nil for a single
// node (no cluster section).
func OpenCluster(ctx context.Context, cfg *spec.Node, log *slog.Logger) (*cluster.Cluster, error) {
	c, ok := cluster.ConfigFor(cfg)
	if !ok {
		return nil, nil
	}
	return cluster.Open(ctx, c, cfg.Name, log.With("part", "cluster"))
}

// newLBDrainer is the rollout's drain driver for node.yaml cfg.
func newLBDrainer(cfg *spec.Node, log *slog.Logger) (*lbdrain.Drainer, error) {
	return lbdrain.NewDrainer(lbdrain.ConfigFor(cfg), log)
}

// The drain driver is what reconcile takes, and says why a drain went on at
// its bound (reconcile's drainReporter).
var (
	_ reconcile.Drainer                         = (*lbdrain.Drainer)(nil)
	_ interface{ LastDrainIncomplete() string } = (*lbdrain.Drainer)(nil)
	_ interface {
		Drained(context.Context) (bool, error)
	} = (*lbdrain.Drainer)(nil)
)

// startWebhook listens on webhook.listen and serves the push receiver at
// webhook.path; a valid push calls trigger. It returns a function that
// shuts the server down.
func startWebhook(cfg *spec.Node, trigger webhook.Trigger, dedupe webhook.Deduper, log *slog.Logger) (stop func(), err error) {
	w := cfg.Webhook
	h, err := webhook.New(webhook.Config{
		SecretFile: w.SecretFile,
		Branch:     cfg.Repo.Branch,
		Provider:   w.Provider,
		Dedupe:     dedupe,
		Log:        log,
	}, trigger)
	if err != nil {
		return nil, fmt.Errorf("webhook: %w", err)
	}
	ln, err := net.Listen("tcp", w.Listen)
	if err != nil {
		return nil, fmt.Errorf("webhook: %w", err)
	}
	ln = webhook.LimitListener(ln, webhook.DefaultMaxConns)
	mux := http.NewServeMux()
	mux.Handle(w.Path, h)
	srv := webhook.NewServer(mux, webhook.ServerConfig{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("webhook server", "err", err)
		}
	}()
	log.Info("webhook listening", "addr", ln.Addr().String(), "path", w.Path)
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	}, nil
}

// coordinate starts what ties a running agent to its cluster: heartbeat,
// sync subscription, webhook. The returned function stops them.
func (n *Node) coordinate(ctx context.Context, trigger *reconcile.Trigger) (stop func(), err error) {
	var stops []func()
	stopAll := func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	fanOut := func(context.Context, string) error { trigger.Poke(); return nil }
	var dedupe webhook.Deduper
	if n.cl != nil {
		if err := n.cl.Start(ctx); err != nil {
			return nil, err
		}
		if err := n.cl.Subscribe(ctx, trigger.Poke); err != nil {
			return nil, err
		}
		fanOut, dedupe = n.cl.PublishSync, n.cl
	}
	if n.cfg.Webhook != nil {
		s, err := startWebhook(n.cfg, fanOut, dedupe, n.log.With("part", "webhook"))
		if err != nil {
			stopAll()
			return nil, err
		}
		stops = append(stops, s)
	}
	return stopAll, nil
}
