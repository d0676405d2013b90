package sdnotify

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/drover-dev/drover/nodestate"
)

var (
	revA = strings.Repeat("a", 40)
	revB = strings.Repeat("b", 40)
)

func TestStatusText(t *testing.T) {
	for _, c := range []struct {
		st   nodestate.Status
		want string
	}{
		{nodestate.Status{Step: nodestate.StepIdle}, "idle, no release yet"},
		{nodestate.Status{Step: nodestate.StepIdle, Error: "poll repo: no such branch"}, "idle, no release yet: poll repo: no such branch"},
		{nodestate.Status{Step: nodestate.StepIdle, Rev: revA}, "idle on aaaaaaaaaaaa"},
		{nodestate.Status{Step: nodestate.StepPreparing, Rev: revA, Target: revB}, "preparing bbbbbbbbbbbb (live aaaaaaaaaaaa)"},
		{nodestate.Status{Step: nodestate.StepSwitching, Target: revB}, "switching bbbbbbbbbbbb (live (none))"},
		{nodestate.Status{Step: nodestate.StepWaiting, Rev: revA, Target: revB, Error: "waiting for capacity: n2 drained"},
			"waiting bbbbbbbbbbbb (live aaaaaaaaaaaa): waiting for capacity: n2 drained"},
		{nodestate.Status{Step: nodestate.StepFailed, Rev: revA, Target: revA, Error: "nginx: exit 1"}, "failed aaaaaaaaaaaa: nginx: exit 1"},
		// The guard's verdict.
		{nodestate.Status{Step: nodestate.StepIdle, Rev: revA, Health: nodestate.HealthOK}, "idle on aaaaaaaaaaaa; healthy"},
		{nodestate.Status{Step: nodestate.StepIdle, Rev: revA, Health: nodestate.HealthOut, HealthWhy: "worker api instance 0: status 500"},
			"idle on aaaaaaaaaaaa; out (guard: worker api instance 0: status 500)"},
		{nodestate.Status{Step: nodestate.StepIdle, Rev: revA, Health: nodestate.HealthDegraded, HealthWhy: "check database: refused; 2 of 3 nodes are out or failing too"},
			"idle on aaaaaaaaaaaa; degraded (check database: refused; 2 of 3 nodes are out or failing too)"},
		// An error text cannot add an assignment of its own.
		{nodestate.Status{Step: nodestate.StepIdle, Rev: revA, Error: "git said\nREADY=1\r\nWATCHDOG=1"}, "idle on aaaaaaaaaaaa: git said READY=1 WATCHDOG=1"},
	} {
		if got := StatusText(c.st); got != c.want {
			t.Errorf("StatusText(%+v)\n got %q\nwant %q", c.st, got, c.want)
		}
	}
	long := StatusText(nodestate.Status{Step: nodestate.StepIdle, Rev: revA, Error: strings.Repeat("é", 300)})
	if len(long) > 200 || !strings.HasSuffix(long, "...") || !strings.HasPrefix(long, "idle on") {
		t.Errorf("a long error is not cut to one short line: %d bytes %q", len(long), long)
	}
}

// TestAgentBusyFollowsTheAgentsOwnStatus: the upgrade's restart waits for
// every step of a turn, as the agent reports it to systemd (StatusText),
// and for a journal on disk whatever the status says; it goes ahead when
// the agent is between turns or not running.
func TestAgentBusyFollowsTheAgentsOwnStatus(t *testing.T) {
	state := t.TempDir()
	rev, next := strings.Repeat("a", 40), strings.Repeat("b", 40)
	idle := []nodestate.Status{
		{Step: nodestate.StepIdle},
		{Step: nodestate.StepIdle, Rev: rev},
		{Step: nodestate.StepIdle, Rev: rev, Error: "ls-remote: connection refused"},
		{Step: nodestate.StepPaused, Rev: rev},
		{Step: nodestate.StepFailed, Rev: rev, Target: next, Error: "health check failed"},
	}
	busy := []nodestate.Step{nodestate.StepPreparing, nodestate.StepWaiting, nodestate.StepMigrating, nodestate.StepDraining,
		nodestate.StepSwitching, nodestate.StepVerifying, nodestate.StepRollingBack, nodestate.StepUndraining}
	for _, st := range idle {
		if why := AgentBusy(state, "active", StatusText(st)); why != "" {
			t.Errorf("%q: busy (%s), want idle", StatusText(st), why)
		}
	}
	for _, step := range busy {
		text := StatusText(nodestate.Status{Step: step, Rev: rev, Target: next})
		if why := AgentBusy(state, "active", text); !strings.Contains(why, string(step)) {
			t.Errorf("%q: AgentBusy = %q, want busy naming the step", text, why)
		}
	}
	if why := AgentBusy(state, "activating", ""); why == "" {
		t.Error("a starting agent (recovering a change) counts as idle")
	}
	for _, s := range []string{"inactive", "failed", ""} {
		if why := AgentBusy(state, s, ""); why != "" {
			t.Errorf("unit %q: busy (%s), want idle: nothing runs", s, why)
		}
	}
	// The journal wins over a status line that says idle or failed: a
	// failed revision's rollback is still in flight.
	if err := os.WriteFile(filepath.Join(state, "journal.json"), []byte(`{"from":"a","to":"b","step":"rolling-back"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, st := range idle {
		if why := AgentBusy(state, "active", StatusText(st)); !strings.Contains(why, "journal.json") {
			t.Errorf("with a journal, %q: AgentBusy = %q, want busy naming the journal", StatusText(st), why)
		}
	}
	// A change held by onFailure: halt is not in flight: a restarted
	// agent keeps the hold, so the upgrade need not wait for ever.
	if err := os.WriteFile(filepath.Join(state, "journal.json"), []byte(`{"from":"a","to":"b","step":"failed","drained":true,"held":true}`), 0o644); err != nil {
		t.Fatal(err)
	}
	failed := nodestate.Status{Step: nodestate.StepFailed, Rev: next, Target: next, Error: "held drained on the failed release"}
	if why := AgentBusy(state, "active", StatusText(failed)); why != "" {
		t.Errorf("a held change: busy (%s), want idle", why)
	}
}
