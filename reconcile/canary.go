package reconcile

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/drover-dev/drover/spec"
	"github.com/drover-dev/drover/traffic"
)

// The canary (rollout.canary): the first node to take a revision claims a
// canary record for it while it holds the rollout lock, rolls out as any
// node, re-joins the LB, releases the lock, and then serves real traffic
// while the gate (gate.go) watches its figures. The other nodes do not take
// the lock for that revision while its record says observing or passed:
// they wait, saying on whom and how it goes. The decision is written to the
// record: promoted releases them; failed or aborted halts the revision and
// the canary drains and rolls back. A canary agent that restarts finds its
// own record and judges again from the start (the figures of the killed
// agent are gone): no other node takes the revision meanwhile.

// Canaries holds the canary records of the cluster.
type Canaries interface {
	// ClaimCanary writes c unless rev has a record; it returns the record
	// that holds and whether it is c.
	ClaimCanary(ctx context.Context, c Canary) (Canary, bool, error)
	// CanaryOf returns rev's record, an operator's promote or abort
	// applied to its state.
	CanaryOf(ctx context.Context, rev string) (Canary, bool, error)
	// UpdateCanary overwrites the record of c.Rev.
	UpdateCanary(ctx context.Context, c Canary) error
	// Baseline sums the figures, over the minutes from..to, of the nodes
	// whose live release is not rev, in all and by target.
	Baseline(ctx context.Context, rev string, from, to time.Time) (traffic.Baseline, error)
}

// Traffic is this node's own figures (package traffic).
type Traffic interface {
	// Live starts counting for rev (with sp's sites and workers) unless
	// it is already counted.
	Live(rev string, sp *spec.Spec, now time.Time)
	Figures(from, to time.Time) traffic.Figures
}

// CanaryTick is how often the canary judges, and waiting nodes look.
var canaryTick = 5 * time.Second

// canaryWaitBound is how long one Sync waits for another node's canary
// before returning to the loop (which polls again: a newer commit or a
// pin goes on without it).
var canaryWaitBound = time.Minute

// errCanaryWait ends a Sync that waited on another node's canary.
var errCanaryWait = errors.New("waiting for the canary")

func (n *Node) canaryOn(sp *spec.Spec) bool {
	return sp.Rollout.Canary != nil && n.d.Canaries != nil && n.d.Traffic != nil
}

// awaitCanary returns nil when this node may take rev: there is no canary
// record yet, or it was promoted, or it is this node's own. While another
// node's canary is undecided it waits, bounded by canaryWaitBound.
func (n *Node) awaitCanary(ctx context.Context, rev string, sp *spec.Spec) error {
	if !n.canaryOn(sp) {
		return nil
	}
	bound := time.NewTimer(canaryWaitBound)
	defer bound.Stop()
	for {
		c, ok, err := n.d.Canaries.CanaryOf(ctx, rev)
		if err != nil {
			return fmt.Errorf("canary of %s: %w", short(rev), err)
		}
		// A failed or aborted canary stops every node, its own included:
		// the revision goes on only through a newer commit.
		if ok && (c.State == CanaryFailed || c.State == CanaryAborted) {
			n.setCanary(c.Summary())
			return fmt.Errorf("%w: %s: %s", ErrHalted, short(rev), c.Summary())
		}
		if !ok || c.State == CanaryPromoted || c.Node == n.cfg.Name {
			n.setCanary("")
			return nil
		}
		msg := "waiting: " + c.Summary()
		if since := time.Since(c.Updated); since > 3*canaryTick+30*time.Second {
			msg += fmt.Sprintf(" (no word from %s for %s: it judges again when its agent is back; or drover promote / drover abort)",
				c.Node, since.Round(time.Second))
		}
		n.setCanary(msg)
		n.setStep(ctx, StepWaiting, rev, nil)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-bound.C:
			return errCanaryWait
		case <-time.After(canaryTick):
		}
	}
}

// claimCanary, with the lock held, makes this node rev's canary when no
// node is; it reports whether this node must run the gate after its
// rollout. A record claimed since awaitCanary looked sends it back to wait.
func (n *Node) claimCanary(ctx context.Context, from, rev string, sp *spec.Spec) (bool, error) {
	if !n.canaryOn(sp) {
		return false, nil
	}
	c, mine, err := n.d.Canaries.ClaimCanary(ctx, Canary{
		Rev: rev, Node: n.cfg.Name, From: from, State: CanaryObserving, Promote: sp.Rollout.Canary.Promote,
		Left: sp.Rollout.Canary.Duration.D(), Updated: time.Now(),
	})
	switch {
	case err != nil:
		return false, fmt.Errorf("claim canary of %s: %w", short(rev), err)
	case c.State == CanaryFailed || c.State == CanaryAborted:
		return false, fmt.Errorf("%w: %s: %s", ErrHalted, short(rev), c.Summary())
	case mine || c.Node == n.cfg.Name:
		return c.State == CanaryObserving, nil
	case c.State == CanaryPromoted:
		return false, nil
	}
	return false, fmt.Errorf("%w: %s", errCanaryWait, c.Summary())
}

// resumeCanary runs the gate again on a node already live on rev whose
// record names it and is undecided (its agent restarted mid-canary).
func (n *Node) resumeCanary(ctx context.Context, rev string) error {
	sp := n.specOrNil(rev)
	if sp == nil || !n.canaryOn(sp) {
		return nil
	}
	c, ok, err := n.d.Canaries.CanaryOf(ctx, rev)
	if err != nil || !ok || c.Node != n.cfg.Name {
		return err
	}
	switch c.State {
	case CanaryObserving, CanaryPassed:
		n.log.Info("canary: judging again after a restart", "rev", short(rev))
		return n.runCanary(ctx, c.From, rev, sp, c.State == CanaryPassed)
	case CanaryFailed, CanaryAborted:
		// Decided while this agent was gone (drover abort of a silent
		// canary): the node still serves rev, so it rolls back now.
		if c.Reason == "" {
			c.Reason = "aborted by an operator"
		}
		return n.failCanary(ctx, c.From, rev, sp, c)
	}
	return nil
}

// runCanary serves rev as the canary until the gate decides, writing the
// record at every tick; on a failure (or an abort) it halts rev and rolls
// back to from, drained first. passed resumes a manual canary that already
// passed.
func (n *Node) runCanary(ctx context.Context, from, rev string, sp *spec.Spec, passed bool) error {
	if sp == nil || !n.canaryOn(sp) {
		return nil
	}
	cfg := *sp.Rollout.Canary
	start := time.Now()
	n.d.Traffic.Live(rev, sp, start)
	c := Canary{Rev: rev, Node: n.cfg.Name, From: from, State: CanaryObserving, Promote: cfg.Promote, Start: start}
	if passed {
		c.State = CanaryPassed
	}
	n.notice(ctx, rev, fmt.Sprintf("canary: serving %s for %s before the other nodes", short(rev), cfg.Duration.D()))
	t := time.NewTicker(canaryTick)
	defer t.Stop()
	for {
		now := time.Now()
		f := n.d.Traffic.Figures(start, now)
		base, berr := n.d.Canaries.Baseline(ctx, rev, start, now)
		if berr != nil {
			n.log.Warn("canary baseline", "err", berr)
		}
		seen := Seen{Canary: f.Total, P99: f.P99, Baseline: base.Total, BaselineTargets: base.Targets}
		for name, tg := range f.Targets {
			if seen.Targets == nil {
				seen.Targets = map[string]traffic.Counts{}
			}
			seen.Targets[name] = tg.Counts
		}
		v := Judge(cfg, start, now, c.Extended, seen)
		c.Requests, c.Errors, c.P99, c.BaselineRequests, c.BaselineErrors, c.Z, c.Left, c.Updated =
			f.Total.Requests, f.Total.Errors, f.P99, base.Total.Requests, base.Total.Errors, v.Z, v.Left, now
		if math.IsInf(c.Z, 0) {
			c.Z = math.Copysign(1e9, c.Z) // JSON has no infinity
		}
		// An operator's word comes first.
		if cur, ok, err := n.d.Canaries.CanaryOf(ctx, rev); err == nil && ok {
			switch cur.State {
			case CanaryAborted:
				c.State, c.Reason = CanaryAborted, "aborted by an operator"
				return n.failCanary(ctx, from, rev, sp, c)
			case CanaryPromoted:
				c.State = CanaryPromoted
				if c.Reason == "" {
					c.Reason = "promoted by an operator (" + v.Reason + ")"
				}
				return n.endCanary(ctx, rev, c)
			}
		}
		if c.State == CanaryObserving {
			switch v.Decision {
			case DecideExtend:
				c.Extended = true
				n.notice(ctx, rev, "canary: "+v.Reason)
			case DecideFail:
				c.State, c.Reason = CanaryFailed, v.Reason
				return n.failCanary(ctx, from, rev, sp, c)
			case DecidePass:
				c.Reason = v.Reason
				if cfg.Promote == "auto" {
					c.State = CanaryPromoted
					return n.endCanary(ctx, rev, c)
				}
				c.State = CanaryPassed
				n.notice(ctx, rev, "canary passed, waiting for drover promote: "+v.Reason)
			}
		}
		if err := n.d.Canaries.UpdateCanary(ctx, c); err != nil {
			n.log.Warn("canary record", "err", err)
		}
		n.setCanary(c.Summary())
		n.setStep(ctx, StepCanary, rev, nil)
		select {
		case <-ctx.Done():
			return ctx.Err() // the next agent judges again
		case <-t.C:
		}
	}
}

// endCanary records a promotion: the other nodes go on.
func (n *Node) endCanary(ctx context.Context, rev string, c Canary) error {
	c.Updated = time.Now()
	if err := n.d.Canaries.UpdateCanary(context.WithoutCancel(ctx), c); err != nil {
		return fmt.Errorf("canary record: %w", err)
	}
	n.setCanary(c.Summary())
	n.notice(ctx, rev, "canary promoted: "+c.Reason)
	n.setStep(ctx, StepIdle, "", nil)
	return nil
}

// failCanary halts rev cluster-wide first (no waiting node takes it), then
// takes the lock, drains the canary and rolls it back to from.
func (n *Node) failCanary(ctx context.Context, from, rev string, sp *spec.Spec, c Canary) error {
	ctx = context.WithoutCancel(ctx)
	c.Updated = time.Now()
	cause := fmt.Errorf("canary %s: %s", c.State, c.Reason)
	if err := n.d.Canaries.UpdateCanary(ctx, c); err != nil {
		n.log.Error("canary record", "err", err)
	}
	n.setCanary(c.Summary())
	n.halt(ctx, rev, cause)
	if from == "" {
		return fmt.Errorf("%v; no previous release to roll back to", cause)
	}
	turnCtx, cancel := context.WithTimeout(ctx, sp.Rollout.ProgressDeadline.D())
	defer cancel()
	lockCtx, release, err := n.d.Lock.Acquire(turnCtx, rev, sp.Rollout.MaxUnavailable)
	if err != nil {
		return fmt.Errorf("%v; rollout lock for the rollback: %w", cause, err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := release(rctx); err != nil {
			n.log.Warn("release rollout lock", "err", err)
		}
	}()
	if err := n.d.Capacity.WaitCapacity(lockCtx, sp.Rollout.MaxUnavailable, func(reason string) {
		n.setStep(ctx, StepWaiting, rev, fmt.Errorf("canary failed; waiting for capacity to roll back: %s", reason))
	}); err != nil {
		return fmt.Errorf("%v; capacity for the rollback: %w", cause, err)
	}
	n.live.Lock()
	defer n.live.Unlock()
	// Journaled as a rollback of a drained node before the drain: an agent
	// killed from here drains again and restores (Recover).
	e := &entry{From: from, To: rev, Step: StepRollingBack, Started: time.Now()}
	if err := n.journal.write(e); err != nil {
		return errors.Join(cause, err)
	}
	if err := n.drainThenRestore(ctx, e, rev); err != nil {
		n.setStep(ctx, StepFailed, rev, fmt.Errorf("%v; rollback to %s failed: %w", cause, short(from), err))
		return errors.Join(cause, err)
	}
	// After an overlap handover the failed release's instances still run
	// on the other range: Loop settles only a revision put live.
	n.settle(ctx)
	n.setStep(ctx, StepFailed, rev, cause)
	return cause
}

// setCanary sets the canary line of the node's status (reported with the
// next step change or heartbeat).
func (n *Node) setCanary(s string) {
	n.mu.Lock()
	n.status.Canary = s
	n.mu.Unlock()
}
