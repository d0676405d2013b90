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
// Not while rollouts are paused (drover pause: nothing starts), not with
// rollout.canary (no other node runs the revision before it is judged, and a
// start failing here would halt it under the canary), and only where
// startAhead would overlap in the turn (not a first deploy, not restart).
// The ledger is asked every second at first, less often while it says "not
// yet", and no more once it cannot be read. A range started ahead keeps
// waiting only while its revision may still go out: once another node
// halts it or rollouts are paused, the range is stopped at once, and the
// turn, if it comes, starts it again.
//
// While the range started ahead waits, the guard still checks the live
// release and judges the node, but restarts no instance and puts back
// no drift (aheadWaiting): the supervisor's Apply would stop the range
// started ahead. (With systemd the new range's instances have their own
// unit files beside the live template, so a live instance that crashes
// while the range waits comes back on its own release.) When the turn
// does not come the range is stopped (settle); an agent killed meanwhile
// finds no journal, and its Recover starts the live placement and stops the
// rest.

// LedgerReader is a Migrator that can say, read-only, whether the ledger
// holds every migration of rev, applied (migrate.Runner).
type LedgerReader interface {
	Applied(ctx context.Context, rev string, sp *spec.Spec, fsys fs.FS) (bool, error)
}

// Pauser is a Lock that can say whether rollouts are paused (cluster).
type Pauser interface {
	Paused(ctx context.Context) (why string, paused bool, err error)
}

// aheadPoll is how often a node waiting for the lock first asks the ledger;
// each "not yet" doubles it, up to aheadPollMax, so that nodes waiting
// through a long migration do not open a database session every second.
const (
	aheadPoll    = time.Second
	aheadPollMax = 8 * time.Second
)

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
	every := aheadPoll
	timer := time.NewTimer(0)
	defer timer.Stop()
	asking := true // false once the start ran, or the ledger cannot be read
	for {
		select {
		case g := <-grants:
			held, release, err = granted(g)
			if err != nil && ho != nil {
				n.live.Lock()
				n.endAhead(ctx)
				n.live.Unlock()
				ho = nil
			}
			return held, release, ho, decided, err
		case <-timer.C:
		}
		switch {
		case ho != nil:
			// Started: the range waits for the turn only while the
			// revision may still go out (not halted by another node,
			// rollouts not paused); else it stops, and the turn, if it
			// comes, starts it again.
			if why := n.aheadStale(turnCtx, rev); why != "" {
				n.log.Info("stopping the workers started ahead", "rev", short(rev), "because", why)
				n.live.Lock()
				n.endAhead(ctx)
				n.live.Unlock()
				ho, decided = nil, false
			}
		case asking:
			may, final := n.aheadAllowed(turnCtx, ledger, rev, sp, fsys)
			if final {
				asking = false
			}
			if !may {
				every = min(2*every, aheadPollMax)
				break
			}
			asking = false
			select {
			case g := <-grants: // the turn came meanwhile: start in it, as ever
				held, release, err = granted(g)
				return held, release, nil, false, err
			default:
			}
			n.live.Lock()
			h, err := n.startAhead(ctx, turnCtx, cur, rev, sp)
			n.mu.Lock()
			n.aheadWaiting = h != nil
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
			ho, decided = h, true
			if ho != nil {
				n.log.Info("new release's workers started ahead of the node's turn", "rev", short(rev))
				n.setStep(ctx, StepWaiting, rev, nil)
				every = aheadPoll
			}
		}
		timer.Reset(every)
	}
}

// aheadStale says why a range started ahead must not wait on: rev was
// halted meanwhile, or rollouts paused ("" when neither; an error reading
// either is not a reason).
func (n *Node) aheadStale(ctx context.Context, rev string) string {
	if reason, halted, err := n.d.Registry.Halted(ctx, rev); err == nil && halted {
		return "halted: " + reason
	}
	if p, ok := n.d.Lock.(Pauser); ok {
		if why, paused, err := p.Paused(ctx); err == nil && paused {
			return "rollouts paused: " + why
		}
	}
	return ""
}

// mayStartAhead is the cheap part of startAhead's choice: whether this
// rollout could overlap at all.
func (n *Node) mayStartAhead(cur string, sp *spec.Spec) bool {
	if cur == "" || len(sp.Workers) == 0 || sp.Rollout.Handover == spec.HandoverRestart {
		return false
	}
	// With a canary the other nodes must not run the revision until it is
	// judged, and a start failing here would halt it under the canary's
	// feet: the start stays in the turn.
	if n.canaryOn(sp) {
		return false
	}
	_, ok := n.rawSupervisor().(starter)
	return ok
}

// aheadAllowed says whether the node may start rev's instances now:
// rollouts are not paused and the ledger holds rev's migrations. final is
// true when asking again is pointless: the ledger cannot be read (no
// database section, a bad DSN file) — the start then stays in the turn.
func (n *Node) aheadAllowed(ctx context.Context, ledger LedgerReader, rev string, sp *spec.Spec, fsys fs.FS) (may, final bool) {
	if p, ok := n.d.Lock.(Pauser); ok {
		if _, paused, err := p.Paused(ctx); err != nil || paused {
			return false, false
		}
	}
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	done, err := ledger.Applied(lctx, rev, sp, fsys)
	if err != nil {
		n.log.Info("cannot read the ledger; the new workers start in the node's turn", "rev", short(rev), "err", err)
		return false, true
	}
	return done, false
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
