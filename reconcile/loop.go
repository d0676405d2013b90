package reconcile

import (
	"context"
	"errors"
	"time"
)

// Trigger wakes the loop for a sync. Pokes coalesce: however many arrive
// while a sync runs, exactly one more sync follows it.
type Trigger struct {
	c chan struct{}
}

// NewTrigger returns a trigger with nothing pending.
func NewTrigger() *Trigger { return &Trigger{c: make(chan struct{}, 1)} }

// Poke asks for a sync; it never blocks.
func (t *Trigger) Poke() {
	select {
	case t.c <- struct{}{}:
	default:
	}
}

// C is the channel Run waits on.
func (t *Trigger) C() <-chan struct{} { return t.c }

// Run recovers from an earlier crash, then syncs at once, at every poll
// interval and whenever trigger is poked, with the guard watching the live
// release between rollouts, until ctx ends. A failed sync is
// logged and retried at the next tick; Run returns only ctx's error or a
// recovery failure that leaves the node in an unknown state.
func (n *Node) Run(ctx context.Context, every time.Duration, trigger *Trigger) error {
	n.Register(ctx)
	if err := n.Recover(ctx); err != nil {
		n.log.Error("recovery failed; the node stays out of rotation", "err", err)
		// Keep polling: a newer good revision is the way out.
	}
	done := make(chan struct{})
	go func() { defer close(done); n.Guard(ctx) }()
	defer func() { <-done }()
	return n.Loop(ctx, every, trigger)
}

// Register reports the node's status at once, so the cluster counts this
// node even while it is up to date and silent.
func (n *Node) Register(ctx context.Context) {
	if err := n.d.Registry.Report(ctx, n.Status()); err != nil {
		n.log.Warn("report status", "err", err)
	}
}

// Loop is Run after recovery: it syncs at once, at every poll interval and
// whenever trigger is poked, until ctx ends.
func (n *Node) Loop(ctx context.Context, every time.Duration, trigger *Trigger) error {
	if trigger == nil {
		trigger = NewTrigger()
	}
	trigger.Poke()
	ticker := time.NewTicker(every)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
		case <-trigger.C():
		}
		out, err := n.Sync(ctx)
		switch {
		case errors.Is(err, ErrHalted):
			n.log.Debug("target revision is halted", "rev", short(out.To))
		case errors.Is(err, errCanaryWait):
			n.log.Debug("waiting for the canary", "rev", short(out.To), "err", err)
		case err != nil && ctx.Err() == nil:
			n.log.Error("sync", "rev", short(out.To), "err", err)
		case out.Applied:
			n.log.Info("revision live", "rev", short(out.To), "from", short(out.From))
			n.Settle(ctx)
		}
	}
}
