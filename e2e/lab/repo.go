package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// repoUp makes the forge's bare config repo from examples/config, and the
// user's clone of it (Work) whose origin is the forge over HTTP.
func (l *Lab) repoUp(ctx context.Context) error {
	bare := filepath.Join(l.cfg.Dir, "git", "config.git")
	if err := os.MkdirAll(filepath.Dir(bare), 0o755); err != nil {
		return err
	}
	if _, err := Git(ctx, "", "init", "-q", "--bare", "-b", "main", bare); err != nil {
		return err
	}
	if _, err := Git(ctx, bare, "config", "http.receivepack", "true"); err != nil {
		return err
	}
	work := l.cfg.Work
	if _, err := os.Stat(work); err == nil {
		return fmt.Errorf("the lab's clone %s exists: move it away or remove it (make demo-stop removes the demo's)", work)
	}
	if err := os.MkdirAll(filepath.Dir(work), 0o755); err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, "cp", "-a", filepath.Join(l.cfg.Source, "examples", "config"), work).CombinedOutput(); err != nil {
		return fmt.Errorf("copy examples/config: %w: %s", err, out)
	}
	if l.cfg.Handover != "" {
		f := filepath.Join(work, "drover.yaml")
		b, err := os.ReadFile(f)
		if err == nil {
			var spec string
			if spec, err = SetRollout(string(b), "handover", l.cfg.Handover); err == nil {
				err = os.WriteFile(f, []byte(spec), 0o644)
			}
		}
		if err != nil {
			return fmt.Errorf("seed rollout.handover: %w", err)
		}
	}
	steps := [][]string{
		{"init", "-q", "-b", "main"},
		{"config", "user.name", "drover lab"},
		{"config", "user.email", "lab@drover.example"},
		{"add", "-A"},
		{"commit", "-q", "-m", "The example platform"},
		{"push", "-q", bare, "main"},
		{"remote", "add", "origin", l.RepoURL()},
		{"config", "branch.main.remote", "origin"},
		{"config", "branch.main.merge", "refs/heads/main"},
	}
	for _, s := range steps {
		if _, err := Git(ctx, work, s...); err != nil {
			return err
		}
	}
	// A commit in the clone is pushed at once, so that committing is all a
	// user of the demo does to see a rollout (a failed push, with the forge
	// down, leaves the commit to the next push).
	hook := "#!/bin/sh\n# drover-lab: push every commit on main to the forge.\n" +
		"[ \"$(git rev-parse --abbrev-ref HEAD)\" = main ] && git push -q origin main || true\n"
	return os.WriteFile(filepath.Join(work, ".git", "hooks", "post-commit"), []byte(hook), 0o755)
}

// Git runs git in dir and returns its trimmed output.
func Git(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("git %s (in %s): %w: %s", strings.Join(args, " "), dir, err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

// Commit writes files (path relative to the clone → content; "" deletes)
// into the user's clone, commits them and pushes to the forge. It returns
// the new revision.
func (l *Lab) Commit(ctx context.Context, msg string, files map[string]string) (string, error) {
	for p, content := range files {
		full := filepath.Join(l.cfg.Work, p)
		if content == "" {
			if err := os.Remove(full); err != nil {
				return "", err
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			return "", err
		}
	}
	for _, s := range [][]string{{"add", "-A"}, {"commit", "-q", "-m", msg}, {"push", "-q", "origin", "main"}} {
		if _, err := Git(ctx, l.cfg.Work, s...); err != nil {
			return "", err
		}
	}
	return Git(ctx, l.cfg.Work, "rev-parse", "HEAD")
}

// ReadWork reads a file of the user's clone.
func (l *Lab) ReadWork(p string) (string, error) {
	b, err := os.ReadFile(filepath.Join(l.cfg.Work, p))
	return string(b), err
}

// SetRollout returns spec (a drover.yaml whose rollout: block is in block
// style) with rollout.key set to value, or without it when value is "".
func SetRollout(spec, key, value string) (string, error) {
	var lines []string
	found := false
	for _, line := range strings.Split(spec, "\n") {
		if strings.HasPrefix(line, "  "+key+":") {
			continue
		}
		lines = append(lines, line)
		if line == "rollout:" {
			found = true
			if value != "" {
				lines = append(lines, "  "+key+": "+value)
			}
		}
	}
	if !found {
		return "", errors.New("drover.yaml has no rollout: block")
	}
	return strings.Join(lines, "\n"), nil
}
