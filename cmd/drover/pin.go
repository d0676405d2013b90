package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/drover-dev/drover/control"
)

// pin, rollback and unpin: the operator's choice of revision instead of the
// branch head (control/pin.go).

func cmdPin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return pinCommand(ctx, "pin", args, stdout, stderr)
}

func cmdRollback(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return pinCommand(ctx, "rollback", args, stdout, stderr)
}

func pinCommand(ctx context.Context, name string, args []string, stdout, stderr io.Writer) error {
	flags, config := configFlag(name, stderr)
	reason := flags.String("reason", "", "why, shown by drover status and drover history")
	force := flags.Bool("force", false, "pin even when the revision has migrations the database's ledger lacks (they would be applied)")
	synopsis := "Usage: drover pin [--config node.yaml] [--reason R] [--force] REV\n\n"
	if name == "rollback" {
		synopsis = "Usage: drover rollback [--config node.yaml] [--reason R] [--force] [REV]\n\nWithout REV, pins the revision that was live before the current one.\n"
	}
	setUsage(flags, stderr, synopsis+"Pins the cluster to REV (a commit id, or a prefix of a known one): every node\nrolls it out like a new commit, one at a time, and stays on it while new\ncommits are fetched and prepared but not applied, until drover unpin.\nMigrations are not run backwards: the schema stays as newer revisions left it.\n\n")
	pos, err := parseInterspersed(flags, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) > 1, name == "pin" && len(pos) != 1:
		return usageError{"give exactly one REV"}
	}
	req := control.PinRequest{Reason: *reason, Force: *force, Rollback: name == "rollback"}
	if len(pos) == 1 {
		if req.Rev, err = control.ParseRev(pos[0]); err != nil {
			return usageError{err.Error()}
		}
	}
	return withControl(ctx, *config, stderr, func(k *control.Control) error {
		res, err := k.Pin(ctx, req)
		rev := res.Pin.Rev
		for _, f := range res.StayApplied {
			fmt.Fprintf(stdout, "note: migration %s stays applied: migrations are not run backwards; %s's code must work with it\n", f, shortRev(rev))
		}
		if len(res.Applies) > 0 && req.Force {
			fmt.Fprintf(stdout, "note: --force: the rollout of %s applies %s\n", shortRev(rev), strings.Join(res.Applies, ", "))
		}
		if !res.Pin.At.IsZero() { // set, even when telling the agents failed
			fmt.Fprintf(stdout, "pinned to %s: every node rolls it out one at a time; new commits are prepared but not applied until drover unpin\n", rev)
		}
		return err
	})
}

func cmdUnpin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags, config := configFlag("unpin", stderr)
	if err := parseNoArgs(flags, args); err != nil {
		return err
	}
	return withControl(ctx, *config, stderr, func(k *control.Control) error {
		p, pinned, err := k.Unpin(ctx)
		if err != nil {
			return err
		}
		if !pinned {
			fmt.Fprintln(stdout, "not pinned: the nodes follow the branch")
			return nil
		}
		fmt.Fprintf(stdout, "unpinned (was %s): the nodes follow the branch again\n", shortRev(p.Rev))
		return nil
	})
}
