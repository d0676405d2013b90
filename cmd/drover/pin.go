package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/drover-dev/drover/agent"
	"github.com/drover-dev/drover/cluster"
	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/migrate"
	"github.com/drover-dev/drover/notify"
	"github.com/drover-dev/drover/reconcile"
	"github.com/drover-dev/drover/spec"
)

// pin, unpin and rollback: the operator's choice of revision instead of the
// branch head, kept in Redis (the state dir without a cluster). The agents
// roll a pin out like any new commit (reconcile/desired.go).

var fullRevRE = regexp.MustCompile(`^[0-9a-f]{40}$`)

func cmdPin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return pinCommand(ctx, "pin", args, stdout, stderr)
}

func cmdRollback(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return pinCommand(ctx, "rollback", args, stdout, stderr)
}

func pinCommand(ctx context.Context, name string, args []string, stdout, stderr io.Writer) error {
	flags := newFlags(name, stderr)
	config := flags.String("config", spec.DefaultNodeFile, "node config file")
	reason := flags.String("reason", "", "why, shown by drover status and drover history")
	force := flags.Bool("force", false, "pin even when the revision has migrations the database's ledger lacks (they would be applied)")
	flags.Usage = func() {
		if name == "pin" {
			fmt.Fprintf(stderr, "Usage: drover pin [--config node.yaml] [--reason R] [--force] REV\n\n")
		} else {
			fmt.Fprintf(stderr, "Usage: drover rollback [--config node.yaml] [--reason R] [--force] [REV]\n\nWithout REV, pins the revision that was live before the current one.\n")
		}
		fmt.Fprintf(stderr, "Pins the cluster to REV (a commit id, or a prefix of a known one): every node\nrolls it out like a new commit, one at a time, and stays on it while new\ncommits are fetched and prepared but not applied, until drover unpin.\nMigrations are not run backwards: the schema stays as newer revisions left it.\n\n")
		flags.PrintDefaults()
	}
	pos, err := parseInterspersed(flags, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) > 1, name == "pin" && len(pos) != 1:
		return usageError{"give exactly one REV"}
	}
	return withCluster(ctx, *config, nil, func(cfg *spec.Node, c *cluster.Cluster) error {
		hist := agent.OpenHistory(cfg, c)
		var rev string
		var err error
		if len(pos) == 1 {
			rev, err = resolveRev(ctx, cfg, hist, pos[0])
		} else {
			rev, err = previousLive(ctx, cfg, hist)
		}
		if err != nil {
			return err
		}
		if why, halted, err := registryOf(cfg, c).Halted(ctx, rev); err != nil {
			return err
		} else if halted {
			return fmt.Errorf("revision %s is halted (%s): a halted revision cannot be pinned; clear it first (drover clear)", shortRev(rev), firstLine(why))
		}
		if err := checkPinMigrations(ctx, cfg, rev, *force, stdout, stderr); err != nil {
			return err
		}
		r := *reason
		if r == "" {
			r = name
		}
		p := reconcile.Pin{Rev: rev, Reason: r, By: operator(), At: time.Now().UTC()}
		if c != nil {
			err = c.SetPin(ctx, p)
		} else {
			err = (&reconcile.FileRegistry{Dir: cfg.StateDir}).SetPin(p)
		}
		if err != nil {
			return err
		}
		if err := hist.Action(ctx, rev, cluster.Action{By: p.By, What: "pinned", Reason: r}); err != nil {
			fmt.Fprintf(stderr, "drover %s: record in history: %v\n", name, err)
		}
		fmt.Fprintf(stdout, "pinned to %s: every node rolls it out one at a time; new commits are prepared but not applied until drover unpin\n", rev)
		kind, verb := notify.KindPinned, "pinned to"
		if name == "rollback" {
			kind, verb = notify.KindRolledBack, "rolled back to"
		}
		agent.NotifyNow(ctx, cfg, notify.Event{ID: fmt.Sprintf("%s:%s:%d", name, rev, p.At.UnixNano()), Kind: kind, Revision: rev, By: p.By, Reason: r,
			Text: fmt.Sprintf("%s %s %s: %s", p.By, verb, shortRev(rev), r)})
		return poke(ctx, cfg, c, name+" by "+p.By)
	})
}

func cmdUnpin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags := newFlags("unpin", stderr)
	config := flags.String("config", spec.DefaultNodeFile, "node config file")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	if flags.NArg() > 0 {
		return usageError{"unpin takes no arguments"}
	}
	return withCluster(ctx, *config, nil, func(cfg *spec.Node, c *cluster.Cluster) error {
		p, pinned, err := pinnerOf(cfg, c).Pinned(ctx)
		if err != nil {
			return err
		}
		if !pinned {
			fmt.Fprintln(stdout, "not pinned: the nodes follow the branch")
			return nil
		}
		by := operator()
		if c != nil {
			err = c.Unpin(ctx, by)
		} else {
			err = (&reconcile.FileRegistry{Dir: cfg.StateDir}).Unpin()
		}
		if err != nil {
			return err
		}
		if err := agent.OpenHistory(cfg, c).Action(ctx, p.Rev, cluster.Action{By: by, What: "unpinned"}); err != nil {
			fmt.Fprintf(stderr, "drover unpin: record in history: %v\n", err)
		}
		fmt.Fprintf(stdout, "unpinned (was %s): the nodes follow the branch again\n", shortRev(p.Rev))
		agent.NotifyNow(ctx, cfg, notify.Event{ID: fmt.Sprintf("unpin:%s:%d", p.Rev, time.Now().UnixNano()), Kind: notify.KindUnpinned, Revision: p.Rev, By: by,
			Text: fmt.Sprintf("%s unpinned %s: the nodes follow the branch again", by, shortRev(p.Rev))})
		return poke(ctx, cfg, c, "unpin by "+by)
	})
}

// poke asks the agents to sync now; a node without a running agent picks
// the pin up when it starts.
func poke(ctx context.Context, cfg *spec.Node, c *cluster.Cluster, reason string) error {
	if c != nil {
		return c.PublishSync(ctx, reason)
	}
	// Without a running agent the pin applies when one starts.
	_, _ = signalAgent(cfg.StateDir)
	return nil
}

func registryOf(cfg *spec.Node, c *cluster.Cluster) reconcile.Registry {
	if c != nil {
		return c
	}
	return &reconcile.FileRegistry{Dir: cfg.StateDir}
}

func pinnerOf(cfg *spec.Node, c *cluster.Cluster) reconcile.Pinner {
	if c != nil {
		return c
	}
	return &reconcile.FileRegistry{Dir: cfg.StateDir}
}

// resolveRev turns REV into a full commit id: a full id as is, a prefix
// matched against the revisions the history and this node's release store
// know.
func resolveRev(ctx context.Context, cfg *spec.Node, hist agent.History, arg string) (string, error) {
	arg = strings.ToLower(strings.TrimSpace(arg))
	full := fullRevRE.MatchString(arg)
	if !full && (len(arg) < 4 || strings.Trim(arg, "0123456789abcdef") != "") {
		return "", usageError{fmt.Sprintf("REV %q is not a commit id (at least 4 hex digits)", arg)}
	}
	known := knownRevs(ctx, cfg, hist)
	if full {
		if slices.Contains(known, arg) {
			return arg, nil
		}
		// Not one the cluster has seen: the repo must have it, or every
		// agent would take the pin and fail to fetch it.
		if err := fetchForPin(ctx, cfg, arg); err != nil {
			return "", fmt.Errorf("revision %s is not in the history nor on this node, and the repo does not serve it: %w", shortRev(arg), err)
		}
		return arg, nil
	}
	return matchRev(arg, known, "known revision")
}

// pinFetchTimeout bounds the fetch of a pinned revision the cluster has not
// seen: one shallow fetch of one commit.
const pinFetchTimeout = time.Minute

// fetchForPin fetches rev into the CLI's own git store (the agent's is
// its alone).
func fetchForPin(ctx context.Context, cfg *spec.Node, rev string) error {
	repo, err := agent.OpenCLIRepo(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, pinFetchTimeout)
	defer cancel()
	return repo.Fetch(ctx, rev)
}

// knownRevs are the revisions the history and this node's release store
// know.
func knownRevs(ctx context.Context, cfg *spec.Node, hist agent.History) []string {
	var known []string
	if revs, err := hist.List(ctx, 0); err == nil {
		for _, r := range revs {
			known = append(known, r.Rev)
		}
	}
	if ents, err := os.ReadDir(layout.New(cfg.StateDir).Releases()); err == nil {
		for _, e := range ents {
			if fullRevRE.MatchString(e.Name()) {
				known = append(known, e.Name())
			}
		}
	}
	return known
}

// previousLive is the revision that was live before the current one: from
// the history, else this node's release store (its "previous" link).
func previousLive(ctx context.Context, cfg *spec.Node, hist agent.History) (string, error) {
	revs, err := hist.List(ctx, 0)
	if err != nil {
		return "", err
	}
	if rev := cluster.PreviousLive(revs); rev != "" {
		return rev, nil
	}
	target, err := os.Readlink(layout.New(cfg.StateDir).Previous())
	if err == nil {
		if rev, ok := layout.LinkRevision(target); ok && fullRevRE.MatchString(rev) {
			return rev, nil
		}
	}
	return "", errors.New("no revision was live before the current one (the history has none and this node keeps no previous release): give REV")
}

// checkPinMigrations refuses a pin whose migrations the ledger lacks (they
// would be applied by the pin's rollout, which is rarely what going back
// means) unless force, and says which applied migrations the pinned
// revision does not have: they are not run backwards.
func checkPinMigrations(ctx context.Context, cfg *spec.Node, rev string, force bool, stdout, stderr io.Writer) error {
	if cfg.Database == nil {
		return nil
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	set, err := loadRevMigrations(ctx, cfg, rev, log)
	if errors.Is(err, migrate.ErrNoMigrations) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check the migrations of %s: %w (--force skips the check)", shortRev(rev), err)
	}
	db, err := agent.OpenDatabase(ctx, cfg, set.Config(cliNode(cfg), log))
	if err != nil {
		return fmt.Errorf("check the migrations of %s: %w", shortRev(rev), err)
	}
	defer db.Close(context.WithoutCancel(ctx))
	st, err := db.Status(ctx, set.Migrations)
	if err != nil {
		return fmt.Errorf("check the migrations of %s: %w", shortRev(rev), err)
	}
	for _, r := range st.Missing {
		fmt.Fprintf(stdout, "note: migration %s stays applied: migrations are not run backwards; %s's code must work with it\n", r.File, shortRev(rev))
	}
	if len(st.Pending) == 0 {
		return nil
	}
	files := make([]string, len(st.Pending))
	for i, m := range st.Pending {
		files[i] = m.File
	}
	if !force {
		return fmt.Errorf("revision %s has migrations the database's ledger lacks (%s): its rollout would apply them; --force to pin it anyway", shortRev(rev), strings.Join(files, ", "))
	}
	fmt.Fprintf(stdout, "note: --force: the rollout of %s applies %s\n", shortRev(rev), strings.Join(files, ", "))
	return nil
}
