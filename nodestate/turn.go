package nodestate

import "time"

// TurnOutcome is how a node's turn with a revision ended. The values are
// the outcome label of the metrics' drover_rollouts_total.
type TurnOutcome string

// TurnNone: the turn ended with no rollout (an error while preparing or
// waiting, a halted revision, a canary ended): nothing to count.
const TurnNone TurnOutcome = ""

const (
	// TurnLive: the node went live on the revision.
	TurnLive TurnOutcome = "live"
	// TurnRolledBack: it failed and the node went back.
	TurnRolledBack TurnOutcome = "rolled_back"
	// TurnFailed: it failed and so did the way back.
	TurnFailed TurnOutcome = "failed"
	// TurnLockLost: the lock was lost; the node went back and will try again.
	TurnLockLost TurnOutcome = "lock_lost"
	// TurnRefused: the new release failed before the node left the LB
	// (the overlap's instances, started ahead, never got healthy): halted,
	// nothing on the node changed.
	TurnRefused TurnOutcome = "refused"
)

// TurnOutcomes are the outcomes a turn can be counted as (TurnNone aside).
var TurnOutcomes = []TurnOutcome{TurnLive, TurnRolledBack, TurnFailed, TurnLockLost, TurnRefused}

// TurnEnd is a node's turn that ended.
type TurnEnd struct {
	// Target is the revision the turn moved to, From the release the
	// node served when it began ("" when the tracker did not see it
	// begin).
	Target, From string
	Outcome      TurnOutcome
	// Error is what the node said at the end.
	Error string
	// WasDrained: the node left the LB during the turn (or an earlier
	// one that did not end back in it), Drained long.
	WasDrained bool
	Drained    time.Duration
	// Rollout is from the start of preparing to live (lock wait included),
	// when the outcome is TurnLive and the tracker saw the preparing.
	Rollout    time.Duration
	HasRollout bool
}

// TurnTracker derives a node's turns from the status changes it reports,
// one at a time, in order (one rollout at a time runs on a node). The
// metrics, the history and the notifications all learn a turn's end from
// it. The zero value is ready.
type TurnTracker struct {
	// Since when the node prepares its target and left the LB (zero:
	// not now); the turn's target and the release it left.
	started, drainedAt time.Time
	target, from       string
}

// Observe takes the status change from prev to cur, which happened at now,
// and says whether it ended a turn. A change of nothing but the health or
// the poll time (a heartbeat) is no change.
func (t *TurnTracker) Observe(prev, cur Status, now time.Time) (TurnEnd, bool) {
	if prev.Step == cur.Step && prev.Target == cur.Target && prev.Rev == cur.Rev && prev.Error == cur.Error {
		return TurnEnd{}, false
	}
	switch cur.Step {
	case StepPreparing:
		t.started = now
		if prev.Step != StepPreparing {
			t.from = cur.Rev
		}
	case StepDraining:
		if prev.Step != StepDraining {
			t.drainedAt, t.from = now, cur.Rev
		}
	}
	// While rolling back, the node reports the release it goes back to
	// as its target.
	if cur.Target != "" && cur.Step != StepIdle && cur.Step != StepRollingBack {
		t.target = cur.Target
	}
	// A turn ends back in the LB: idle, or failed after rolling back (a
	// failed check is StepFailed first, on the bad release, then the
	// rollback, then StepFailed again on the previous one); or failed
	// before the drain (the overlap refused the release).
	back := cur.Step == StepIdle || cur.Step == StepFailed && prev.Step == StepRollingBack
	refused := cur.Step == StepFailed && prev.Step == StepStarting
	if !back && !refused {
		return TurnEnd{}, false
	}
	end := TurnEnd{Target: t.target, From: t.from, Error: cur.Error}
	if !t.drainedAt.IsZero() {
		end.WasDrained, end.Drained = true, now.Sub(t.drainedAt)
	}
	switch {
	case refused:
		end.Outcome = TurnRefused
	case prev.Step == StepRollingBack && cur.Step == StepIdle:
		end.Outcome = TurnLockLost
	case prev.Step == StepRollingBack && cur.Rev != cur.Target:
		end.Outcome = TurnRolledBack
	case prev.Step == StepRollingBack:
		end.Outcome = TurnFailed
	case prev.Target != "" && cur.Rev == prev.Target && cur.Error == "":
		end.Outcome = TurnLive
		if !t.started.IsZero() {
			end.HasRollout, end.Rollout = true, now.Sub(t.started)
		}
	}
	*t = TurnTracker{}
	return end, true
}
