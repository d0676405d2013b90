package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/drover-dev/drover/reconcile"
)

// TestAgentBusyFollowsTheAgentsOwnStatus: the upgrade's restart waits for
// every step of a turn, as the agent reports it to systemd (statusText),
// and for a journal on disk whatever the status says; it goes ahead when
// the agent is between turns or not running.
func TestAgentBusyFollowsTheAgentsOwnStatus(t *testing.T) {
	state := t.TempDir()
	rev, next := strings.Repeat("a", 40), strings.Repeat("b", 40)
	idle := []reconcile.Status{
		{Step: reconcile.StepIdle},
		{Step: reconcile.StepIdle, Rev: rev},
		{Step: reconcile.StepIdle, Rev: rev, Error: "ls-remote: connection refused"},
		{Step: reconcile.StepPaused, Rev: rev},
		{Step: reconcile.StepFailed, Rev: rev, Target: next, Error: "health check failed"},
	}
	busy := []reconcile.Step{reconcile.StepPreparing, reconcile.StepWaiting, reconcile.StepMigrating, reconcile.StepDraining,
		reconcile.StepSwitching, reconcile.StepVerifying, reconcile.StepRollingBack, reconcile.StepUndraining}
	for _, st := range idle {
		if why := agentBusy(state, "active", statusText(st)); why != "" {
			t.Errorf("%q: busy (%s), want idle", statusText(st), why)
		}
	}
	for _, step := range busy {
		text := statusText(reconcile.Status{Step: step, Rev: rev, Target: next})
		if why := agentBusy(state, "active", text); !strings.Contains(why, string(step)) {
			t.Errorf("%q: agentBusy = %q, want busy naming the step", text, why)
		}
	}
	if why := agentBusy(state, "activating", ""); why == "" {
		t.Error("a starting agent (recovering a change) counts as idle")
	}
	for _, s := range []string{"inactive", "failed", ""} {
		if why := agentBusy(state, s, ""); why != "" {
			t.Errorf("unit %q: busy (%s), want idle: nothing runs", s, why)
		}
	}
	// The journal wins over a status line that says idle or failed: a
	// failed revision's rollback is still in flight.
	if err := os.WriteFile(filepath.Join(state, "journal.json"), []byte(`{"from":"a","to":"b","step":"rolling-back"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, st := range idle {
		if why := agentBusy(state, "active", statusText(st)); !strings.Contains(why, "journal.json") {
			t.Errorf("with a journal, %q: agentBusy = %q, want busy naming the journal", statusText(st), why)
		}
	}
	// A change held by onFailure: halt is not in flight: a restarted
	// agent keeps the hold, so the upgrade need not wait for ever.
	if err := os.WriteFile(filepath.Join(state, "journal.json"), []byte(`{"from":"a","to":"b","step":"failed","drained":true,"held":true}`), 0o644); err != nil {
		t.Fatal(err)
	}
	failed := reconcile.Status{Step: reconcile.StepFailed, Rev: next, Target: next, Error: "held drained on the failed release"}
	if why := agentBusy(state, "active", statusText(failed)); why != "" {
		t.Errorf("a held change: busy (%s), want idle", why)
	}
}
