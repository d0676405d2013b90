package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/drover-dev/drover/traffic"
)

// Each node publishes its own traffic figures (package traffic) for the
// revision it serves, under traffic:<node>:<rev>, every TrafficEvery, with a
// TrafficTTL: a node that stops publishing (dead, or on another revision)
// drops out of the baseline by itself. A value is a traffic.Snapshot of a
// few hundred bytes, capped at MaxValue and bounded again when read.

// TrafficEvery is how often an agent publishes its figures.
const TrafficEvery = 20 * time.Second

// TrafficTTL is how long published figures count.
const TrafficTTL = 3 * TrafficEvery

// PublishTraffic writes this node's figures for s.Rev.
func (c *Cluster) PublishTraffic(ctx context.Context, s traffic.Snapshot) error {
	if s.Rev == "" {
		return nil
	}
	s.Node = c.node
	data, err := json.Marshal(s)
	if err != nil {
		return err
	}
	if len(data) > MaxValue {
		return fmt.Errorf("publish traffic: %d bytes, over the %d-byte cap", len(data), MaxValue)
	}
	if err := c.data().Set(ctx, c.key("traffic", c.node, s.Rev), data, TrafficTTL).Err(); err != nil {
		return fmt.Errorf("publish traffic: %w", err)
	}
	return nil
}

// TrafficOf returns what node last published for rev, if it still counts.
func (c *Cluster) TrafficOf(ctx context.Context, node, rev string) (traffic.Snapshot, bool, error) {
	v, err := c.data().Get(ctx, c.key("traffic", node, rev)).Result()
	if errors.Is(err, redis.Nil) {
		return traffic.Snapshot{}, false, nil
	} else if err != nil {
		return traffic.Snapshot{}, false, fmt.Errorf("traffic of %s: %w", clip(node, 64), err)
	}
	if err := checkValue("traffic of "+clip(node, 64), v); err != nil {
		return traffic.Snapshot{}, false, err
	}
	var s traffic.Snapshot
	if err := json.Unmarshal([]byte(v), &s); err != nil {
		return traffic.Snapshot{}, false, fmt.Errorf("traffic of %s: %w", clip(node, 64), err)
	}
	s.Bound()
	return s, true, nil
}

// Baseline sums, over the minutes from..to, the figures of the other live
// nodes whose live release is not rev: the old revision the canary is
// compared with (reconcile.Canaries); and each target's counts over their
// snapshots' window.
func (c *Cluster) Baseline(ctx context.Context, rev string, from, to time.Time) (traffic.Baseline, error) {
	nodes, err := c.Nodes(ctx)
	if err != nil {
		return traffic.Baseline{}, err
	}
	var sum traffic.Baseline
	for _, n := range nodes {
		if !n.Alive || n.Node == c.node || n.Rev == "" || n.Rev == rev {
			continue
		}
		s, ok, err := c.TrafficOf(ctx, n.Node, n.Rev)
		if err != nil {
			c.log.Warn("baseline", "node", n.Node, "err", err)
			continue
		}
		if !ok {
			continue
		}
		b := s.Between(from, to)
		sum.Total.Requests += b.Requests
		sum.Total.Errors += min(b.Errors, b.Requests) // a forged value cannot make a rate above 1
		for name, t := range s.Targets {
			if sum.Targets == nil {
				sum.Targets = map[string]traffic.Counts{}
			}
			cs := sum.Targets[name]
			cs.Requests += t.Requests
			cs.Errors += min(t.Errors, t.Requests)
			sum.Targets[name] = cs
		}
	}
	return sum, nil
}
