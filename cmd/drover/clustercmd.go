package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/drover-dev/drover/control"
	"github.com/drover-dev/drover/spec"
)

// The operator's cluster commands: sync, pause, resume, forget, clear, and
// pin, rollback, unpin, promote, abort beside them. What each does is
// package control's; here are their flags and what they print.

// withControl loads node.yaml and connects to its cluster (none without a
// cluster section); the warnings of an act that is done go to stderr.
func withControl(ctx context.Context, config string, stderr io.Writer, fn func(k *control.Control) error) error {
	cfg, err := spec.LoadNode(config)
	if err != nil {
		return err
	}
	k, err := control.Open(ctx, cfg, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		return err
	}
	defer k.Close()
	return fn(k)
}

// configFlag is the node config flag every operator command takes.
func configFlag(name string, stderr io.Writer) (*flag.FlagSet, *string) {
	flags := newFlags(name, stderr)
	return flags, flags.String("config", spec.DefaultNodeFile, "node config file")
}

func cmdSync(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags, config := configFlag("sync", stderr)
	setUsage(flags, stderr, "Usage: drover sync [--config node.yaml]\n\nAsks every node of the cluster (or this node's agent, without a cluster) to\npoll the repo now.\n\n")
	if err := parseNoArgs(flags, args); err != nil {
		return err
	}
	return withControl(ctx, *config, stderr, func(k *control.Control) error {
		pid, err := k.Sync(ctx)
		if err != nil {
			return err
		}
		if c := k.Cluster(); c != nil {
			fmt.Fprintf(stdout, "asked every node of cluster %s to sync\n", c.Name())
		} else {
			fmt.Fprintf(stdout, "asked the agent (pid %d) to sync\n", pid)
		}
		return nil
	})
}

func cmdPause(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags, config := configFlag("pause", stderr)
	reason := flags.String("reason", "", "why, shown by drover status")
	if err := parseNoArgs(flags, args); err != nil {
		return err
	}
	return withControl(ctx, *config, stderr, func(k *control.Control) error {
		if err := k.Pause(ctx, *reason); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "rollouts paused in cluster %s: a node mid-step finishes its step; none starts a new one\n", k.Cluster().Name())
		return nil
	})
}

func cmdResume(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags, config := configFlag("resume", stderr)
	if err := parseNoArgs(flags, args); err != nil {
		return err
	}
	return withControl(ctx, *config, stderr, func(k *control.Control) error {
		if err := k.Resume(ctx); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "rollouts resumed in cluster %s\n", k.Cluster().Name())
		return nil
	})
}

func cmdForget(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags, config := configFlag("forget", stderr)
	setUsage(flags, stderr, "Usage: drover forget [--config node.yaml] NODE\n\nRemoves NODE from the cluster's registry, e.g. a server that is gone for\ngood: it no longer counts as out of service, so rollouts can go on.\n\n")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	if flags.NArg() != 1 {
		return usageError{"give exactly one NODE"}
	}
	return withControl(ctx, *config, stderr, func(k *control.Control) error {
		if err := k.Forget(ctx, flags.Arg(0)); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "forgot node %s\n", flags.Arg(0))
		return nil
	})
}

func cmdClear(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags, config := configFlag("clear", stderr)
	setUsage(flags, stderr, "Usage: drover clear [--config node.yaml] REV\n\nClears a halted revision (a full commit id, or a prefix of one that\ndrover status shows) so that nodes apply it again.\n\n")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	if flags.NArg() != 1 {
		return usageError{"give exactly one REV"}
	}
	return withControl(ctx, *config, stderr, func(k *control.Control) error {
		rev, err := k.Clear(ctx, flags.Arg(0))
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "cleared halted revision %s\n", rev)
		return nil
	})
}
