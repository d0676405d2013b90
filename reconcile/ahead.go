package reconcile

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/drover-dev/drover/spec"
)

// Starting the overlap's new range while the node waits for its turn.
//
// With the overlap handover the new release's instances start on the
// second range before the drain (handover.go). Under the rollout lock that
// costs every node its start, health checks and soak (~5 s in the lab), one
// node after another. A node instead starts them while it waits for the
// lock, as soon as the ledger holds every migration of the revision: the new
// code then meets the schema it was written for, whether the first node's
// turn applied the migrations or the revision brings none new. Only the
// start moves: the drain, the switch and the verification stay in the
// node's turn, under the lock and within the capacity rule, and the node
// serves its live release throughout.
//
// Not while rollouts are paused (drover pause: nothing starts), and only
// where startAhead would overlap in the turn (not a first deploy, not
// restart). While the range started ahead waits, the guard still checks the
// live release and judges the node, but restarts no instance and puts back
// no drift (aheadWaiting): the unit template already names the new release,
// and the supervisor's Apply would stop the range started ahead. When the
// turn does not come (the wait ends, the revision is halted meanwhile) the
// range is stopped (settle); an agent killed meanwhile finds no journal, and
// its Recover starts the live placement and stops the rest.

// LedgerReader is a Migrator that can say, read-only, whether the ledger
// holds every migration of rev, applied (migrate.Runner).
type LedgerReader interface {
	Applied(ctx context.Context, rev string, sp *spec.Spec, fsys fs.FS) (bool, error)
}

// Pauser is a Lock that can say whether rollouts are paused (cluster).
type Pauser interface {
	Paused(ctx context.Context) (why string, paused bool, err error)
}

// aheadPoll is how often a node waiting for the lock asks the ledger.
const aheadPoll = time.Second

// aheadError is a start ahead that failed: startAhead already said so
// (halted the revision, or reported the node's fault).
type aheadError struct{ err error }

func (e *aheadError) Error() string { return e.err.Error() }
func (e *aheadError) Unwrap() error { return e.err }

type grant struct {
	held    context.Context
	release func(context.Context) error
	err     error
}

// acquire waits for the rollout lock and meanwhile starts rev's instances
// ahead when it may (see the top of this file). ho is the handover started
// ahead, and decided is true when startAhead ran (ho nil: it chose
// restart), so the turn does not decide again.
func (n *Node) acquire(ctx, turnCtx context.Context, cur, rev string, sp *spec.Spec, fsys fs.FS) (held context.Context, release func(context.Context) error, ho *handover, decided bool, err error) {
	slots := sp.Rollout.MaxUnavailable
	ledger, ok := n.d.Migrator.(LedgerReader)
	if !ok || !n.mayStartAhead(cur, sp) {
		held, release, err = n.d.Lock.Acquire(turnCtx, rev, slots)
		return held, release, nil, false, err
	}
	// The held context ends with the one Acquire got: cancel that only
	// once the lock is released, or given up.
	acqCtx, cancelAcq := context.WithCancel(turnCtx)
	grants := make(chan grant, 1)
	go func() {
		h, r, err := n.d.Lock.Acquire(acqCtx, rev, slots)
		grants <- grant{h, r, err}
	}()
	granted := func(g grant) (context.Context, func(context.Context) error, error) {
		if g.err != nil {
			cancelAcq()
			return nil, nil, g.err
		}
		return g.held, func(ctx context.Context) error { defer cancelAcq(); return g.release(ctx) }, nil
	}
	tick := time.NewTicker(aheadPoll)
	defer tick.Stop()
	for ask := true; ; ask = false {
		if !ask {
			select {
			case g := <-grants:
				held, release, err = granted(g)
				return held, release, nil, false, err
			case <-tick.C:
			}
		}
		if !n.aheadAllowed(turnCtx, ledger, rev, sp, fsys) {
			continue
		}
		select {
		case g := <-grants: // the turn came meanwhile: start in it, as ever
			held, release, err = granted(g)
			return held, release, nil, false, err
		default:
		}
		n.live.Lock()
		ho, err = n.startAhead(ctx, turnCtx, cur, rev, sp)
		n.mu.Lock()
		n.aheadWaiting = ho != nil
		n.mu.Unlock()
		n.live.Unlock()
		if err != nil {
			cancelAcq()
			go func() {
				if g := <-grants; g.err == nil {
					_ = g.release(context.WithoutCancel(ctx))
				}
			}()
			return nil, nil, nil, true, &aheadError{err}
		}
		if ho != nil {
			n.log.Info("new release's workers started ahead of the node's turn", "rev", short(rev))
			n.setStep(ctx, StepWaiting, rev, nil)
		}
		held, release, err = granted(<-grants)
		if err != nil && ho != nil {
			n.live.Lock()
			n.endAhead(ctx)
			n.live.Unlock()
		}
		return held, release, ho, true, err
	}
}

// mayStartAhead is the cheap part of startAhead's choice: whether this
// rollout could overlap at all.
func (n *Node) mayStartAhead(cur string, sp *spec.Spec) bool {
	if cur == "" || len(sp.Workers) == 0 || sp.Rollout.Handover == spec.HandoverRestart {
		return false
	}
	_, ok := n.rawSupervisor().(starter)
	return ok
}

// aheadAllowed says whether the node may start rev's instances now: rollouts
// are not paused and the ledger holds rev's migrations. An error is a no.
func (n *Node) aheadAllowed(ctx context.Context, ledger LedgerReader, rev string, sp *spec.Spec, fsys fs.FS) bool {
	if p, ok := n.d.Lock.(Pauser); ok {
		if _, paused, err := p.Paused(ctx); err != nil || paused {
			return false
		}
	}
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	done, err := ledger.Applied(lctx, rev, sp, fsys)
	if err != nil {
		n.log.Debug("cannot read the ledger; the new workers start in the node's turn", "rev", short(rev), "err", err)
		return false
	}
	return done
}

// endAhead forgets a range started ahead whose turn did not come, and stops
// it. The caller holds n.live.
func (n *Node) endAhead(ctx context.Context) {
	n.mu.Lock()
	was := n.aheadWaiting
	n.aheadWaiting = false
	n.mu.Unlock()
	if was {
		n.settle(ctx)
	}
}

// stillHealthy checks once, at the start of the node's turn, that the
// instances started ahead still answer: they may have waited a while.
func (n *Node) stillHealthy(ctx context.Context, ho *handover, sp *spec.Spec) error {
	ws, _ := n.place(ho.to, sp.Workers)
	cs := n.instanceChecks(ws)
	// A few tries, not the start's whole budget: instances that stopped
	// answering are started again, which is quicker than waiting them out.
	wait := time.Second
	for _, c := range cs {
		wait = max(wait, 2*(c.Timeout+c.Interval))
	}
	cctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := n.waitChecks(cctx, cs); err != nil {
		return fmt.Errorf("the workers started ahead no longer answer: %w", err)
	}
	return nil
}

// isAheadError reports whether err is a start ahead that failed.
func isAheadError(err error) bool {
	var ae *aheadError
	return errors.As(err, &ae)
}
