package nodestate

import (
	"testing"
	"time"
)

// step is one status a node reports, s seconds after the first.
type step struct {
	s                int
	step             Step
	rev, target, err string
}

// feed gives the tracker the statuses in order and returns the ends it
// reported, with the index of the status that ended each.
func feed(steps []step) (ends []TurnEnd, at []int) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var tr TurnTracker
	var prev Status
	for i, s := range steps {
		now := t0.Add(time.Duration(s.s) * time.Second)
		cur := Status{Node: "n1", Rev: s.rev, Target: s.target, Step: s.step, Error: s.err, Since: now}
		if i == 0 {
			prev = cur // the registry's first report is its own prev
		}
		if end, ok := tr.Observe(prev, cur, now); ok {
			ends, at = append(ends, end), append(at, i)
		}
		// A heartbeat: the same status again, with a newer poll time.
		hb := cur
		hb.Seen = now.Add(time.Millisecond)
		if _, ok := tr.Observe(cur, hb, now); ok {
			panic("a heartbeat ended a turn")
		}
		prev = hb
	}
	return ends, at
}

// turn is from to to, from at seconds on, up to the migrations.
func turn(at int, from, to string) []step {
	return []step{{at, StepIdle, from, "", ""}, {at + 1, StepPreparing, from, to, ""},
		{at + 2, StepWaiting, from, to, ""}, {at + 3, StepMigrating, from, to, ""}}
}

// restart is turn with the restart handover, up to to verified.
func restart(at int, from, to string, tail ...step) []step {
	s := append(turn(at, from, to), step{at + 4, StepDraining, from, to, ""},
		step{at + 5, StepSwitching, to, to, ""}, step{at + 6, StepVerifying, to, to, ""})
	return append(s, tail...)
}

func TestTurnTracker(t *testing.T) {
	sec := func(n int) time.Duration { return time.Duration(n) * time.Second }
	for _, c := range []struct {
		name  string
		steps []step
		// want is the one turn end, at the last status.
		want TurnEnd
	}{
		{"restart rollout live", restart(0, "A", "B",
			step{7, StepUndraining, "B", "B", ""},
			step{9, StepIdle, "B", "", ""}),
			TurnEnd{Target: "B", From: "A", Outcome: TurnLive, WasDrained: true, Drained: sec(5), HasRollout: true, Rollout: sec(8)}},
		{"failed check rolled back", restart(0, "A", "B",
			step{7, StepFailed, "B", "B", "check web: 502"},
			step{8, StepRollingBack, "B", "A", ""},
			step{11, StepFailed, "A", "B", "check web: 502"}),
			TurnEnd{Target: "B", From: "A", Outcome: TurnRolledBack, Error: "check web: 502", WasDrained: true, Drained: sec(7)}},
		{"failed check, the way back failing too", restart(0, "A", "B",
			step{7, StepFailed, "B", "B", "check web: 502"},
			step{8, StepRollingBack, "B", "A", ""},
			step{11, StepFailed, "B", "B", "check web: 502; rollback to A also failed: x"}),
			TurnEnd{Target: "B", From: "A", Outcome: TurnFailed, Error: "check web: 502; rollback to A also failed: x", WasDrained: true, Drained: sec(7)}},
		{"overlap refused before the drain", append(turn(0, "A", "B"),
			step{4, StepStarting, "A", "B", ""},
			step{9, StepFailed, "A", "B", "instances of B never healthy"}),
			TurnEnd{Target: "B", From: "A", Outcome: TurnRefused, Error: "instances of B never healthy"}},
		{"lock lost", restart(0, "A", "B",
			step{7, StepRollingBack, "B", "A", ""},
			step{9, StepIdle, "A", "", "rollout lock lost during verifying"}),
			TurnEnd{Target: "B", From: "A", Outcome: TurnLockLost, Error: "rollout lock lost during verifying", WasDrained: true, Drained: sec(5)}},
		{"first deploy", restart(0, "", "A",
			step{7, StepUndraining, "A", "A", ""},
			step{8, StepIdle, "A", "", ""}),
			TurnEnd{Target: "A", Outcome: TurnLive, WasDrained: true, Drained: sec(4), HasRollout: true, Rollout: sec(7)}},
		{"prepare error: no rollout", append(turn(0, "A", "B")[:2],
			step{2, StepIdle, "A", "", "fetch B: timeout"}),
			TurnEnd{Target: "B", From: "A", Outcome: TurnNone, Error: "fetch B: timeout"}},
		// onFailure halt: the node stays drained on the failed release;
		// the turn (and the drained window) ends when the guard brings
		// it back, and counts as live then.
		{"onFailure halt staying drained", restart(0, "A", "B",
			step{7, StepFailed, "B", "B", "check web: 502"},
			step{100, StepIdle, "B", "", ""}),
			TurnEnd{Target: "B", From: "A", Outcome: TurnLive, WasDrained: true, Drained: sec(96), HasRollout: true, Rollout: sec(99)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ends, at := feed(c.steps)
			if len(ends) != 1 || at[0] != len(c.steps)-1 {
				t.Fatalf("ends %+v at %v; want one, at the last status (%d)", ends, at, len(c.steps)-1)
			}
			if ends[0] != c.want {
				t.Errorf("end\n got %+v\nwant %+v", ends[0], c.want)
			}
		})
	}
}

// A tracker starts afresh after each turn: two rollouts in a row are
// measured each from its own start.
func TestTurnTrackerTwoTurns(t *testing.T) {
	steps := restart(0, "A", "B", step{7, StepUndraining, "B", "B", ""}, step{9, StepIdle, "B", "", ""})
	steps = append(steps, turn(20, "B", "C")[1:]...)
	steps = append(steps, step{24, StepStarting, "B", "C", ""}, step{26, StepFailed, "B", "C", "never healthy"})
	ends, _ := feed(steps)
	if len(ends) != 2 || ends[1].Outcome != TurnRefused || ends[1].WasDrained || ends[1].From != "B" || ends[1].Target != "C" {
		t.Fatalf("ends %+v", ends)
	}
}

// The outcomes' values are the metrics' label values, part of drover's
// contract.
func TestTurnOutcomeValues(t *testing.T) {
	want := []string{"live", "rolled_back", "failed", "lock_lost", "refused"}
	for i, o := range TurnOutcomes {
		if string(o) != want[i] {
			t.Errorf("TurnOutcomes[%d] = %q, want %q", i, o, want[i])
		}
	}
}
