package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/drover-dev/drover/internal/binpages"
	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/internal/sdnotify"
	"github.com/drover-dev/drover/reconcile"
	"github.com/drover-dev/drover/spec"
)

func cmdAgent(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("agent", stderr)
	config := fs.String("config", spec.DefaultNodeFile, "node config file")
	once := fs.Bool("once", false, "recover, sync once and exit (exit 1 if the sync failed)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: drover agent [--config node.yaml] [--once]\n\nRuns the node agent: finishes or undoes a change an earlier agent left in\nflight, then polls the repo and rolls out each new revision. SIGUSR1 asks for\na sync now.\n\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{"unexpected arguments"}
	}
	n, err := openNode(ctx, *config, stderr)
	if err != nil {
		return err
	}
	defer n.Close()
	sup, err := n.newSupervisor()
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := sup.Close(cctx); err != nil {
			n.log.Warn("stop workers", "err", err)
		}
	}()
	stopTraffic, err := n.startTraffic(ctx) // before the reconciler: its canary reads it
	if err != nil {
		return err
	}
	defer stopTraffic()
	rn, err := n.reconciler(sup)
	if err != nil {
		return err
	}
	stopMetrics, err := n.serveMetrics(ctx)
	if err != nil {
		return err
	}
	defer stopMetrics()
	stopAlerts, err := n.startAlerts(ctx)
	if err != nil {
		return err
	}
	defer stopAlerts()
	if *once {
		if err := rn.Recover(ctx); err != nil {
			return err
		}
		out, err := rn.Sync(ctx)
		if err != nil {
			return err
		}
		rn.Settle(ctx) // the old range's workers, after an overlap
		switch {
		case out.Applied:
			fmt.Fprintf(stdout, "%s: live on %s (was %s)\n", n.cfg.Name, shortRev(out.To), shortRev(out.From))
		default:
			fmt.Fprintf(stdout, "%s: already on %s\n", n.cfg.Name, shortRev(out.To))
		}
		return nil
	}

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
	// state (see notify.go).
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
