package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/drover-dev/drover/nodestate"
)

// SetPin pins the cluster to p.Rev (drover pin, drover rollback): every
// agent takes it as the desired revision instead of the branch head. Like a
// halt or the pause switch it is written to every master and needs a
// quorum. A halted revision cannot be pinned: the caller checks Halted
// first, and the agents would refuse it anyway.
func (c *Cluster) SetPin(ctx context.Context, p nodestate.Pin) error {
	data, err := json.Marshal(p)
	if err != nil {
		return err
	}
	err = c.onAll(ctx, func(ctx context.Context, r redis.UniversalClient) error {
		return r.Set(ctx, c.key("pin"), data, 0).Err()
	})
	if err != nil {
		return fmt.Errorf("pin %s: %w", short(p.Rev), err)
	}
	msg := "pinned to " + short(p.Rev) + " by " + p.By
	if p.Reason != "" {
		msg += ": " + p.Reason
	}
	return c.Emit(ctx, Event{Node: c.node, Rev: p.Rev, Msg: msg})
}

// Unpin lets the agents follow the branch again.
func (c *Cluster) Unpin(ctx context.Context, by string) error {
	err := c.onAll(ctx, func(ctx context.Context, r redis.UniversalClient) error {
		return r.Del(ctx, c.key("pin")).Err()
	})
	if err != nil {
		return fmt.Errorf("unpin: %w", err)
	}
	return c.Emit(ctx, Event{Node: c.node, Msg: "unpinned by " + by + ": following the branch"})
}

// Pinned returns the cluster's pin (reconcile.Pinner). With several masters
// the newest pin any of them holds wins; fewer than a quorum answering is an
// error, so that an agent in doubt stays where it is instead of following
// the branch.
func (c *Cluster) Pinned(ctx context.Context) (nodestate.Pin, bool, error) {
	found, err := readAll(ctx, c, func(ctx context.Context, r redis.UniversalClient) (string, bool, error) {
		v, err := r.Get(ctx, c.key("pin")).Result()
		if errors.Is(err, redis.Nil) {
			return "", false, nil
		}
		return v, err == nil, err
	})
	if err != nil {
		return nodestate.Pin{}, false, fmt.Errorf("read pin: %w", err)
	}
	var best nodestate.Pin
	for _, v := range found {
		if err := checkValue("the pin", v); err != nil {
			return nodestate.Pin{}, false, fmt.Errorf("read pin: %w", err)
		}
		var p nodestate.Pin
		if err := json.Unmarshal([]byte(v), &p); err != nil || p.Rev == "" {
			return nodestate.Pin{}, false, fmt.Errorf("read pin: not a pin: %q", v)
		}
		if best.Rev == "" || p.At.After(best.At) {
			best = p
		}
	}
	return best, best.Rev != "", nil
}
