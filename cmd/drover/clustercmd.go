package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/drover-dev/drover/agent"
	"github.com/drover-dev/drover/cluster"
	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/reconcile"
	"github.com/drover-dev/drover/spec"
)

// The operator's cluster commands: sync, pause, resume, forget, clear. They
// read node.yaml for the cluster's address and never touch the node's
// release store, so they run beside a live agent.

// withCluster loads node.yaml (unless cfg is given) and connects to its
// cluster (nil without one).
func withCluster(ctx context.Context, config string, cfg *spec.Node, fn func(cfg *spec.Node, c *cluster.Cluster) error) error {
	if cfg == nil {
		var err error
		if cfg, err = spec.LoadNode(config); err != nil {
			return err
		}
	}
	c, err := agent.OpenCluster(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	if c != nil {
		defer c.Close()
	}
	return fn(cfg, c)
}

// operator names who ran a command, for events and reasons.
func operator() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return name + "@" + host
}

func cmdSync(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags := newFlags("sync", stderr)
	config := flags.String("config", spec.DefaultNodeFile, "node config file")
	flags.Usage = func() {
		fmt.Fprintf(stderr, "Usage: drover sync [--config node.yaml]\n\nAsks every node of the cluster (or this node's agent, without a cluster) to\npoll the repo now.\n\n")
		flags.PrintDefaults()
	}
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	return withCluster(ctx, *config, nil, func(cfg *spec.Node, c *cluster.Cluster) error {
		if c != nil {
			if err := c.PublishSync(ctx, "drover sync by "+operator()); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "asked every node of cluster %s to sync\n", c.Name())
			return nil
		}
		pid, err := signalAgent(cfg.StateDir)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "asked the agent (pid %d) to sync\n", pid)
		return nil
	})
}

// signalAgent asks the agent of a node without a cluster to sync now.
func signalAgent(stateDir string) (int, error) {
	pidFile := layout.New(stateDir).AgentPID()
	data, err := os.ReadFile(pidFile)
	if err != nil {
		return 0, fmt.Errorf("no agent is running on this node (%w)", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("%s: not a process id", filepath.Base(pidFile))
	}
	if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil {
		return 0, fmt.Errorf("signal agent %d: %w", pid, err)
	}
	return pid, nil
}

// needCluster is the error of commands that only make sense in a cluster.
func needCluster(cmd string) error {
	return fmt.Errorf("%s needs a cluster: node.yaml has no cluster section (on a single node, stop the agent instead)", cmd)
}

func cmdPause(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags := newFlags("pause", stderr)
	config := flags.String("config", spec.DefaultNodeFile, "node config file")
	reason := flags.String("reason", "", "why, shown by drover status")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	return withCluster(ctx, *config, nil, func(cfg *spec.Node, c *cluster.Cluster) error {
		if c == nil {
			return needCluster("pause")
		}
		r := *reason
		if r == "" {
			r = "paused"
		}
		if err := c.Pause(ctx, r+" ("+operator()+")"); err != nil {
			return err
		}
		recordOnLive(ctx, cfg, c, cluster.Action{By: operator(), What: "paused", Reason: r}, stderr)
		fmt.Fprintf(stdout, "rollouts paused in cluster %s: a node mid-step finishes its step; none starts a new one\n", c.Name())
		return nil
	})
}

func cmdResume(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags := newFlags("resume", stderr)
	config := flags.String("config", spec.DefaultNodeFile, "node config file")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	return withCluster(ctx, *config, nil, func(cfg *spec.Node, c *cluster.Cluster) error {
		if c == nil {
			return needCluster("resume")
		}
		if err := c.Resume(ctx); err != nil {
			return err
		}
		recordOnLive(ctx, cfg, c, cluster.Action{By: operator(), What: "resumed"}, stderr)
		if err := c.PublishSync(ctx, "resumed by "+operator()); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "rollouts resumed in cluster %s\n", c.Name())
		return nil
	})
}

func cmdForget(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags := newFlags("forget", stderr)
	config := flags.String("config", spec.DefaultNodeFile, "node config file")
	flags.Usage = func() {
		fmt.Fprintf(stderr, "Usage: drover forget [--config node.yaml] NODE\n\nRemoves NODE from the cluster's registry, e.g. a server that is gone for\ngood: it no longer counts as out of service, so rollouts can go on.\n\n")
		flags.PrintDefaults()
	}
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	if flags.NArg() != 1 {
		return usageError{"give exactly one NODE"}
	}
	return withCluster(ctx, *config, nil, func(_ *spec.Node, c *cluster.Cluster) error {
		if c == nil {
			return needCluster("forget")
		}
		if err := c.Forget(ctx, flags.Arg(0)); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "forgot node %s\n", flags.Arg(0))
		return nil
	})
}

func cmdClear(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags := newFlags("clear", stderr)
	config := flags.String("config", spec.DefaultNodeFile, "node config file")
	flags.Usage = func() {
		fmt.Fprintf(stderr, "Usage: drover clear [--config node.yaml] REV\n\nClears a halted revision (a full commit id, or a prefix of one that\ndrover status shows) so that nodes apply it again.\n\n")
		flags.PrintDefaults()
	}
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	if flags.NArg() != 1 {
		return usageError{"give exactly one REV"}
	}
	prefix := flags.Arg(0)
	return withCluster(ctx, *config, nil, func(cfg *spec.Node, c *cluster.Cluster) error {
		var revs []string
		if c != nil {
			halts, err := c.HaltedAll(ctx)
			if err != nil {
				return err
			}
			for _, h := range halts {
				revs = append(revs, h.Rev)
			}
		} else {
			halts, err := (&reconcile.FileRegistry{Dir: cfg.StateDir}).HaltedAll()
			if err != nil {
				return err
			}
			for r := range halts {
				revs = append(revs, r)
			}
		}
		rev, err := matchRev(prefix, revs, "halted revision")
		if err != nil {
			return err
		}
		if c != nil {
			err = c.Clear(ctx, rev)
		} else {
			err = (&reconcile.FileRegistry{Dir: cfg.StateDir}).Clear(rev)
		}
		if err != nil {
			return err
		}
		if err := agent.OpenHistory(cfg, c).Action(ctx, rev, cluster.Action{By: operator(), What: "cleared"}); err != nil {
			fmt.Fprintf(stderr, "drover clear: record in history: %v\n", err)
		}
		fmt.Fprintf(stdout, "cleared halted revision %s\n", rev)
		return nil
	})
}

// matchRev finds the one revision of revs that starts with prefix; what
// names revs in the error (e.g. "halted revision").
func matchRev(prefix string, revs []string, what string) (string, error) {
	var found []string
	for _, r := range revs {
		if strings.HasPrefix(r, prefix) && !slices.Contains(found, r) {
			found = append(found, r)
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("no %s starts with %q", what, prefix)
	case 1:
		return found[0], nil
	}
	return "", errors.New("ambiguous revision prefix " + prefix + ": " + strings.Join(found, ", "))
}

// recordOnLive records an operator's act that concerns no one revision
// (pause, resume) in the history, on the revision live now; a failure to
// record it only warns: the act itself is done.
func recordOnLive(ctx context.Context, cfg *spec.Node, c *cluster.Cluster, a cluster.Action, stderr io.Writer) {
	hist := agent.OpenHistory(cfg, c)
	revs, err := hist.List(ctx, 0)
	if err == nil {
		if rev := cluster.CurrentLive(revs); rev != "" {
			err = hist.Action(ctx, rev, a)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "drover %s: record in history: %v\n", a.What, err)
	}
}
