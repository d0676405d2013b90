package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/drover-dev/drover/nodestate"
)

// NodeStatus is a registered node as the cluster sees it (nodestate.NodeStatus).
type NodeStatus = nodestate.NodeStatus

// Report publishes this node's status and registers the node; it satisfies
// reconcile.Registry. A change of step, target, live revision or error is
// also an event.
func (c *Cluster) Report(ctx context.Context, st nodestate.Status) error {
	if st.Node == "" {
		st.Node = c.node
	}
	c.mu.Lock()
	prev := c.last
	c.last = &st
	c.mu.Unlock()
	err := c.publish(ctx, st)
	if prev == nil || prev.Step != st.Step || prev.Target != st.Target || prev.Error != st.Error || prev.Rev != st.Rev {
		rev := st.Target
		msg := ""
		if rev == "" {
			rev = st.Rev
		} else if st.Rev != "" {
			msg = "live " + short(st.Rev)
		}
		err = errors.Join(err, c.Emit(ctx, Event{Node: st.Node, Rev: rev, Step: st.Step, Msg: msg, Err: st.Error}))
	}
	if prev != nil && prev.Health != st.Health && st.Health != nodestate.HealthUnknown {
		msg := "guard: " + string(st.Health)
		if st.HealthWhy != "" {
			msg += ": " + st.HealthWhy
		}
		err = errors.Join(err, c.Emit(ctx, Event{Node: st.Node, Rev: st.Rev, Msg: msg}))
	}
	if err != nil {
		return fmt.Errorf("report status: %w", err)
	}
	return nil
}

// publish writes st and the heartbeat in one transaction.
func (c *Cluster) publish(ctx context.Context, st nodestate.Status) error {
	now := time.Now().UTC()
	data, err := json.Marshal(NodeStatus{Status: st, Beat: now})
	if err != nil {
		return err
	}
	_, err = c.data().TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, c.key("nodes"), st.Node, data)
		p.Set(ctx, c.key("alive", st.Node), now.Format(time.RFC3339Nano), c.cfg.HeartbeatTTL)
		return nil
	})
	return err
}

// heartbeat re-publishes the last reported status every third of the TTL.
func (c *Cluster) heartbeat(ctx context.Context) {
	t := time.NewTicker(c.cfg.HeartbeatTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.mu.Lock()
		last := c.last
		c.mu.Unlock()
		if last == nil {
			continue
		}
		bctx, cancel := context.WithTimeout(ctx, c.cfg.HeartbeatTTL/3)
		if err := c.publish(bctx, *last); err != nil {
			c.log.Warn("heartbeat", "err", err)
		} else if err := c.flushBacklog(bctx); err != nil {
			c.log.Warn("write the events kept while Redis was unreachable", "err", err)
		}
		cancel()
	}
}

// Nodes returns every registered node, sorted by name.
func (c *Cluster) Nodes(ctx context.Context) ([]NodeStatus, error) {
	if err := countFirst(c.data().HLen(ctx, c.key("nodes")), "list nodes", MaxNodes); err != nil {
		return nil, err
	}
	all, err := c.data().HGetAll(ctx, c.key("nodes")).Result()
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	if len(all) > MaxNodes {
		return nil, fmt.Errorf("list nodes: %d registered, over the cap of %d", len(all), MaxNodes)
	}
	nodes := make([]NodeStatus, 0, len(all))
	for name, v := range all {
		if err := checkValue("status of node "+clip(name, 64), v); err != nil {
			return nil, err
		}
		var n NodeStatus
		if err := json.Unmarshal([]byte(v), &n); err != nil {
			return nil, fmt.Errorf("status of node %s: %w", name, err)
		}
		n.Node = name
		nodes = append(nodes, n)
	}
	slices.SortFunc(nodes, func(a, b NodeStatus) int { return strings.Compare(a.Node, b.Node) })
	alive := make([]*redis.IntCmd, len(nodes))
	_, err = c.data().Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, n := range nodes {
			alive[i] = p.Exists(ctx, c.key("alive", n.Node))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	for i := range nodes {
		nodes[i].Alive = alive[i].Val() == 1
	}
	return nodes, nil
}

// Forget removes node from the registry (`drover forget`): it stops counting
// as out of service. A node that is still running registers again at its
// next heartbeat.
func (c *Cluster) Forget(ctx context.Context, node string) error {
	_, err := c.data().TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HDel(ctx, c.key("nodes"), node)
		p.Del(ctx, c.key("alive", node))
		return nil
	})
	if err != nil {
		return fmt.Errorf("forget node %s: %w", node, err)
	}
	return nil
}

// OutOfService returns the registered nodes other than this one that are
// drained, failed or silent past their heartbeat TTL, each as "name (why)",
// and how many nodes are registered (this one included if it reported). The
// caller counts itself: it may drain when len(out)+1 <= maxUnavailable.
func (c *Cluster) OutOfService(ctx context.Context) (out []string, registered int, err error) {
	nodes, err := c.Nodes(ctx)
	if err != nil {
		return nil, 0, err
	}
	for _, n := range nodes {
		if why, isOut := n.OutOfService(); isOut && n.Node != c.node {
			out = append(out, fmt.Sprintf("%s (%s)", n.Node, why))
		}
	}
	return out, len(nodes), nil
}

// WaitCapacity waits until this node may go out of service: until, counting
// itself, no more than maxUnavailable registered nodes are out. While it
// waits it calls waiting (if not nil) and records an event each time the
// reason changes; the reason is meant for the node's status. It gives up
// when ctx ends, with the last reason in the error. An unreachable registry
// is a reason to wait, never to go ahead.
func (c *Cluster) WaitCapacity(ctx context.Context, maxUnavailable int, waiting func(reason string)) error {
	maxUnavailable = max(maxUnavailable, 1)
	b := c.newBackoff()
	var reason string
	for {
		var r string
		room := false
		err := c.withCapacity(ctx, func(ctx context.Context) error {
			out, registered, err := c.OutOfService(ctx)
			switch {
			case err != nil:
				return err
			case len(out)+1 <= maxUnavailable:
				// Claim the place before another node's guard counts.
				if err := c.claimDrain(ctx); err != nil {
					return err
				}
				room = true
			default:
				r = fmt.Sprintf("waiting for capacity: %d of %d nodes out of service (%s), maxUnavailable %d",
					len(out), registered, strings.Join(out, ", "), maxUnavailable)
			}
			return nil
		})
		switch {
		case room:
			return nil
		case err != nil && ctx.Err() == nil:
			r = "cannot count nodes out of service: " + err.Error()
		case err != nil:
			return fmt.Errorf("%s: %w", reason, context.Cause(ctx))
		}
		if r != reason {
			reason = r
			c.mu.Lock()
			rev := ""
			if c.last != nil {
				rev = c.last.Target
			}
			c.mu.Unlock()
			c.waiting(ctx, rev, r)
			if waiting != nil {
				waiting(r)
			}
		}
		if err := b.wait(ctx); err != nil {
			return fmt.Errorf("%s: %w", reason, err)
		}
	}
}

// Halt is a revision that failed and that no node applies until cleared.
type Halt struct {
	Rev    string    `json:"rev"`
	Reason string    `json:"reason"`
	Node   string    `json:"node"`
	At     time.Time `json:"at"`
}

// Halt marks rev failed for every node, with the reason (reconcile.Registry).
// A newer commit is another revision and is not halted.
func (c *Cluster) Halt(ctx context.Context, rev, reason string) error {
	h := Halt{Rev: rev, Reason: reason, Node: c.node, At: time.Now().UTC()}
	data, err := json.Marshal(h)
	if err != nil {
		return err
	}
	err = c.onAll(ctx, func(ctx context.Context, r redis.UniversalClient) error {
		return r.HSet(ctx, c.key("halted"), rev, data).Err()
	})
	if err != nil {
		return fmt.Errorf("halt %s: %w", short(rev), err)
	}
	// The history keeps the halt after Clear; a failure to record it does
	// not undo the halt.
	if err := c.History(c.cfg.HistoryKeep).HaltRev(ctx, h); err != nil {
		c.log.Warn("record halt in history", "rev", short(rev), "err", err)
	}
	return nil
}

// Halted says whether rev is halted, and why (reconcile.Registry). It is
// halted if any master says so; it is an error when fewer than a quorum
// answer and none says so.
func (c *Cluster) Halted(ctx context.Context, rev string) (reason string, halted bool, err error) {
	found, err := readAll(ctx, c, func(ctx context.Context, r redis.UniversalClient) (string, bool, error) {
		v, err := r.HGet(ctx, c.key("halted"), rev).Result()
		if errors.Is(err, redis.Nil) {
			return "", false, nil
		}
		return v, err == nil, err
	})
	for _, v := range found {
		h := Halt{Reason: clip(v, MaxText)}
		if checkValue("halt of "+short(rev), v) == nil {
			_ = json.Unmarshal([]byte(v), &h)
		}
		return clip(h.Reason, MaxText), true, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("check whether %s is halted: %w", short(rev), err)
	}
	return "", false, nil
}

// Clear lets nodes apply rev again (an operator's decision).
func (c *Cluster) Clear(ctx context.Context, rev string) error {
	err := c.onAll(ctx, func(ctx context.Context, r redis.UniversalClient) error {
		return r.HDel(ctx, c.key("halted"), rev).Err()
	})
	if err != nil {
		return fmt.Errorf("clear %s: %w", short(rev), err)
	}
	return nil
}

// HaltedAll returns every halted revision, oldest first, merged over the
// masters that answer.
func (c *Cluster) HaltedAll(ctx context.Context) ([]Halt, error) {
	found, err := readAll(ctx, c, func(ctx context.Context, r redis.UniversalClient) (map[string]string, bool, error) {
		if err := countFirst(r.HLen(ctx, c.key("halted")), "halted revisions", MaxHalts); err != nil {
			return nil, false, err
		}
		all, err := r.HGetAll(ctx, c.key("halted")).Result()
		return all, len(all) > 0, err
	})
	byRev := map[string]Halt{}
	for _, all := range found {
		for rev, v := range all {
			h := Halt{Rev: clip(rev, 64), Reason: clip(v, MaxText)}
			if checkValue("halt of "+short(rev), v) == nil {
				_ = json.Unmarshal([]byte(v), &h)
			}
			h.Reason = clip(h.Reason, MaxText)
			byRev[h.Rev] = h
		}
	}
	if err != nil {
		return nil, fmt.Errorf("list halted revisions: %w", err)
	}
	hs := make([]Halt, 0, len(byRev))
	for _, h := range byRev {
		hs = append(hs, h)
	}
	slices.SortFunc(hs, func(a, b Halt) int { return a.At.Compare(b.At) })
	return hs, nil
}

// readAll runs fn on every master at once and returns what those that had
// the thing (found) returned. It fails when fewer than a quorum answered and
// none found it: a halt or a pause seen anywhere counts.
func readAll[T any](ctx context.Context, c *Cluster, fn func(context.Context, redis.UniversalClient) (v T, found bool, err error)) ([]T, error) {
	type result struct {
		v     T
		found bool
		err   error
	}
	rs := make([]result, len(c.masters))
	var wg sync.WaitGroup
	for i, m := range c.masters {
		wg.Go(func() {
			v, f, err := fn(ctx, m)
			rs[i] = result{v, f, err}
		})
	}
	wg.Wait()
	var vals []T
	var errs []error
	ok := 0
	for _, r := range rs {
		if r.err != nil {
			errs = append(errs, r.err)
			continue
		}
		ok++
		if r.found {
			vals = append(vals, r.v)
		}
	}
	if ok >= c.quorum || len(vals) > 0 {
		return vals, nil
	}
	return nil, fmt.Errorf("%d of %d redis servers answered, %d needed: %w", ok, len(c.masters), c.quorum, errors.Join(errs...))
}

// PauseState is the cluster-wide pause switch.
type PauseState struct {
	Reason string    `json:"reason"`
	Node   string    `json:"node"`
	At     time.Time `json:"at"`
}

// Pause stops rollouts cluster-wide: no node takes the rollout lock until
// Resume; a node mid-step finishes its rollout.
func (c *Cluster) Pause(ctx context.Context, reason string) error {
	data, err := json.Marshal(PauseState{Reason: reason, Node: c.node, At: time.Now().UTC()})
	if err != nil {
		return err
	}
	err = c.onAll(ctx, func(ctx context.Context, r redis.UniversalClient) error {
		return r.Set(ctx, c.key("paused"), data, 0).Err()
	})
	if err != nil {
		return fmt.Errorf("pause: %w", err)
	}
	return c.Emit(ctx, Event{Node: c.node, Step: nodestate.StepPaused, Msg: "rollouts paused: " + reason})
}

// Resume lets rollouts go on.
func (c *Cluster) Resume(ctx context.Context) error {
	err := c.onAll(ctx, func(ctx context.Context, r redis.UniversalClient) error {
		return r.Del(ctx, c.key("paused")).Err()
	})
	if err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	return c.Emit(ctx, Event{Node: c.node, Msg: "rollouts resumed"})
}

// Paused says whether rollouts are paused, and why.
func (c *Cluster) Paused(ctx context.Context) (reason string, paused bool, err error) {
	st, err := c.pauseState(ctx)
	if st == nil || err != nil {
		return "", false, err
	}
	return st.Reason, true, nil
}

func (c *Cluster) pauseState(ctx context.Context) (*PauseState, error) {
	found, err := readAll(ctx, c, func(ctx context.Context, r redis.UniversalClient) (string, bool, error) {
		v, err := r.Get(ctx, c.key("paused")).Result()
		if errors.Is(err, redis.Nil) {
			return "", false, nil
		}
		return v, err == nil, err
	})
	if err != nil {
		return nil, fmt.Errorf("check whether rollouts are paused: %w", err)
	}
	for _, v := range found {
		st := PauseState{Reason: clip(v, MaxText)}
		if checkValue("the pause", v) == nil {
			_ = json.Unmarshal([]byte(v), &st)
		}
		st.Reason = clip(st.Reason, MaxText)
		return &st, nil
	}
	return nil, nil
}
