package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/drover-dev/drover/agent"
	"github.com/drover-dev/drover/cluster"
	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/internal/revid"
	"github.com/drover-dev/drover/migrate"
	"github.com/drover-dev/drover/notify"
	"github.com/drover-dev/drover/reconcile"
)

// pin, unpin and rollback: the operator's choice of revision instead of the
// branch head, kept in Redis (the state dir without a cluster). The agents
// roll a pin out like any new commit (reconcile/desired.go).

var fullRevRE = regexp.MustCompile(`^[0-9a-f]{40}$`)

// PinRequest is drover pin REV, or drover rollback [REV].
type PinRequest struct {
	// Rev is a full commit id, or a prefix of one the history or this
	// node's release store knows (see ParseRev). Empty for a rollback:
	// the revision that was live before the current one.
	Rev      string
	Reason   string // shown by drover status and history; default the act's name
	Force    bool   // pin even when the revision's rollout would apply migrations
	Rollback bool   // told to the notifiers as a rollback
}

// PinResult is what a pin did.
type PinResult struct {
	// Pin is the pin set; when the pin failed, only its Rev is known (when
	// the revision was resolved).
	Pin reconcile.Pin
	// StayApplied are migrations the database has that the pinned revision
	// lacks: migrations are not run backwards, its code must work with them.
	StayApplied []string
	// Applies are migrations the pinned revision has that the ledger lacks:
	// its rollout applies them (a pin with Force).
	Applies []string
}

// ParseRev checks the operator's REV: a full commit id, or a prefix of at
// least 4 hex digits; it returns it lower-cased.
func ParseRev(arg string) (string, error) {
	arg = strings.ToLower(strings.TrimSpace(arg))
	if !fullRevRE.MatchString(arg) && (len(arg) < 4 || strings.Trim(arg, "0123456789abcdef") != "") {
		return "", fmt.Errorf("REV %q is not a commit id (at least 4 hex digits)", arg)
	}
	return arg, nil
}

// Pin pins the cluster to a revision: every node rolls it out like a new
// commit, one at a time, and stays on it until Unpin. A halted revision is
// refused, and one whose rollout would apply migrations unless Force.
func (k *Control) Pin(ctx context.Context, req PinRequest) (PinResult, error) {
	act := "pin"
	if req.Rollback {
		act = "rollback"
	}
	var rev string
	var err error
	if req.Rev != "" || !req.Rollback {
		rev, err = k.resolveRev(ctx, req.Rev)
	} else {
		rev, err = k.previousLive(ctx)
	}
	if err != nil {
		return PinResult{}, err
	}
	if why, halted, err := k.registry().Halted(ctx, rev); err != nil {
		return PinResult{}, err
	} else if halted {
		return PinResult{}, fmt.Errorf("revision %s is halted (%s): a halted revision cannot be pinned; clear it first (drover clear)", revid.Short(rev), firstLine(why))
	}
	res, err := k.checkPinMigrations(ctx, rev, req.Force)
	res.Pin.Rev = rev
	if err != nil {
		return res, err
	}
	reason := req.Reason
	if reason == "" {
		reason = act
	}
	p := reconcile.Pin{Rev: rev, Reason: reason, By: k.By, At: time.Now().UTC()}
	if k.c != nil {
		err = k.c.SetPin(ctx, p)
	} else {
		err = k.file.SetPin(p)
	}
	if err != nil {
		return PinResult{}, err
	}
	res.Pin = p
	k.record(ctx, rev, cluster.Action{By: p.By, What: "pinned", Reason: reason})
	kind, verb := notify.KindPinned, "pinned to"
	if req.Rollback {
		kind, verb = notify.KindRolledBack, "rolled back to"
	}
	agent.NotifyNow(ctx, k.cfg, notify.Event{ID: fmt.Sprintf("%s:%s:%d", act, rev, p.At.UnixNano()), Kind: kind, Revision: rev, By: p.By, Reason: reason,
		Text: fmt.Sprintf("%s %s %s: %s", p.By, verb, revid.Short(rev), reason)})
	return res, k.poke(ctx, act+" by "+p.By)
}

// Unpin lets the nodes follow the branch again; it returns the pin it
// removed, pinned false when there was none.
func (k *Control) Unpin(ctx context.Context) (was reconcile.Pin, pinned bool, err error) {
	p, pinned, err := k.pinner().Pinned(ctx)
	if err != nil || !pinned {
		return p, false, err
	}
	if k.c != nil {
		err = k.c.Unpin(ctx, k.By)
	} else {
		err = k.file.Unpin()
	}
	if err != nil {
		return p, true, err
	}
	k.record(ctx, p.Rev, cluster.Action{By: k.By, What: "unpinned"})
	agent.NotifyNow(ctx, k.cfg, notify.Event{ID: fmt.Sprintf("unpin:%s:%d", p.Rev, time.Now().UnixNano()), Kind: notify.KindUnpinned, Revision: p.Rev, By: k.By,
		Text: fmt.Sprintf("%s unpinned %s: the nodes follow the branch again", k.By, revid.Short(p.Rev))})
	return p, true, k.poke(ctx, "unpin by "+k.By)
}

// resolveRev turns REV into a full commit id: a full id as is (fetched
// when the cluster has not seen it), a prefix matched against the
// revisions the history and this node's release store know.
func (k *Control) resolveRev(ctx context.Context, arg string) (string, error) {
	arg, err := ParseRev(arg)
	if err != nil {
		return "", err
	}
	known := k.knownRevs(ctx)
	if !fullRevRE.MatchString(arg) {
		return matchRev(arg, known, "known revision")
	}
	if slices.Contains(known, arg) {
		return arg, nil
	}
	// Not one the cluster has seen: the repo must have it, or every agent
	// would take the pin and fail to fetch it.
	if err := k.fetchForPin(ctx, arg); err != nil {
		return "", fmt.Errorf("revision %s is not in the history nor on this node, and the repo does not serve it: %w", revid.Short(arg), err)
	}
	return arg, nil
}

// pinFetchTimeout bounds the fetch of a pinned revision the cluster has not
// seen: one shallow fetch of one commit.
const pinFetchTimeout = time.Minute

// fetchForPin fetches rev into the CLI's own git store (the agent's is
// its alone).
func (k *Control) fetchForPin(ctx context.Context, rev string) error {
	repo, err := agent.OpenCLIRepo(k.cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer repo.Close()
	ctx, cancel := context.WithTimeout(ctx, pinFetchTimeout)
	defer cancel()
	return repo.Fetch(ctx, rev)
}

// knownRevs are the revisions the history and this node's release store
// know.
func (k *Control) knownRevs(ctx context.Context) []string {
	var known []string
	if revs, err := k.hist.List(ctx, 0); err == nil {
		for _, r := range revs {
			known = append(known, r.Rev)
		}
	}
	if ents, err := os.ReadDir(layout.New(k.cfg.StateDir).Releases()); err == nil {
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
func (k *Control) previousLive(ctx context.Context) (string, error) {
	revs, err := k.hist.List(ctx, 0)
	if err != nil {
		return "", err
	}
	if rev := cluster.PreviousLive(revs); rev != "" {
		return rev, nil
	}
	target, err := os.Readlink(layout.New(k.cfg.StateDir).Previous())
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
func (k *Control) checkPinMigrations(ctx context.Context, rev string, force bool) (PinResult, error) {
	var res PinResult
	if k.cfg.Database == nil {
		return res, nil
	}
	set, err := RevisionMigrations(ctx, k.cfg, rev, k.log)
	if errors.Is(err, migrate.ErrNoMigrations) {
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("check the migrations of %s: %w (--force skips the check)", revid.Short(rev), err)
	}
	db, err := agent.OpenDatabase(ctx, k.cfg, set.Config(cliNode(k.cfg), k.log))
	if err != nil {
		return res, fmt.Errorf("check the migrations of %s: %w", revid.Short(rev), err)
	}
	defer db.Close(context.WithoutCancel(ctx))
	st, err := db.Status(ctx, set.Migrations)
	if err != nil {
		return res, fmt.Errorf("check the migrations of %s: %w", revid.Short(rev), err)
	}
	for _, r := range st.Missing {
		res.StayApplied = append(res.StayApplied, r.File)
	}
	for _, m := range st.Pending {
		res.Applies = append(res.Applies, m.File)
	}
	if len(res.Applies) > 0 && !force {
		return res, fmt.Errorf("revision %s has migrations the database's ledger lacks (%s): its rollout would apply them; --force to pin it anyway", revid.Short(rev), strings.Join(res.Applies, ", "))
	}
	return res, nil
}

// firstLine is s up to its first newline, marked cut.
func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}
