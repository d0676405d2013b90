// Package control is what an operator does to the cluster from the drover
// CLI: pin, roll back and unpin; clear a halt; pause and resume; promote or
// abort a canary; forget a node; ask for a sync now; and the reads beside
// them (the plan of the next revision, the migrations of a revision). Each
// reads node.yaml for the cluster's address, or without a cluster acts on
// this node's state dir; it records what it did in the history and tells
// the notifiers. None opens the node's release store, whose lock a running
// agent holds: every act runs beside a live agent, which takes it up on
// its next turn (or at once, on the sync this package publishes).
//
// The CLI parses flags and prints what these return.
package control

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
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

// Control acts on one node's cluster, or on its state dir without one.
type Control struct {
	cfg  *spec.Node
	c    *cluster.Cluster // nil: node.yaml has no cluster section
	hist agent.History
	file *reconcile.FileRegistry // the state dir's registry, without a cluster
	log  *slog.Logger            // what went wrong after an act was done
	// By names who acts, in the history, events and reasons (user@host).
	By string
}

// Open connects to cfg's cluster (none without a cluster section). log
// gets the warnings of an act that is done but not all recorded (e.g. its
// history entry).
func Open(ctx context.Context, cfg *spec.Node, log *slog.Logger) (*Control, error) {
	c, err := agent.OpenCluster(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	return &Control{
		cfg: cfg, c: c, hist: agent.OpenHistory(cfg, c),
		file: &reconcile.FileRegistry{Dir: cfg.StateDir},
		log:  log, By: Operator(),
	}, nil
}

// Close disconnects from the cluster.
func (k *Control) Close() error {
	if k.c != nil {
		return k.c.Close()
	}
	return nil
}

// Cluster is the cluster, nil when node.yaml has none.
func (k *Control) Cluster() *cluster.Cluster { return k.c }

// Node is node.yaml.
func (k *Control) Node() *spec.Node { return k.cfg }

// History is the cluster's history, or the state dir's.
func (k *Control) History() agent.History { return k.hist }

// Operator names who runs a command: user@host.
func Operator() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return name + "@" + host
}

// needCluster is the error of acts that only make sense in a cluster.
func needCluster(act string) error {
	return fmt.Errorf("%s needs a cluster: node.yaml has no cluster section (on a single node, stop the agent instead)", act)
}

func (k *Control) registry() reconcile.Registry {
	if k.c != nil {
		return k.c
	}
	return k.file
}

func (k *Control) pinner() reconcile.Pinner {
	if k.c != nil {
		return k.c
	}
	return k.file
}

// record adds a to rev's history; a failure only warns: the act is done.
func (k *Control) record(ctx context.Context, rev string, a cluster.Action) {
	if err := k.hist.Action(ctx, rev, a); err != nil {
		k.log.Warn("record in history", "act", a.What, "err", err)
	}
}

// recordOnLive records an act that concerns no one revision (pause,
// resume) on the revision live now.
func (k *Control) recordOnLive(ctx context.Context, a cluster.Action) {
	revs, err := k.hist.List(ctx, 0)
	if err != nil {
		k.log.Warn("record in history", "act", a.What, "err", err)
		return
	}
	if rev := cluster.CurrentLive(revs); rev != "" {
		k.record(ctx, rev, a)
	}
}

// Sync asks every node of the cluster to poll the repo now; without a
// cluster it signals this node's agent, whose pid it returns.
func (k *Control) Sync(ctx context.Context) (pid int, err error) {
	if k.c != nil {
		return 0, k.c.PublishSync(ctx, "drover sync by "+k.By)
	}
	return signalAgent(k.cfg.StateDir)
}

// poke asks the agents to sync now after an act; a node without a running
// agent takes the act up when one starts.
func (k *Control) poke(ctx context.Context, reason string) error {
	if k.c != nil {
		return k.c.PublishSync(ctx, reason)
	}
	_, _ = signalAgent(k.cfg.StateDir)
	return nil
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

// Pause stops new rollouts cluster-wide: a node mid-step finishes its step.
func (k *Control) Pause(ctx context.Context, reason string) error {
	if k.c == nil {
		return needCluster("pause")
	}
	if reason == "" {
		reason = "paused"
	}
	if err := k.c.Pause(ctx, reason+" ("+k.By+")"); err != nil {
		return err
	}
	k.recordOnLive(ctx, cluster.Action{By: k.By, What: "paused", Reason: reason})
	return nil
}

// Resume lets rollouts go on and asks the nodes to sync.
func (k *Control) Resume(ctx context.Context) error {
	if k.c == nil {
		return needCluster("resume")
	}
	if err := k.c.Resume(ctx); err != nil {
		return err
	}
	k.recordOnLive(ctx, cluster.Action{By: k.By, What: "resumed"})
	return k.c.PublishSync(ctx, "resumed by "+k.By)
}

// Forget removes node from the cluster's registry: it no longer counts as
// out of service.
func (k *Control) Forget(ctx context.Context, node string) error {
	if k.c == nil {
		return needCluster("forget")
	}
	return k.c.Forget(ctx, node)
}

// Clear clears the halted revision that starts with prefix, so that nodes
// apply it again; it returns the full revision.
func (k *Control) Clear(ctx context.Context, prefix string) (string, error) {
	var revs []string
	if k.c != nil {
		halts, err := k.c.HaltedAll(ctx)
		if err != nil {
			return "", err
		}
		for _, h := range halts {
			revs = append(revs, h.Rev)
		}
	} else {
		halts, err := k.file.HaltedAll()
		if err != nil {
			return "", err
		}
		for r := range halts {
			revs = append(revs, r)
		}
	}
	rev, err := matchRev(prefix, revs, "halted revision")
	if err != nil {
		return "", err
	}
	if k.c != nil {
		err = k.c.Clear(ctx, rev)
	} else {
		err = k.file.Clear(rev)
	}
	if err != nil {
		return "", err
	}
	k.record(ctx, rev, cluster.Action{By: k.By, What: "cleared"})
	return rev, nil
}

// Halted says whether rev is halted, and why.
func (k *Control) Halted(ctx context.Context, rev string) (reason string, halted bool, err error) {
	return k.registry().Halted(ctx, rev)
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

// NodeStatus is the state dir's view of a node without a cluster: its
// status, the revisions halted on it and its pin (drover status -o json).
type NodeStatus struct {
	reconcile.Status
	Halted map[string]reconcile.Halt `json:"halted"`
	Pin    *reconcile.Pin            `json:"pin,omitempty"`
}

// LocalStatus reads a node's status without a cluster; a node whose agent
// never ran is idle.
func (k *Control) LocalStatus(ctx context.Context) (NodeStatus, error) {
	st, err := k.file.ReadStatus()
	if errors.Is(err, fs.ErrNotExist) {
		st = reconcile.Status{Node: k.cfg.Name, Step: reconcile.StepIdle}
	} else if err != nil {
		return NodeStatus{}, fmt.Errorf("read status: %w", err)
	}
	halted, err := k.file.HaltedAll()
	if err != nil {
		return NodeStatus{}, err
	}
	ns := NodeStatus{Status: st, Halted: halted}
	if p, ok, err := k.file.Pinned(ctx); err != nil {
		return NodeStatus{}, err
	} else if ok {
		ns.Pin = &p
	}
	return ns, nil
}
