package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/drover-dev/drover/nodestate"
)

// A revision's canary record (nodestate.Canary) is canary:<rev>, claimed
// with SET NX by the first node that takes the revision and written by it
// alone; an operator's drover promote or abort is canary:<rev>:op, so that
// the canary's own writes never overwrite it. Both live CanaryKeep.

// CanaryKeep is how long a canary record is kept.
const CanaryKeep = 7 * 24 * time.Hour

// ClaimCanary writes rec unless rec.Rev has a record (reconcile.Canaries).
func (c *Cluster) ClaimCanary(ctx context.Context, rec nodestate.Canary) (nodestate.Canary, bool, error) {
	data, err := json.Marshal(rec)
	if err != nil {
		return rec, false, err
	}
	ok, err := c.data().SetNX(ctx, c.key("canary", rec.Rev), data, CanaryKeep).Result()
	if err != nil {
		return rec, false, fmt.Errorf("claim canary of %s: %w", short(rec.Rev), err)
	}
	if ok {
		return rec, true, c.Emit(ctx, Event{Node: rec.Node, Rev: rec.Rev, Msg: "canary: " + rec.Node + " takes the revision first"})
	}
	cur, found, err := c.CanaryOf(ctx, rec.Rev)
	if err != nil {
		return rec, false, err
	}
	if !found {
		return rec, false, fmt.Errorf("claim canary of %s: the record vanished", short(rec.Rev))
	}
	return cur, false, nil
}

// CanaryOf returns rev's record with an operator's promote or abort applied
// (a failed canary stays failed).
func (c *Cluster) CanaryOf(ctx context.Context, rev string) (nodestate.Canary, bool, error) {
	return c.canaryOf(ctx, rev, true)
}

// canaryOf reads rev's record, with the operator's word applied or not.
func (c *Cluster) canaryOf(ctx context.Context, rev string, withOp bool) (nodestate.Canary, bool, error) {
	vals, err := c.data().MGet(ctx, c.key("canary", rev), c.key("canary", rev, "op")).Result()
	if err != nil {
		return nodestate.Canary{}, false, fmt.Errorf("canary of %s: %w", short(rev), err)
	}
	v, ok := vals[0].(string)
	if !ok {
		return nodestate.Canary{}, false, nil
	}
	if err := checkValue("canary of "+short(rev), v); err != nil {
		return nodestate.Canary{}, false, err
	}
	var rec nodestate.Canary
	if err := json.Unmarshal([]byte(v), &rec); err != nil {
		return nodestate.Canary{}, false, fmt.Errorf("canary of %s: %w", short(rev), err)
	}
	rec.Reason = clip(rec.Reason, MaxText)
	if op, ok := vals[1].(string); ok && withOp && rec.State != nodestate.CanaryFailed {
		switch nodestate.CanaryState(op) {
		case nodestate.CanaryPromoted, nodestate.CanaryAborted:
			rec.State = nodestate.CanaryState(op)
		}
	}
	return rec, true, nil
}

// UpdateCanary overwrites the record; a decision (passed, promoted, failed,
// aborted) is also an event and goes into the history.
func (c *Cluster) UpdateCanary(ctx context.Context, rec nodestate.Canary) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	// The record as written, not with the operator's word applied: the
	// canary writing "promoted" after drover promote is the decision
	// (compared with the overlay it looked unchanged, and the promotion
	// reached neither the events nor the history).
	prev, _, _ := c.canaryOf(ctx, rec.Rev, false)
	if err := c.data().Set(ctx, c.key("canary", rec.Rev), data, CanaryKeep).Err(); err != nil {
		return fmt.Errorf("canary of %s: %w", short(rec.Rev), err)
	}
	if rec.State == nodestate.CanaryObserving || (prev.State == rec.State && prev.Reason == rec.Reason) {
		return nil
	}
	err = c.Emit(ctx, Event{Node: rec.Node, Rev: rec.Rev, Msg: "canary " + string(rec.State) + ": " + rec.Reason})
	return errors.Join(err, c.History(c.cfg.HistoryKeep).Canary(ctx, rec))
}

// Promote releases rev's canary that passed with promote: manual (drover
// promote); it refuses a revision without a canary, or one that failed.
func (c *Cluster) Promote(ctx context.Context, rev, by string) error {
	return c.canaryOp(ctx, rev, by, nodestate.CanaryPromoted)
}

// Abort fails rev's canary (drover abort): the revision is halted at once,
// so no waiting node takes it, and the canary node rolls back when it sees
// the abort.
func (c *Cluster) Abort(ctx context.Context, rev, by string) error {
	if err := c.canaryOp(ctx, rev, by, nodestate.CanaryAborted); err != nil {
		return err
	}
	return c.Halt(ctx, rev, "canary aborted by "+by)
}

func (c *Cluster) canaryOp(ctx context.Context, rev, by string, op nodestate.CanaryState) error {
	rec, ok, err := c.CanaryOf(ctx, rev)
	switch {
	case err != nil:
		return err
	case !ok:
		return fmt.Errorf("%s has no canary", short(rev))
	case rec.State == nodestate.CanaryFailed:
		return fmt.Errorf("the canary of %s failed: %s", short(rev), rec.Reason)
	case rec.State == op:
		return nil
	}
	if err := c.data().Set(ctx, c.key("canary", rev, "op"), string(op), CanaryKeep).Err(); err != nil {
		return fmt.Errorf("%s %s: %w", op, short(rev), err)
	}
	if err := c.History(c.cfg.HistoryKeep).Action(ctx, rev, Action{By: by, What: "canary " + string(op)}); err != nil {
		c.log.Warn("record in history", "err", err)
	}
	return c.Emit(ctx, Event{Node: c.node, Rev: rev, Msg: fmt.Sprintf("canary %s by %s", op, by)})
}

// canariesOf returns the canary records of the revisions nodes serve or
// move to, best effort (status shows what it can read).
func (c *Cluster) canariesOf(ctx context.Context, nodes []NodeStatus) []nodestate.Canary {
	var out []nodestate.Canary
	seen := map[string]bool{}
	for _, n := range nodes {
		for _, rev := range []string{n.Target, n.Rev} {
			if rev == "" || seen[rev] {
				continue
			}
			seen[rev] = true
			if rec, ok, err := c.CanaryOf(ctx, rev); err == nil && ok {
				out = append(out, rec)
			}
		}
	}
	return out
}
