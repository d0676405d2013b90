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

Flags:
`

func cmdMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, migrateUsage)
		return usageError{"missing subcommand: status, up or resolve"}
	}
	sub := args[0]
	flags := newFlags("migrate "+sub, stderr)
	config := flags.String("config", spec.DefaultNodeFile, "node config file")
	dir := flags.String("dir", "", "read drover.yaml and the migrations from `DIR` instead of the live revision")
	timeout := flags.Duration("timeout", 15*time.Minute, "give up after this long, waiting for the migration lock included")
	var output *string
	var retry, done *bool
	switch sub {
	case "status":
		output = flags.String("o", "text", "output format: text or json")
	case "up":
	case "resolve":
		retry = flags.Bool("retry", false, "the migration's partial effects were undone: run it again")
		done = flags.Bool("done", false, "the migration was completed by hand: record it applied")
	case "-h", "--help", "help":
		fmt.Fprint(stderr, migrateUsage)
		flags.PrintDefaults()
		return flag.ErrHelp
	default:
		fmt.Fprint(stderr, migrateUsage)
		return usageError{fmt.Sprintf("unknown subcommand %q: status, up or resolve", sub)}
	}
	setUsage(flags, stderr, migrateUsage)
	pos, err := parseInterspersed(flags, args[1:])
	if err != nil {
		return err
	}
	if *timeout <= 0 {
		return usageError{"--timeout must be positive"}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	switch sub {
	case "status":
		if len(pos) > 0 {
			return usageError{"status takes no arguments"}
		}
		if *output != "text" && *output != "json" {
			return usageError{"-o must be text or json"}
		}
		return migrateStatus(ctx, *config, *dir, *output, stdout, stderr)
	case "up":
		if len(pos) > 0 {
			return usageError{"up takes no arguments"}
		}
		return migrateUp(ctx, *config, *dir, stdout, stderr)
	}
	if len(pos) != 1 {
		return usageError{"resolve takes one VERSION"}
	}
	version, err := strconv.ParseInt(pos[0], 10, 64)
	if err != nil || version <= 0 {
		return usageError{fmt.Sprintf("VERSION %q is not a migration's version (the number its file name starts with)", pos[0])}
	}
	if *retry == *done {
		return usageError{"resolve needs one of --retry or --done"}
	}
	how := migrate.Retry
	if *done {
		how = migrate.Done
	}
	return migrateResolve(ctx, *config, *dir, version, how, stdout, stderr)
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

// openForCLI loads node.yaml, the migrations (unless only the ledger is
// needed) and connects to the database.
func openForCLI(ctx context.Context, config, dir string, needFiles bool, logLevel slog.Level, stderr io.Writer) (*control.MigrationSet, *migrate.Migrator, error) {
	node, err := spec.LoadNode(config)
	if err != nil {
		return nil, nil, err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: logLevel}))
	return control.OpenMigrator(ctx, node, dir, needFiles, log)
}

func migrateStatus(ctx context.Context, config, dir, output string, stdout, stderr io.Writer) error {
	set, db, err := openForCLI(ctx, config, dir, true, slog.LevelWarn, stderr)
	if err != nil {
		return err
	}
	defer db.Close(context.WithoutCancel(ctx))
	st, err := db.Status(ctx, set.Migrations)
	if err != nil {
		return err
	}
	rep := migrate.NewReport(set.Revision, set.Migrations, st)
	if output == "json" {
		if err := printers.JSON(stdout, rep); err != nil {
			return err
		}
	} else {
		printers.Migrations(stdout, set.Desc, rep)
	}
	if len(rep.Problems) > 0 {
		for _, p := range rep.Problems {
			fmt.Fprintf(stderr, "drover migrate status: %s\n", p)
		}
		return exitError{exitFailure}
	}
	return nil
}

func migrateUp(ctx context.Context, config, dir string, stdout, stderr io.Writer) error {
	set, db, err := openForCLI(ctx, config, dir, true, slog.LevelInfo, stderr)
	if err != nil {
		return err
	}
	defer db.Close(context.WithoutCancel(ctx))
	applied, err := db.Up(ctx, set.Migrations)
	for _, m := range applied {
		fmt.Fprintf(stdout, "applied  %s\n", m.File)
	}
	if err != nil {
		return err
	}
	if len(applied) == 0 {
		fmt.Fprintf(stdout, "nothing to apply: the %d migrations of %s are applied\n", len(set.Migrations), set.Desc)
		return nil
	}
	fmt.Fprintf(stdout, "%d applied from %s\n", len(applied), set.Desc)
	return nil
}

func migrateResolve(ctx context.Context, config, dir string, version int64, how migrate.Resolution, stdout, stderr io.Writer) error {
	_, db, err := openForCLI(ctx, config, dir, false, slog.LevelWarn, stderr)
	if err != nil {
		return err
	}
	defer db.Close(context.WithoutCancel(ctx))
	if err := db.Resolve(ctx, version, how); err != nil {
		return err
	}
	switch how {
	case migrate.Retry:
		fmt.Fprintf(stdout, "version %d: its ledger row is removed; the next drover migrate up or rollout applies it again\n", version)
	case migrate.Done:
		fmt.Fprintf(stdout, "version %d: recorded applied (completed by hand); it will not run\n", version)
	}
	return nil
}
