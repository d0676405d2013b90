package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-redsync/redsync/v4"

	"github.com/drover-dev/drover/nodestate"
)

// The guard's side of the capacity rule (invariant 1). A node leaves service
// by its own choice in two ways: a rollout's drain and the steady-state
// guard's take-out. Both decide under one short redsync mutex
// (capacity), count the others and publish themselves as out before they
// release it, so two nodes never both see room for one.

// capacityExpiry bounds how long a dead decider blocks the others.
const capacityExpiry = 10 * time.Second

// withCapacity runs fn holding the capacity mutex, waiting for it with
// backoff until ctx ends.
func (c *Cluster) withCapacity(ctx context.Context, fn func(context.Context) error) error {
	m := c.rs.NewMutex(c.key("capacity"),
		redsync.WithExpiry(capacityExpiry),
		redsync.WithTries(1),
		redsync.WithFailFast(true),
		redsync.WithTimeoutFactor(0.1))
	b := c.newBackoff()
	for {
		err := m.TryLockContext(ctx)
		if err == nil {
			break
		}
		var taken *redsync.ErrTaken
		if !errors.As(err, &taken) {
			return fmt.Errorf("capacity mutex: %w", err)
		}
		if err := b.wait(ctx); err != nil {
			return fmt.Errorf("capacity mutex: %w", err)
		}
	}
	// Give fn less than the expiry, so it cannot outlive the mutex.
	fctx, cancel := context.WithTimeout(ctx, capacityExpiry/2)
	defer cancel()
	ferr := fn(fctx)
	uctx, cancel2 := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel2()
	if _, err := m.UnlockContext(uctx); err != nil {
		c.log.Debug("release capacity mutex", "err", err)
	}
	return ferr
}

// TakeOut lets the guard take this node out of the LB (reconcile.Room): out
// runs, under the capacity mutex, only if counting this node at most
// maxUnavailable registered nodes are out of service or failing their
// checks. Counting the failing ones is what keeps a failure that every node
// shares (the database is down) from taking the whole cluster out: each node
// reports "failing" rounds before it would leave, so by then it sees the
// others failing too and stays in, degraded.
func (c *Cluster) TakeOut(ctx context.Context, maxUnavailable int, out func(context.Context) error) (taken bool, reason string, err error) {
	maxUnavailable = max(maxUnavailable, 1)
	err = c.withCapacity(ctx, func(ctx context.Context) error {
		nodes, err := c.Nodes(ctx)
		if err != nil {
			return err
		}
		var busy []string
		for _, n := range nodes {
			if n.Node == c.node {
				continue
			}
			if why, isOut := n.OutOfService(); isOut {
				busy = append(busy, fmt.Sprintf("%s (%s)", n.Node, why))
			} else if n.Health == nodestate.HealthFailing || n.Health == nodestate.HealthDegraded {
				busy = append(busy, fmt.Sprintf("%s (%s)", n.Node, n.Health))
			}
		}
		if len(busy)+1 > maxUnavailable {
			reason = fmt.Sprintf("%d of %d nodes are out or failing too (%s), maxUnavailable %d: an LB with no healthy node serves nobody",
				len(busy), len(nodes), strings.Join(busy, ", "), maxUnavailable)
			return nil
		}
		if err := out(ctx); err != nil {
			return err
		}
		taken = true
		return nil
	})
	return taken, reason, err
}

// claimDrain publishes this node as draining, so that a guard deciding
// right after counts it; WaitCapacity calls it under the capacity mutex.
func (c *Cluster) claimDrain(ctx context.Context) error {
	c.mu.Lock()
	last := c.last
	c.mu.Unlock()
	if last == nil {
		return nil
	}
	st := *last
	st.Step = nodestate.StepDraining
	return c.publish(ctx, st)
}

// Notice records something the guard found or did on this node (drift put
// back, an instance restarted) in the event stream (reconcile.Noticer).
func (c *Cluster) Notice(ctx context.Context, rev, msg string) error {
	return c.Emit(ctx, Event{Node: c.node, Rev: rev, Msg: msg})
}
