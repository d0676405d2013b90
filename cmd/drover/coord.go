package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/drover-dev/drover/cluster"
	"github.com/drover-dev/drover/lbdrain"
	"github.com/drover-dev/drover/nginxconf"
	"github.com/drover-dev/drover/reconcile"
	"github.com/drover-dev/drover/spec"
	"github.com/drover-dev/drover/webhook"
)

// This file wires the agent into its cluster: the Redis side (lock,
// registry, halts, events, sync fan-out), the load-balancer drain driver and
// the push webhook receiver, each from its node.yaml section.

// openCluster connects to the cluster's Redis, or returns nil for a single
// node (no cluster section).
func openCluster(ctx context.Context, cfg *spec.Node, log *slog.Logger) (*cluster.Cluster, error) {
	c := cfg.Cluster
	if c == nil {
		return nil, nil
	}
	return cluster.Open(ctx, cluster.Config{
		Addrs:                c.Redis,
		SentinelAddrs:        c.SentinelAddrs,
		MasterName:           c.MasterName,
		Username:             c.Username,
		PasswordFile:         c.PasswordFile,
		SentinelPasswordFile: c.SentinelPasswordFile,
		TLS:                  c.TLS,
		CAFile:               c.CAFile,
		DB:                   c.DB,
		Cluster:              c.Name,
		LockExpiry:           c.LockExpiry.D(),
		HeartbeatTTL:         c.HeartbeatTTL.D(),
	}, cfg.Name, log.With("part", "cluster"))
}

// healthLogPath is the nginx access log of the LB's health checks, read by
// the drain drivers that observe the LB.
func healthLogPath(cfg *spec.Node) string { return filepath.Join(cfg.StateDir, "lb", "health.log") }

// observesChecks says whether the node's drain driver watches the LB's
// health checks arrive (and so needs nginx to log them).
func observesChecks(cfg *spec.Node) bool {
	return cfg.LB.Driver == lbdrain.DriverHealthCheck || cfg.LB.Driver == lbdrain.DriverDigitalOcean
}

// lbDrainer adapts lbdrain to reconcile.Drainer. The in-flight timeout is
// the revision's rollout.drainTimeout, so the driver is rebuilt when a
// revision changes it.
type lbDrainer struct {
	base lbdrain.Config
	log  *slog.Logger

	mu      sync.Mutex
	driver  lbdrain.Driver
	timeout time.Duration
}

// maxHealthLog is the size past which the health log is emptied after an
// undrain: only the lines since the last drain change are ever read.
const maxHealthLog = 8 << 20

func newLBDrainer(cfg *spec.Node, log *slog.Logger) (*lbDrainer, error) {
	c := lbdrain.DefaultConfig()
	c.Driver = cfg.LB.Driver
	if cfg.Nginx.StatusListen != "" {
		c.StatusURL = "http://" + cfg.Nginx.StatusListen + nginxconf.StatusPath
	}
	c.HealthCheck.Dir = filepath.Join(cfg.StateDir, "lb")
	if observesChecks(cfg) {
		c.HealthCheck.AccessLog = healthLogPath(cfg)
	}
	hc := cfg.LB.HealthCheck
	c.HealthCheck.CheckInterval = hc.Interval.D()
	c.HealthCheck.UnhealthyThreshold = hc.UnhealthyThreshold
	c.HealthCheck.HealthyThreshold = hc.HealthyThreshold
	c.HAProxy = lbdrain.HAProxyConfig{Socket: cfg.LB.HAProxy.Socket, Backend: cfg.LB.HAProxy.Backend, Server: cfg.LB.HAProxy.Server}
	do := cfg.LB.DigitalOcean
	c.DigitalOcean.LoadBalancerID, c.DigitalOcean.TokenFile = do.LoadBalancerID, do.TokenFile
	if do.APIURL != "" {
		c.DigitalOcean.APIURL = do.APIURL
	}
	if do.MetadataURL != "" {
		c.DigitalOcean.MetadataURL = do.MetadataURL
	}
	l := &lbDrainer{base: c, log: log}
	// Build the driver now so that a bad lb section fails at start.
	if _, err := l.get(c.DrainTimeout); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *lbDrainer) get(timeout time.Duration) (lbdrain.Driver, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.driver != nil && (timeout == 0 || timeout == l.timeout) {
		return l.driver, nil
	}
	c := l.base
	if timeout > 0 {
		c.DrainTimeout = timeout
	}
	d, err := lbdrain.New(c, l.log)
	if err != nil {
		return nil, fmt.Errorf("lb: %w", err)
	}
	l.driver, l.timeout = d, c.DrainTimeout
	return d, nil
}

func (l *lbDrainer) Drain(ctx context.Context, inflight time.Duration) error {
	d, err := l.get(inflight)
	if err != nil {
		return err
	}
	return d.Drain(ctx)
}

func (l *lbDrainer) Undrain(ctx context.Context) error {
	d, err := l.get(0)
	if err != nil {
		return err
	}
	if err := d.Undrain(ctx); err != nil {
		return err
	}
	if log := l.base.HealthCheck.AccessLog; log != "" {
		if fi, err := os.Stat(log); err == nil && fi.Size() > maxHealthLog {
			if err := os.Truncate(log, 0); err != nil {
				l.log.Warn("truncate health log", "err", err)
			}
		}
	}
	return nil
}

func (l *lbDrainer) Drained(ctx context.Context) (bool, error) {
	d, err := l.get(0)
	if err != nil {
		return false, err
	}
	return d.Drained(ctx)
}

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
	mux := http.NewServeMux()
	mux.Handle(w.Path, h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second}
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
func (n *node) coordinate(ctx context.Context, trigger *reconcile.Trigger) (stop func(), err error) {
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
