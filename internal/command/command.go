// Package command runs external programs (nginx -t, an install step, git)
// with a deadline, and returns errors that carry the command line, the exit
// status and the tail of the program's output, so a failure explains itself.
package command

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Cmd describes one run of a program.
type Cmd struct {
	Argv []string
	// Dir is the working directory; empty means the current one.
	Dir string
	// Env is the whole environment; nil means the parent's.
	Env []string
	// Timeout bounds the run in addition to ctx; 0 means only ctx.
	Timeout time.Duration
	// Credential runs the program as another user (an install step is not
	// root); nil keeps the caller's.
	Credential *syscall.Credential
}

// Error is a failed run: it did not start, exited non-zero, or timed out.
type Error struct {
	Argv     []string
	ExitCode int // -1 when the program did not exit by itself
	TimedOut bool
	Output   string // the last part of stdout and stderr, interleaved
	Err      error
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: ", strings.Join(e.Argv, " "))
	switch {
	case e.TimedOut:
		b.WriteString("timed out")
	case e.ExitCode > 0:
		fmt.Fprintf(&b, "exit status %d", e.ExitCode)
	default:
		b.WriteString(e.Err.Error())
	}
	if out := strings.TrimSpace(e.Output); out != "" {
		b.WriteString(": ")
		b.WriteString(out)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// maxOutput is how much of a failed program's output an error keeps: the
// end, where the reason usually is.
const maxOutput = 4096

// Run runs c and returns its combined output. The program runs in its own
// process group, so a timeout kills what it started too (a yarn install's
// children, say).
func Run(ctx context.Context, c Cmd) ([]byte, error) {
	if len(c.Argv) == 0 {
		return nil, errors.New("command: empty argv")
	}
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, c.Argv[0], c.Argv[1:]...)
	cmd.Dir = c.Dir
	cmd.Env = c.Env
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: c.Credential}
	cmd.Cancel = func() error {
		// Kill the whole group: the program and its children.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if err == nil {
		return out.Bytes(), nil
	}
	e := &Error{Argv: c.Argv, ExitCode: -1, Output: tail(out.String()), Err: err}
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) && exitErr.ExitCode() > 0 {
		e.ExitCode = exitErr.ExitCode()
	}
	if ctx.Err() != nil {
		e.TimedOut = errors.Is(ctx.Err(), context.DeadlineExceeded)
		if !e.TimedOut {
			e.Err = ctx.Err()
		}
		e.ExitCode = -1
	}
	return out.Bytes(), e
}

func tail(s string) string {
	if len(s) <= maxOutput {
		return s
	}
	return "…" + s[len(s)-maxOutput:]
}
