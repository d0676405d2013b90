package sdnotify

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/internal/revid"
	"github.com/drover-dev/drover/nodestate"
)

// StatusText is the node's status as one line for systemctl status: the
// step, the revision it is about, the live one and the last error.
func StatusText(st nodestate.Status) string {
	var b strings.Builder
	switch {
	case st.Step == nodestate.StepIdle && st.Rev == "":
		b.WriteString("idle, no release yet")
	case st.Step == nodestate.StepIdle:
		fmt.Fprintf(&b, "idle on %s", revid.Short(st.Rev))
	case st.Target == "" || st.Target == st.Rev:
		fmt.Fprintf(&b, "%s %s", st.Step, revid.Short(st.Rev))
	default:
		fmt.Fprintf(&b, "%s %s (live %s)", st.Step, revid.Short(st.Target), revid.Short(st.Rev))
	}
	if st.Error != "" {
		b.WriteString(": ")
		b.WriteString(st.Error)
	}
	if h := HealthText(st); h != "" {
		b.WriteString("; ")
		b.WriteString(h)
	}
	// One line: a newline would end the assignment and start another (an
	// error text must not be able to say READY=1 or WATCHDOG=1).
	text := strings.Join(strings.Fields(b.String()), " ")
	if len(text) > 200 {
		text = strings.ToValidUTF8(text[:197], "") + "..."
	}
	return text
}

// HealthText is the guard's verdict as people read it: "healthy",
// "out (guard: <check>: <why>)" or "degraded (<why>)"; "" before the
// guard's first verdict.
func HealthText(st nodestate.Status) string {
	switch st.Health {
	case nodestate.HealthUnknown:
		return ""
	case nodestate.HealthOut:
		return "out (guard: " + st.HealthWhy + ")"
	case nodestate.HealthDegraded, nodestate.HealthFailing:
		return string(st.Health) + " (" + st.HealthWhy + ")"
	}
	return string(st.Health)
}

// idleSteps are the steps of an agent between turns; any other step (or a
// journal on disk) means a change is under way. A failed revision is idle
// once its rollback finished, which the journal's absence shows.
var idleSteps = []nodestate.Step{nodestate.StepIdle, nodestate.StepPaused, nodestate.StepFailed}

// AgentBusy says why the agent of a unit in ActiveState state, whose status
// line is text, is in the middle of a change, or "" when it is not. The
// journal in stateDir is the agent's own record of a change in flight
// (from the drain to the undrain); the status line also covers the turn's
// start (lock taken, migrations, capacity wait), before the journal.
func AgentBusy(stateDir, state, text string) string {
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

func orNone(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}
