package command

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestRunSuccess(t *testing.T) {
	out, err := Run(context.Background(), Cmd{Argv: []string{"sh", "-c", "echo hello; echo warn >&2"}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "hello") || !strings.Contains(string(out), "warn") {
		t.Fatalf("output %q lacks stdout or stderr", out)
	}
}

func TestRunFailureCarriesCommandAndOutput(t *testing.T) {
	_, err := Run(context.Background(), Cmd{Argv: []string{"sh", "-c", "echo broken lockfile >&2; exit 3"}})
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("got %v, want *Error", err)
	}
	if e.ExitCode != 3 {
		t.Errorf("exit code %d, want 3", e.ExitCode)
	}
	msg := err.Error()
	for _, want := range []string{"sh -c", "exit status 3", "broken lockfile"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
}

func TestRunTimeoutKillsChildren(t *testing.T) {
	start := time.Now()
	// The child sleep would keep the output pipe open if only sh were killed.
	_, err := Run(context.Background(), Cmd{Argv: []string{"sh", "-c", "sleep 30 & sleep 30"}, Timeout: 200 * time.Millisecond})
	var e *Error
	if !errors.As(err, &e) || !e.TimedOut {
		t.Fatalf("got %v, want a timeout", err)
	}
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("Run returned after %s: the process group was not killed", took)
	}
	if !strings.Contains(err.Error(), "timed out") {
		t.Errorf("error %q does not say it timed out", err)
	}
}

func TestRunMissingProgram(t *testing.T) {
	_, err := Run(context.Background(), Cmd{Argv: []string{"/nonexistent/drover-test"}})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/drover-test") {
		t.Fatalf("got %v, want an error naming the program", err)
	}
}
