package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"time"

	"github.com/drover-dev/drover/internal/printers"

	"github.com/drover-dev/drover/control"
	"github.com/drover-dev/drover/migrate"
	"github.com/drover-dev/drover/spec"
)

const migrateUsage = `Usage:
  drover migrate status  [--config node.yaml] [--dir DIR] [-o text|json]
  drover migrate up      [--config node.yaml] [--dir DIR]
  drover migrate resolve [--config node.yaml] VERSION --retry|--done

The database is node.yaml's (database.dsnFile). The migrations are those of
the node's live revision, read from the config repo into STATE/git-cli; with
--dir, those of DIR (a checkout of the directory holding drover.yaml).

status   compares the migration files with the database's ledger: applied,
         pending, mismatched (changed after they were applied), missing
         (applied, file gone), failed (a no-transaction migration that failed
         or was interrupted). Exit 0 when up would apply the pending ones (or
         has nothing to do); exit 1 when up would refuse, each reason on
         stderr: a mismatched file, a missing file older than another, a
         pending file older than an applied one, a failed migration.
up       applies the pending migrations now, as a rollout would: under the
         database's migration lock (an agent migrating at the same moment
         waits, then finds them applied). It does not take the cluster's
         rollout lock: exactly once comes from the lock and the ledger, and
         up drains and switches nothing. The workers still running are those
         of the live revision, so the migrations must be backward compatible
         (see docs/migrations.md). Exit 1 when a migration fails or up refuses.
resolve  clears a failed or interrupted no-transaction migration after you
         repaired the schema by hand (see docs/migrations.md):
         --retry  you undid what it did (e.g. DROP INDEX CONCURRENTLY the
                  INVALID index a failed CREATE INDEX CONCURRENTLY left):
                  its ledger row is removed and the next run applies it again;
         --done   you finished it by hand: it is recorded applied.
         A halted revision stays halted: clear it, or push a new commit.
`

func cmdMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sub, args, err := subcommand("migrate", args, migrateUsage, stderr, "status", "up", "resolve")
	if err != nil {
		return err
	}
	flags := newFlags("migrate "+sub, stderr)
	setUsage(flags, stderr, migrateUsage+"\nFlags of migrate "+sub+":\n")
	config := flags.String("config", spec.DefaultNodeFile, "node config file")
	dir := flags.String("dir", "", "read drover.yaml and the migrations from `DIR` instead of the live revision")
	timeout := flags.Duration("timeout", 15*time.Minute, "give up after this long, waiting for the migration lock included")
	output, retry, done := &outputFlag{}, false, false
	switch sub {
	case "status":
		output = newOutputFlag(flags)
	case "resolve":
		flags.BoolVar(&retry, "retry", false, "the migration's partial effects were undone: run it again")
		flags.BoolVar(&done, "done", false, "the migration was completed by hand: record it applied")
	}
	pos, err := parseInterspersed(flags, args)
	var version int64
	switch {
	case err != nil:
		return err
	case *timeout <= 0:
		return usageError{"--timeout must be positive"}
	case sub != "resolve" && len(pos) > 0:
		return usageError{sub + " takes no arguments"}
	case sub == "resolve" && len(pos) != 1:
		return usageError{"resolve takes one VERSION"}
	case sub == "resolve":
		if version, err = strconv.ParseInt(pos[0], 10, 64); err != nil || version <= 0 {
			return usageError{fmt.Sprintf("VERSION %q is not a migration's version (the number its file name starts with)", pos[0])}
		}
		if retry == done {
			return usageError{"resolve needs one of --retry or --done"}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	node, err := spec.LoadNode(*config)
	if err != nil {
		return err
	}
	level := slog.LevelWarn
	if sub == "up" {
		level = slog.LevelInfo // each migration as it applies
	}
	// resolve needs only the ledger, not the migration files.
	set, db, err := control.OpenMigrator(ctx, node, *dir, sub != "resolve", slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})))
	if err != nil {
		return err
	}
	defer db.Close(context.WithoutCancel(ctx))
	switch {
	case sub == "status":
		return migrateStatus(ctx, db, set, output, stdout, stderr)
	case sub == "up":
		return migrateUp(ctx, db, set, stdout)
	case retry:
		return migrateResolve(ctx, db, version, migrate.Retry, stdout)
	default:
		return migrateResolve(ctx, db, version, migrate.Done, stdout)
	}
}

// parseInterspersed parses flags before, between and after the positional
// arguments (`resolve 3 --retry`), which it returns.
func parseInterspersed(flags *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parseFlags(flags, args); err != nil {
			return nil, err
		}
		if flags.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, flags.Arg(0))
		args = flags.Args()[1:]
	}
}

func migrateStatus(ctx context.Context, db *migrate.Migrator, set *control.MigrationSet, output *outputFlag, stdout, stderr io.Writer) error {
	st, err := db.Status(ctx, set.Migrations)
	if err != nil {
		return err
	}
	rep := migrate.NewReport(set.Revision, set.Migrations, st)
	if err := output.write(stdout, rep, func() { printers.Migrations(stdout, set.Desc, rep) }); err != nil {
		return err
	}
	if len(rep.Problems) > 0 {
		for _, p := range rep.Problems {
			fmt.Fprintf(stderr, "drover migrate status: %s\n", p)
		}
		return exitError{exitFailure}
	}
	return nil
}

func migrateUp(ctx context.Context, db *migrate.Migrator, set *control.MigrationSet, stdout io.Writer) error {
	applied, err := db.Up(ctx, set.Migrations)
	for _, m := range applied {
		fmt.Fprintf(stdout, "applied  %s\n", m.File)
	}
	switch {
	case err != nil:
		return err
	case len(applied) == 0:
		fmt.Fprintf(stdout, "nothing to apply: the %d migrations of %s are applied\n", len(set.Migrations), set.Desc)
	default:
		fmt.Fprintf(stdout, "%d applied from %s\n", len(applied), set.Desc)
	}
	return nil
}

func migrateResolve(ctx context.Context, db *migrate.Migrator, version int64, how migrate.Resolution, stdout io.Writer) error {
	if err := db.Resolve(ctx, version, how); err != nil {
		return err
	}
	if how == migrate.Retry {
		fmt.Fprintf(stdout, "version %d: its ledger row is removed; the next drover migrate up or rollout applies it again\n", version)
	} else {
		fmt.Fprintf(stdout, "version %d: recorded applied (completed by hand); it will not run\n", version)
	}
	return nil
}
