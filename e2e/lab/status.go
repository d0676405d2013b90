package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/drover-dev/drover/cluster"
)

// ClusterStatus is `drover status -o json` of the cluster, as one node's
// agent sees it through Redis.
type ClusterStatus struct {
	Nodes []struct {
		Node   string    `json:"node"`
		Rev    string    `json:"rev"`    // live release
		Target string    `json:"target"` // the revision it moves to
		Step   string    `json:"step"`
		Since  time.Time `json:"since"`
		Error  string    `json:"error"`
		Alive  bool      `json:"alive"`
		// Health is the guard's verdict (healthy, failing, out, degraded).
		Health      string    `json:"health"`
		HealthWhy   string    `json:"healthWhy"`
		HealthSince time.Time `json:"healthSince"`
		// Canary is the canary the node runs or waits for, in one line.
		Canary string `json:"canary"`
	} `json:"nodes"`
	LockHolders []any `json:"lockHolders"`
	Halted      []struct {
		Rev    string `json:"rev"`
		Reason string `json:"reason"`
		Node   string `json:"node"`
	} `json:"halted"`
	Events []struct {
		Time time.Time `json:"time"`
		Node string    `json:"node"`
		Rev  string    `json:"rev"`
		Step string    `json:"step"`
		Msg  string    `json:"msg"`
	} `json:"events"`
}

// HaltReason is why rev is halted, or "".
func (s *ClusterStatus) HaltReason(rev string) string {
	for _, h := range s.Halted {
		if h.Rev == rev {
			return h.Reason
		}
	}
	return ""
}

// Events reads the last n events of the cluster's event stream from Redis
// (through Sentinel, as the agents do): each node's steps with their times.
func (l *Lab) Events(ctx context.Context, n int) ([]cluster.Event, error) {
	c, err := cluster.Open(ctx, cluster.Config{SentinelAddrs: l.SentinelAddrs(), MasterName: masterName, Cluster: "lab"}, "e2e-observer", nil)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Events(ctx, n)
}

// Status asks the first running node's drover for the cluster's status.
func (l *Lab) Status(ctx context.Context) (*ClusterStatus, error) {
	for _, n := range l.Nodes() {
		if !n.Running() {
			continue
		}
		out, err := n.Run(ctx, "drover", "status", "--config", "/etc/drover/node.yaml", "-o", "json")
		if err != nil && out == "" {
			return nil, err
		}
		var st ClusterStatus
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			return nil, fmt.Errorf("drover status on %s: %w: %s", n.Name(), err, out)
		}
		return &st, nil
	}
	return nil, errors.New("no node is running")
}
