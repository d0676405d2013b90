package sdnotify

import (
	"context"
	"fmt"
	"strings"
	"time"

	runner "github.com/drover-dev/drover/internal/command"
)

// WaitIdle waits up to wait for the agent of unit, whose state dir is
// stateDir, to be between rollouts (AgentBusy says ""), asking systemd
// once a second; onBusy hears each new reason it is not. It returns the
// unit's status line (or its state without one) once idle, or the last
// reason with busy true when wait ran out.
func WaitIdle(ctx context.Context, stateDir, unit string, wait time.Duration, onBusy func(why string)) (status string, busy bool, err error) {
	deadline := time.Now().Add(wait)
	last := ""
	for {
		state, text, err := UnitStatus(ctx, unit)
		if err != nil {
			return "", false, err
		}
		why := AgentBusy(stateDir, state, text)
		if why == "" {
			return orNone(text, state), false, nil
		}
		if why != last {
			onBusy(why)
			last = why
		}
		if time.Now().After(deadline) {
			return why, true, nil
		}
		select {
		case <-ctx.Done():
			return "", false, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// UnitStatus asks systemd for the unit's ActiveState and the StatusText
// the agent sends it (sd_notify STATUS=).
func UnitStatus(ctx context.Context, unit string) (state, text string, err error) {
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
