package agent

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/drover-dev/drover/internal/binpages"
	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/internal/sdnotify"
	"github.com/drover-dev/drover/reconcile"
)

// Run is the agent: it finishes or undoes a change an earlier agent left in
// flight, then polls the repo and rolls out each new revision until ctx
// ends; the guard watches the live release between rollouts. SIGUSR1 asks
// for a sync now. version is logged. It returns nil when ctx is canceled.
func (n *Node) Run(ctx context.Context, version string) error {
	rn, stop, err := n.start(ctx)
	if err != nil {
		return err
	}
	defer stop()
	trigger := reconcile.NewTrigger()
	stopCoord, err := n.coordinate(ctx, trigger)
	if err != nil {
		return err
	}
	defer stopCoord()
	pidFile := layout.New(n.cfg.StateDir).AgentPID()
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	defer os.Remove(pidFile)
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-usr1:
				trigger.Poke()
			}
		}
	}()
	// Under systemd (Type=notify): STATUS= and WATCHDOG=1 from now on,
	// STOPPING=1 when ctx ends, READY=1 once recovery tells the node's
	// state (internal/sdnotify).
	sd := sdnotify.Start(ctx, n.log, rn.Status, n.cfg.Repo.PollInterval.D())
	defer sd.Stop()
	n.log.Info("agent started", "version", version, "repo", n.cfg.Repo.URL, "branch", n.cfg.Repo.Branch, "every", n.cfg.Repo.PollInterval.D())
	rn.Register(ctx)
	if err := rn.Recover(ctx); err != nil {
		// Keep polling: a newer good revision is the way out.
		n.log.Error("recovery failed; the node stays out of rotation", "err", err)
	}
	sd.Ready()
	go binpages.ReleaseWhenIdle(ctx, n.log) // RSS counts the pages of the binary in use
	// The steady-state guard watches the live release between rollouts
	// (reconcile/guard.go); it stops with ctx, before the workers do.
	guardCtx, stopGuard := context.WithCancel(ctx)
	guardDone := make(chan struct{})
	go func() { defer close(guardDone); rn.Guard(guardCtx) }()
	defer func() { stopGuard(); <-guardDone }()
	err = rn.Loop(ctx, n.cfg.Repo.PollInterval.D(), trigger)
	if errors.Is(err, context.Canceled) {
		n.log.Info("agent stopping")
		return nil
	}
	return err
}

// RunOnce recovers, syncs once and returns what the sync did (drover agent
// --once); an error is a failed recovery or sync.
func (n *Node) RunOnce(ctx context.Context) (reconcile.Outcome, error) {
	rn, stop, err := n.start(ctx)
	if err != nil {
		return reconcile.Outcome{}, err
	}
	defer stop()
	if err := rn.Recover(ctx); err != nil {
		return reconcile.Outcome{}, err
	}
	out, err := rn.Sync(ctx)
	if err != nil {
		return out, err
	}
	rn.Settle(ctx) // the old range's workers, after an overlap
	return out, nil
}

// start builds the state machine and starts what watches it (traffic,
// metrics, alerts); stop ends them and then the workers' supervisor.
func (n *Node) start(ctx context.Context) (rn *reconcile.Node, stop func(), err error) {
	var stops []func()
	stopAll := func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	defer func() {
		if err != nil {
			stopAll()
		}
	}()
	sup, err := n.newSupervisor()
	if err != nil {
		return nil, nil, err
	}
	stops = append(stops, func() {
		if s, ok := sup.(interface{ StopsWorkersOnClose() bool }); ok && s.StopsWorkersOnClose() && rn != nil {
			// Its workers die with this agent: out of the LB first, or
			// it sends the node requests that fail until the next agent.
			n.log.Info("leaving the load balancer: the workers stop with the agent")
			if err := rn.Leave(ctx); err != nil {
				n.log.Warn("leave the load balancer", "err", err)
			}
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := sup.Close(cctx); err != nil {
			n.log.Warn("stop workers", "err", err)
		}
	})
	stopTraffic, err := n.startTraffic(ctx) // before the reconciler: its canary reads it
	if err != nil {
		return nil, nil, err
	}
	stops = append(stops, stopTraffic)
	if rn, err = n.reconciler(sup); err != nil {
		return nil, nil, err
	}
	stopMetrics, err := n.serveMetrics(ctx)
	if err != nil {
		return nil, nil, err
	}
	stops = append(stops, stopMetrics)
	stopAlerts, err := n.startAlerts(ctx)
	if err != nil {
		return nil, nil, err
	}
	stops = append(stops, stopAlerts)
	return rn, stopAll, nil
}
