package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	runner "github.com/drover-dev/drover/internal/command"
	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/reconcile"
	"github.com/drover-dev/drover/spec"
)

// cmdIdle is what the package's postinst runs before it restarts the
// agent onto a new binary: a restart is safe at any instant (the next agent
// recovers), but one that lands mid-turn ends the turn: the node's drained
// window grows by the restart and the recovery, and the lock goes back to
// the queue. So an upgrade waits for the agent to be between rollouts.
func cmdIdle(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("idle", stderr)
	config := fs.String("config", spec.DefaultNodeFile, "node config file (for its stateDir)")
	unit := fs.String("unit", "drover.service", "the agent's systemd unit")
	timeout := fs.Duration("wait", 0, "wait up to this long for the agent to be idle (0: answer now)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: drover idle [--config node.yaml] [--wait 15m]\n\n"+
			"Exit 0 when this node's agent is between rollouts: no change in flight (STATE/journal.json)\n"+
			"and its systemd status is idle, paused or failed, or its unit is not running; else exit 1,\n"+
			"after waiting up to --wait for it. The package's postinst restarts the agent onto a new\n"+
			"drover only once this says idle.\n\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{"unexpected arguments"}
	}
	cfg, err := spec.LoadNode(*config)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(*timeout)
	last := ""
	for {
		state, text, err := unitStatus(ctx, *unit)
		if err != nil {
			return err
		}
		why := agentBusy(cfg.StateDir, state, text)
		if why == "" {
			fmt.Fprintf(stdout, "%s is idle (%s)\n", *unit, orNone(text, state))
			return nil
		}
		if why != last {
			fmt.Fprintf(stderr, "waiting: %s\n", why)
			last = why
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(stderr, "drover idle: busy after %s: %s\n", *timeout, why)
			return exitError{exitFailure}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func orNone(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

// unitStatus asks systemd for the unit's ActiveState and the StatusText the
// agent sends it (sd_notify STATUS=, see notify.go).
func unitStatus(ctx context.Context, unit string) (state, text string, err error) {
	out, err := runner.Run(ctx, runner.Cmd{
		Argv:    []string{"systemctl", "show", "--property=ActiveState,StatusText", unit},
		Timeout: 10 * time.Second,
	})
	if err != nil {
		return "", "", fmt.Errorf("ask systemd for %s's status: %w", unit, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "ActiveState":
			state = v
		case "StatusText":
			text = v
		}
	}
	return state, text, nil
}

// idleSteps are the steps of an agent between turns; any other step (or a
// journal on disk) means a change is under way. A failed revision is idle
// once its rollback finished, which the journal's absence shows.
var idleSteps = []reconcile.Step{reconcile.StepIdle, reconcile.StepPaused, reconcile.StepFailed}

// agentBusy says why the agent of a unit in ActiveState state, whose status
// line is text, is in the middle of a change, or "" when it is not. The
// journal in stateDir is the agent's own record of a change in flight
// (from the drain to the undrain); the status line also covers the turn's
// start (lock taken, migrations, capacity wait), before the journal.
func agentBusy(stateDir, state, text string) string {
	switch state {
	case "active", "reloading", "deactivating":
	case "activating":
		return "the agent is starting (it recovers a change left in flight before it says READY)"
	default:
		return "" // not running: nothing to interrupt
	}
	journal := layout.New(stateDir).Journal()
	if data, err := os.ReadFile(journal); err == nil {
		// A change held by onFailure: halt is not in flight: the node
		// stays drained on the failed release whether the agent restarts
		// or not (reconcile's Recover keeps it), so an upgrade may go on.
		var e struct {
			Held bool `json:"held"`
		}
		if json.Unmarshal(data, &e) != nil || !e.Held {
			return fmt.Sprintf("a change is in flight (%s exists; agent: %s)", journal, orNone(text, "no status"))
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Sprintf("cannot tell whether a change is in flight: %v", err)
	}
	word, _, _ := strings.Cut(text, " ")
	word = strings.TrimSuffix(word, ",")
	for _, s := range idleSteps {
		if word == string(s) {
			return ""
		}
	}
	if word == "stopping" {
		return ""
	}
	return fmt.Sprintf("the agent is %s", orNone(text, "running without a status yet"))
}
