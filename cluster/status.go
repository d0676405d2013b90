package cluster

import (
	"context"
	"errors"
	"time"

	"github.com/drover-dev/drover/nodestate"
)

// ClusterStatus is the whole cluster at one moment, for `drover status`
// (and its JSON output).
type ClusterStatus struct {
	Cluster string       `json:"cluster"`
	Time    time.Time    `json:"time"`
	Nodes   []NodeStatus `json:"nodes"`
	// Holders hold rollout slots now.
	Holders []Holder `json:"lockHolders"`
	Halted  []Halt   `json:"halted"`
	// Paused is set while rollouts are paused.
	Paused *PauseState `json:"paused,omitempty"`
	// Pin is set while the cluster is pinned to a revision.
	Pin    *nodestate.Pin `json:"pin,omitempty"`
	Events []Event        `json:"events"`
	// Canaries are the canary records of the revisions nodes serve or
	// move to.
	Canaries []nodestate.Canary `json:"canaries,omitempty"`
}

// SnapshotEvents is how many recent events a Snapshot holds.
const SnapshotEvents = 20

// Snapshot reads the cluster's state. A part that cannot be read is left
// empty and its error joined to the returned one, so that status shows what
// it can.
func (c *Cluster) Snapshot(ctx context.Context) (ClusterStatus, error) {
	s := ClusterStatus{Cluster: c.cfg.Cluster, Time: time.Now().UTC()}
	var errs [6]error
	s.Nodes, errs[0] = c.Nodes(ctx)
	s.Holders, errs[1] = c.Holders(ctx)
	s.Halted, errs[2] = c.HaltedAll(ctx)
	s.Paused, errs[3] = c.pauseState(ctx)
	s.Events, errs[4] = c.Events(ctx, SnapshotEvents)
	s.Canaries = c.canariesOf(ctx, s.Nodes)
	if p, ok, err := c.Pinned(ctx); ok {
		s.Pin = &p
	} else {
		errs[5] = err
	}
	return s, errors.Join(errs[:]...)
}
