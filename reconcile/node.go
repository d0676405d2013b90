package reconcile

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/drover-dev/drover/internal/atomicfile"
	"github.com/drover-dev/drover/internal/layout"

	"github.com/drover-dev/drover/health"
	"github.com/drover-dev/drover/spec"
)

// Config is what the state machine needs to know about this node.
type Config struct {
	Name string
	// RepoDir is the directory of the repo holding drover.yaml.
	RepoDir string
	// StateDir holds the journal and the node-local registry files.
	StateDir string
	// LiveDir is the live release as workers see it (StateDir/current).
	LiveDir string
	// HealthDir holds the "up" file that nginx's LB health endpoint serves.
	HealthDir string
	// KeepReleases is how many releases Prune keeps.
	KeepReleases int
	// SiteURL says where this node's nginx serves the sites of a spec, e.g.
	// https://127.0.0.1:443; site checks send each site's server name.
	SiteURL func(sp *spec.Spec) string
	// WorkerHost is where worker instances listen (127.0.0.1).
	WorkerHost string
	// Guard is the steady-state guard's settings (guard.go).
	Guard GuardConfig
	// Policy is what a spec may ask of this node (node.yaml's policy): a
	// revision outside it is a revision fault, found before prepare. nil is
	// spec.DefaultPolicy. Releases already prepared are not checked again.
	Policy *spec.Policy
	Log    *slog.Logger

	// Handover is the overlap handover's settings (handover.go).
	Handover HandoverConfig
}

// Deps are the node's collaborators. Source, Releases, Web and Supervisor are
// required; the others default to their single-node forms (no lock, no
// load balancer, no migrations, a registry in the state dir).
type Deps struct {
	Source     Source
	Releases   Releases
	Web        WebServer
	Supervisor Supervisor
	Lock       Lock
	Drainer    Drainer
	Migrator   Migrator
	Registry   Registry
	Capacity   Capacity
	// Verifier, when set, refuses unsigned revisions (see Verifier).
	Verifier Verifier
	// Room decides whether the guard may take the node out; without a
	// cluster it never may.
	Room Room
	// Pinner holds the operator's pin (desired.go); default: the
	// FileRegistry's pin file in the state dir.
	Pinner Pinner
	// Canaries and Traffic run rollout.canary (canary.go); without both
	// there is no canary.
	Canaries Canaries
	Traffic  Traffic
}

// Node runs the rollout of new revisions on this node. Its methods must not
// be called concurrently; Run serializes them.
type Node struct {
	cfg     Config
	d       Deps
	log     *slog.Logger
	journal journal
	crashes crashes // stops of the agent mid-change, per revision (crashes.go)

	// live is held by whoever changes the live release (a rollout from
	// the lock on, a recovery) and by each guard round, so the two never
	// act on the node at once.
	live sync.Mutex

	mu     sync.Mutex
	status Status
	// liveRev is the release the node last verified, which the guard
	// watches and puts back.
	liveRev string
	// retry holds, per revision whose preparation failed, when to try
	// again: a download or install that failed is retried with backoff,
	// not at every poll.
	retry map[string]retryState
	// ahead is the branch head last prepared while pinned (desired.go).
	ahead string
	// aheadWaiting is true while instances started ahead of the node's
	// turn wait for it (ahead.go); the guard then repairs nothing. Under mu.
	aheadWaiting bool

	// waitHealthy is health.Wait unless a test sets it: the in-process
	// suite (suite_test.go) runs under testing/synctest, where real
	// sockets would leave the bubble's virtual clock, so its fake node
	// answers the checks instead. Production never sets it.
	waitHealthy func(context.Context, []health.Check) error
}

// waitChecks is health.Wait, or the test's stand-in (waitHealthy).
func (n *Node) waitChecks(ctx context.Context, checks []health.Check) error {
	if n.waitHealthy != nil {
		return n.waitHealthy(ctx, checks)
	}
	return health.Wait(ctx, checks)
}

type retryState struct {
	failures int
	next     time.Time
}

// New checks the configuration and returns a node ready to Recover and Sync.
func New(cfg Config, d Deps) (*Node, error) {
	if d.Source == nil || d.Releases == nil || d.Web == nil || d.Supervisor == nil || cfg.SiteURL == nil {
		return nil, errors.New("reconcile: Source, Releases, Web, Supervisor and SiteURL are required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.KeepReleases < 2 {
		cfg.KeepReleases = 2
	}
	if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	if err := os.MkdirAll(cfg.HealthDir, 0o755); err != nil {
		return nil, fmt.Errorf("health dir: %w", err)
	}
	if d.Lock == nil {
		d.Lock = localLock{}
	}
	if d.Drainer == nil {
		d.Drainer = noDrain{}
	}
	if d.Migrator == nil {
		d.Migrator = noMigrations{}
	}
	if d.Capacity == nil {
		d.Capacity = noCapacityLimit{}
	}
	if d.Registry == nil {
		d.Registry = &FileRegistry{Dir: cfg.StateDir}
	}
	if d.Room == nil {
		d.Room = singleNode{}
	}
	if d.Pinner == nil {
		d.Pinner = &FileRegistry{Dir: cfg.StateDir}
	}
	n := &Node{
		cfg:     cfg,
		d:       d,
		log:     cfg.Log,
		journal: journal{path: layout.New(cfg.StateDir).Journal()},
		crashes: crashes{path: layout.New(cfg.StateDir).Crashes()},
		retry:   map[string]retryState{},
	}
	n.placeParts()
	rev, err := d.Releases.Current()
	if err != nil {
		return nil, err
	}
	n.status = Status{Node: cfg.Name, Rev: rev, Step: StepIdle, Since: time.Now()}
	n.liveRev = rev
	if rev != "" && !n.inLB() {
		// Out of the LB when this agent started (a check failed, the guard
		// took it out, an earlier agent died mid-change): say so from the
		// first report, so that no other node drains on the belief that
		// this one serves, until recovery verifies it and the LB has it.
		n.status.Health, n.status.HealthWhy, n.status.HealthSince = HealthOut, "not in the load balancer when the agent started", time.Now()
	}
	return n, nil
}

// Status returns what the node last reported.
func (n *Node) Status() Status {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.status
}

// setStep records and publishes the node's step. Publishing is best effort:
// a registry outage must not stop a rollout that is already under way.
func (n *Node) setStep(ctx context.Context, step Step, target string, err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	n.mu.Lock()
	changed := n.status.Step != step || n.status.Target != target || n.status.Error != msg
	if changed {
		n.status.Since = time.Now()
	}
	n.status.Step, n.status.Target, n.status.Error = step, target, msg
	if rev, cerr := n.d.Releases.Current(); cerr == nil {
		n.status.Rev = rev
	}
	if n.d.Verifier != nil {
		n.status.Signer = n.d.Verifier.Signer(n.status.Rev)
	}
	st := n.status
	n.mu.Unlock()
	if changed {
		n.log.Info("step", "step", step, "rev", short(target), "live", short(st.Rev), "err", st.Error)
	}
	if rerr := n.d.Registry.Report(ctx, st); rerr != nil {
		n.log.Warn("report status", "err", rerr)
	}
}

// Outcome says what one Sync did.
type Outcome struct {
	From, To string
	// Applied is true when the node now serves To.
	Applied bool
	// RolledBack is true when To failed and the node went back to From.
	RolledBack bool
	// Canary is true when the node applied To as its canary (canary.go).
	Canary bool
}

// ErrHalted is returned by Sync when the target revision is halted.
var ErrHalted = errors.New("revision is halted")

// Sync brings the node to the revision the branch points at now.
func (n *Node) Sync(ctx context.Context) (Outcome, error) {
	head, err := n.d.Source.Remote(ctx)
	n.mu.Lock()
	n.status.Seen = time.Now()
	step := n.status.Step
	n.mu.Unlock()
	if err != nil {
		err = fmt.Errorf("poll repo: %w", err)
	}
	// The desired revision is the pin when one is set (desired.go).
	rev, pinned, err := n.desired(ctx, head, err)
	if err != nil {
		if step == StepIdle {
			// Say why the node is not moving; it keeps serving meanwhile.
			n.setStep(ctx, StepIdle, "", err)
		}
		return Outcome{}, err
	}
	out, err := n.SyncTo(ctx, rev)
	if err == nil && out.Canary {
		// Lock released: this node serves rev while the gate decides.
		err = n.runCanary(ctx, out.From, rev, n.specOrNil(rev), false)
	}
	if pinned && err == nil {
		n.prepareAhead(ctx, head)
	}
	return out, err
}

// SyncTo brings the node to rev (a full commit id).
func (n *Node) SyncTo(ctx context.Context, rev string) (Outcome, error) {
	cur, err := n.d.Releases.Current()
	if err != nil {
		return Outcome{}, err
	}
	out := Outcome{From: cur, To: rev}
	if rev == cur {
		if st := n.Status(); st.Step == StepIdle && st.Error != "" {
			n.setStep(ctx, StepIdle, "", nil) // the repo is reachable again
		} else if err := n.d.Registry.Report(ctx, st); err != nil {
			n.log.Warn("report status", "err", err) // when it last polled
		}
		return out, n.resumeCanary(ctx, cur)
	}
	if reason, halted, err := n.d.Registry.Halted(ctx, rev); err != nil {
		return out, fmt.Errorf("check halted revisions: %w", err)
	} else if halted {
		n.setStep(ctx, StepIdle, "", fmt.Errorf("revision %s is halted: %s", short(rev), reason))
		return out, fmt.Errorf("%w: %s: %s", ErrHalted, short(rev), reason)
	}
	if r, ok := n.retry[rev]; ok && time.Now().Before(r.next) {
		return out, nil
	}

	n.setStep(ctx, StepPreparing, rev, nil)
	sp, fsys, err := n.prepare(ctx, rev)
	if err != nil {
		if IsBadRevision(err) {
			n.halt(ctx, rev, err)
			return out, err
		}
		n.backoff(rev)
		n.setStep(ctx, StepIdle, "", err)
		return out, err
	}
	delete(n.retry, rev)

	// Waiting for the turn is bounded by the progress deadline, so a
	// cluster that cannot make progress (a dead node holding capacity)
	// shows up as an error instead of a node waiting forever.
	n.setStep(ctx, StepWaiting, rev, nil)
	if err := n.awaitCanary(ctx, rev, sp); err != nil {
		return out, err
	}
	turnCtx, cancelTurn := context.WithTimeout(ctx, sp.Rollout.ProgressDeadline.D())
	defer cancelTurn()
	// With the overlap handover the new instances may start while the
	// node waits (ahead.go).
	lockCtx, release, ho, decided, err := n.acquire(ctx, turnCtx, cur, rev, sp, fsys)
	if isAheadError(err) {
		return out, err // startAhead said what became of the revision
	} else if err != nil {
		err = fmt.Errorf("rollout lock: %w", err)
		n.setStep(ctx, StepIdle, "", err)
		return out, err
	}
	defer func() {
		// Release with a fresh context: the lock must be handed on even
		// when ctx was cancelled (agent stopping).
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := release(rctx); err != nil {
			n.log.Warn("release rollout lock", "err", err)
		}
	}()
	// From here on the node is the rollout's: the guard waits.
	n.live.Lock()
	defer n.live.Unlock()
	n.mu.Lock()
	n.aheadWaiting = false
	n.mu.Unlock()
	if ho != nil {
		defer func() {
			if !out.Applied {
				n.settle(ctx) // the range started ahead, when the turn ends without it
			}
		}()
	}
	// Another node may have failed rev while this one waited.
	if reason, halted, err := n.d.Registry.Halted(lockCtx, rev); err != nil {
		n.setStep(ctx, StepIdle, "", err)
		return out, fmt.Errorf("check halted revisions: %w", err)
	} else if halted {
		n.setStep(ctx, StepIdle, "", fmt.Errorf("revision %s is halted: %s", short(rev), reason))
		return out, fmt.Errorf("%w: %s: %s", ErrHalted, short(rev), reason)
	}
	canary, err := n.claimCanary(lockCtx, cur, rev, sp)
	if err != nil {
		n.setStep(ctx, StepIdle, "", err)
		return out, err
	}
	out2, err := n.rollout(ctx, lockCtx, turnCtx, cur, rev, sp, fsys, ho, decided)
	out.Applied, out.RolledBack = out2.Applied, out2.RolledBack
	out.Canary = canary && out.Applied
	return out, err
}

// badRevisionError is a failure caused by the revision's content (invalid
// spec, path escape, a failing migration): it fails the same way on every
// node and every try, so the revision is halted instead of retried.
type badRevisionError struct{ err error }

func (e *badRevisionError) Error() string { return e.err.Error() }
func (e *badRevisionError) Unwrap() error { return e.err }

// RevisionFault says the revision, not the node, is at fault.
func (e *badRevisionError) RevisionFault() bool { return true }

// BadRevision marks err as the revision's fault, for a collaborator whose
// own errors do not say so: the rollout halts the revision instead of
// retrying it.
func BadRevision(err error) error { return &badRevisionError{err} }

// IsBadRevision reports whether err is the revision's fault: an error in
// its chain says so with a method RevisionFault() bool. Step packages
// (migrate, secretenv, gitsource's signature check) give their errors the
// method instead of importing reconcile, as units' errors say NodeFault();
// BadRevision gives it to any other error.
func IsBadRevision(err error) bool {
	var rf interface{ RevisionFault() bool }
	return errors.As(err, &rf) && rf.RevisionFault()
}

// goBack ends a turn that failed for a reason not the revision's (the lock
// lost, the node's own fault): the node goes back to the release it left,
// halting nothing, and the revision is tried again later. When the way
// back fails too, the node reports failed and the journal stays for the
// next agent.
func (n *Node) goBack(ctx context.Context, e *entry, out Outcome, cause error) (Outcome, error) {
	if rerr := n.restore(ctx, e); rerr != nil {
		n.setStep(ctx, StepFailed, e.To, fmt.Errorf("%v; rollback to %s failed: %w", cause, short(e.From), rerr))
		return out, errors.Join(cause, rerr)
	}
	out.RolledBack = true
	n.setStep(ctx, StepIdle, "", cause)
	return out, cause
}

// pinger is a Supervisor that can say whether what it drives (systemd)
// answers at all.
type pinger interface {
	Ping(ctx context.Context) error
}

// nodeFault returns a non-nil error when the failure err of a switch or a
// check is this node's and not the revision's: the error says so itself
// (a method NodeFault() bool, as units' systemd errors have), or the
// supervisor no longer answers. A host shutting down stops systemd before
// the agent; its workers die, its checks fail, and halting the revision
// for that would stop a good revision on every node.
func (n *Node) nodeFault(ctx context.Context, err error) error {
	var nf interface{ NodeFault() bool }
	if errors.As(err, &nf) && nf.NodeFault() {
		return err
	}
	p, ok := n.rawSupervisor().(pinger)
	if !ok {
		return nil
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if perr := p.Ping(pctx); perr != nil {
		return fmt.Errorf("%w (and the worker supervisor does not answer: %v)", err, perr)
	}
	return nil
}

// prepare does the slow, risk-free work before the turn: fetch, parse and
// check the spec, materialize the release, install worker dependencies and
// test the nginx config. Nothing live changes.
func (n *Node) prepare(ctx context.Context, rev string) (*spec.Spec, fs.FS, error) {
	if err := n.d.Source.Fetch(ctx, rev); err != nil {
		return nil, nil, fmt.Errorf("fetch %s: %w", short(rev), err)
	}
	if err := n.verifySignature(ctx, rev); err != nil {
		return nil, nil, err
	}
	fsys, err := n.d.Source.Tree(ctx, rev, n.cfg.RepoDir)
	if err != nil {
		return nil, nil, fmt.Errorf("read tree of %s: %w", short(rev), err)
	}
	data, err := spec.ReadFS(fsys, spec.FileName, spec.PathIn(n.cfg.RepoDir))
	if err != nil {
		return nil, nil, &badRevisionError{fmt.Errorf("read %s of %s: %w", spec.PathIn(n.cfg.RepoDir), short(rev), err)}
	}
	sp, err := n.parseSpec(data)
	if err != nil {
		return nil, nil, &badRevisionError{err}
	}
	if err := spec.CheckTree(spec.PathIn(n.cfg.RepoDir), sp, fsys); err != nil {
		return nil, nil, &badRevisionError{err}
	}
	if err := n.d.Migrator.Check(sp, fsys); err != nil {
		return nil, nil, &badRevisionError{fmt.Errorf("migrations of %s: %w", short(rev), err)}
	}
	start := time.Now()
	if err := n.d.Releases.Prepare(ctx, rev, data, sp, fsys); err != nil {
		return nil, nil, fmt.Errorf("prepare release %s: %w", short(rev), err)
	}
	if err := n.d.Web.Check(ctx, sp); err != nil {
		return nil, nil, &badRevisionError{fmt.Errorf("nginx config of %s: %w", short(rev), err)}
	}
	n.log.Info("prepared", "rev", short(rev), "took", time.Since(start).Round(time.Millisecond))
	return sp, fsys, nil
}

func (n *Node) backoff(rev string) {
	r := n.retry[rev]
	r.failures++
	delay := time.Duration(1<<min(r.failures-1, 5)) * time.Minute // 1m … 32m
	r.next = time.Now().Add(delay)
	n.retry[rev] = r
	n.log.Warn("will retry the revision later", "rev", short(rev), "in", delay)
}

func (n *Node) halt(ctx context.Context, rev string, cause error) {
	n.log.Error("revision failed; halting it", "rev", short(rev), "err", cause)
	if err := n.d.Registry.Halt(context.WithoutCancel(ctx), rev, cause.Error()); err != nil {
		n.log.Error("halt revision", "rev", short(rev), "err", err)
	}
	n.setStep(ctx, StepFailed, rev, cause)
}

// rollout runs the node's turn while it holds the lock: migrations, the
// capacity check, drain, switch, verify, and undrain, or roll back. ctx is
// the agent's; lockCtx ends when the lock is lost; turnCtx bounds the waits.
//
// ho is the overlap's new range when it was started ahead of the turn
// (decided: startAhead ran already, and ho nil means restart).
func (n *Node) rollout(ctx, lockCtx, turnCtx context.Context, from, to string, sp *spec.Spec, fsys fs.FS, ho *handover, decided bool) (Outcome, error) {
	out := Outcome{From: from, To: to}
	n.setStep(ctx, StepMigrating, to, nil)
	if err := n.d.Migrator.Migrate(lockCtx, to, sp, fsys); err != nil {
		err = fmt.Errorf("migrations of %s: %w", short(to), err)
		if IsBadRevision(err) {
			n.halt(ctx, to, err)
		} else {
			n.backoff(to)
			n.setStep(ctx, StepIdle, "", err)
		}
		return out, err
	}

	// With the overlap handover the new release's instances start now,
	// while the node still serves, and must be healthy (handover.go);
	// whatever runs beside the live release is stopped when the turn ends
	// without it, or by Settle once it is live and the lock handed on.
	if ho != nil {
		if err := n.stillHealthy(lockCtx, ho, sp); err != nil {
			n.log.Warn("starting the new workers again in the node's turn", "rev", short(to), "err", err)
			n.settle(ctx)
			ho, decided = nil, false
		}
	}
	if !decided {
		var herr error
		if ho, herr = n.startAhead(ctx, lockCtx, from, to, sp); herr != nil {
			return out, herr
		}
	}
	defer func() {
		if !out.Applied {
			n.settle(ctx) // else Settle, once the revision is live
		}
	}()

	// Capacity (invariant 1): drain only if, counting this node, no more
	// than maxUnavailable nodes are out of service.
	waitCtx, cancel := mergeCancel(lockCtx, turnCtx)
	err := n.d.Capacity.WaitCapacity(waitCtx, sp.Rollout.MaxUnavailable, func(reason string) {
		n.setStep(ctx, StepWaiting, to, fmt.Errorf("waiting for capacity: %s", reason))
	})
	cancel()
	if err != nil {
		if lockCtx.Err() != nil {
			// Say why the wait ended: the lock, not "context canceled".
			err = fmt.Errorf("%w (rollout lock: %v)", err, context.Cause(lockCtx))
		}
		err = fmt.Errorf("capacity: %w", err)
		n.setStep(ctx, StepIdle, "", err)
		return out, err
	}

	e := &entry{From: from, To: to, Step: StepDraining, Drained: true, Started: time.Now()}
	ho.carry(e)
	if err := n.journal.write(e); err != nil {
		return out, err
	}
	n.setStep(ctx, StepDraining, to, nil)
	// A first deploy has nothing in service to drain (nginx may not even
	// run yet); it still undrains after its checks, to join the LB.
	if from == "" {
		n.log.Info("first release on this node: nothing to drain", "rev", short(to))
	} else if err := n.d.Drainer.Drain(lockCtx, sp.Rollout.DrainTimeout.D()); err != nil {
		// Still on the old release: put it back in rotation and stop.
		err = fmt.Errorf("drain: %w", err)
		if uerr := n.undrainAndClear(ctx, e); uerr != nil {
			err = fmt.Errorf("%w; and the undrain after it: %v", err, uerr)
		}
		// Not the revision's fault, but a drain that fails now will
		// likely fail on the next poll too: do not drain and undrain
		// the node every few seconds.
		n.backoff(to)
		n.setStep(ctx, StepIdle, "", err)
		return out, err
	} else if dr, ok := n.d.Drainer.(drainReporter); ok {
		if why := dr.LastDrainIncomplete(); why != "" {
			// Not a failure (the LB sends nothing new by every other
			// sign), but an event: a rollout that keeps hitting the
			// bound has a drainTimeout or an LB setting to fix.
			n.notice(ctx, to, "drain went on at its bound: "+why)
		}
	}

	err = n.switchAndVerify(lockCtx, e, to, sp)
	if err == nil && lockCtx.Err() == nil {
		uerr := n.journalRejoin(e, to)
		if uerr == nil {
			// Reported only once journaled: whoever sees "undraining"
			// may rely on a restarted agent finishing it forward.
			n.setStep(ctx, StepUndraining, to, nil)
			uerr = n.undrainAndClear(ctx, e)
		}
		if uerr != nil {
			n.setStep(ctx, StepFailed, to, uerr)
			return out, uerr
		}
		out.Applied = true
		n.setStep(ctx, StepIdle, "", nil)
		n.prune(ctx)
		return out, nil
	}
	switch {
	case ctx.Err() != nil:
		// The agent is stopping: leave the journal; the next agent puts
		// the node back on one release before it does anything else.
		return out, fmt.Errorf("stopped mid-change (the next agent recovers): %w", ctx.Err())
	case lockCtx.Err() != nil:
		// The lock was lost: this is not the revision's fault. Go back to
		// the previous release (never go on unlocked) and try again later.
		return n.goBack(ctx, e, out, fmt.Errorf("rollout lock lost during %s: %w", e.Step, context.Cause(lockCtx)))
	}

	if nf := n.nodeFault(ctx, err); nf != nil {
		// Not the revision's fault: like a lost lock, go back to the
		// previous release (when the node still can) and try later. When
		// it cannot, the journal stays and the next agent recovers.
		n.log.Error("node fault mid-change; not halting the revision", "rev", short(to), "err", nf)
		n.backoff(to)
		return n.goBack(ctx, e, out, fmt.Errorf("this node failed during %s, not revision %s: %w", e.Step, short(to), nf))
	}

	// The new release failed. Mark it failed for the whole cluster first,
	// so that no other node takes it while this one rolls back.
	n.halt(ctx, to, err)
	if sp.Rollout.OnFailure == "halt" {
		n.log.Error("onFailure is halt: staying drained on the failed release for inspection", "rev", short(to))
		// Journaled as held, so that a restarted agent does not undo
		// what the operator asked to keep (Recover).
		e.Held, e.Step = true, StepFailed
		if jerr := n.journal.write(e); jerr != nil {
			n.log.Error("journal the hold", "err", jerr)
		}
		return out, err
	}
	if rerr := n.restore(ctx, e); rerr != nil {
		n.setStep(ctx, StepFailed, to, fmt.Errorf("%v; rollback to %s also failed: %w", err, short(from), rerr))
		return out, errors.Join(err, rerr)
	}
	out.RolledBack = true
	n.setStep(ctx, StepFailed, to, err)
	return out, err
}

// mergeCancel returns a context that ends when either a or b ends, with
// a's values.
func mergeCancel(a, b context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(a)
	stop := context.AfterFunc(b, func() { cancel(context.Cause(b)) })
	return ctx, func() { stop(); cancel(context.Canceled) }
}

// switchAndVerify puts rev live and checks it, with the journal updated
// before each step that changes the node.
func (n *Node) switchAndVerify(ctx context.Context, e *entry, rev string, sp *spec.Spec) error {
	e.Step = StepSwitching
	if err := n.journal.write(e); err != nil {
		return err
	}
	n.setStep(ctx, StepSwitching, rev, nil)
	if err := n.apply(ctx, rev, sp); err != nil {
		return err
	}
	e.Step = StepVerifying
	if err := n.journal.write(e); err != nil {
		return err
	}
	n.setStep(ctx, StepVerifying, rev, nil)
	return n.verify(ctx, sp)
}

// apply switches the live release to rev and brings nginx and the workers
// to sp. Each part is idempotent, so recovery can run it again.
func (n *Node) apply(ctx context.Context, rev string, sp *spec.Spec) error {
	if err := n.d.Releases.Switch(rev); err != nil {
		return fmt.Errorf("switch release: %w", err)
	}
	// Workers first: nginx's new upstreams must exist when it reloads.
	// Each instance gets the rollout's healthTimeout to become healthy.
	if err := n.d.Supervisor.Apply(health.WithBudget(ctx, sp.Rollout.HealthTimeout.D()), sp.Workers, n.cfg.LiveDir); err != nil {
		return fmt.Errorf("workers: %w", err)
	}
	if err := n.d.Web.Apply(ctx, sp); err != nil {
		return fmt.Errorf("nginx: %w", err)
	}
	return nil
}

// verify waits until every site and worker of sp passes its checks within
// the health deadline, then stays healthy through the soak time.
func (n *Node) verify(ctx context.Context, sp *spec.Spec) error {
	checks := n.checks(sp, true)
	vctx, cancel := context.WithTimeout(ctx, sp.Rollout.HealthTimeout.D())
	defer cancel()
	if err := n.waitChecks(vctx, checks); err != nil {
		n.markHealthy(false)
		return fmt.Errorf("health checks: %w", err)
	}
	if soak := n.soakOf(sp); soak > 0 {
		select {
		case <-time.After(soak):
		case <-ctx.Done():
			return ctx.Err()
		}
		for i := range checks {
			checks[i].Successes = 1
		}
		sctx, cancel := context.WithTimeout(ctx, sp.Rollout.HealthTimeout.D())
		defer cancel()
		if err := n.waitChecks(sctx, checks); err != nil {
			n.markHealthy(false)
			return fmt.Errorf("health checks after %s of soak: %w", soak, err)
		}
	}
	n.markHealthy(true)
	rev, _ := n.d.Releases.Current()
	n.mu.Lock()
	n.liveRev = rev
	if n.status.Health != HealthOK && n.status.Health != HealthUnknown {
		n.status.HealthSince = time.Now()
	}
	n.status.Health, n.status.HealthWhy = HealthOK, ""
	n.mu.Unlock()
	return nil
}

// checks are the health checks of a spec on this node: its sites through
// nginx, its worker instances, and the extra checks that gate rollouts (for
// rollout) or the steady state.
func (n *Node) checks(sp *spec.Spec, rollout bool) []health.Check {
	var cs []health.Check
	for _, site := range sp.Sites {
		host := strings.Replace(site.ServerNames[0], "*", "health-check", 1)
		cs = append(cs, health.Check{
			Name: "site " + site.Name, URL: strings.TrimSuffix(n.cfg.SiteURL(sp), "/") + site.Health.Path, Host: host,
			Status: site.Health.Status, Successes: 1, Interval: 500 * time.Millisecond,
		})
	}
	for _, w := range n.placedWorkers(sp.Workers) {
		for i, port := range w.InstancePorts() {
			cs = append(cs, health.Check{
				Name:      fmt.Sprintf("worker %s instance %d", w.Name, i),
				URL:       "http://" + net.JoinHostPort(n.cfg.WorkerHost, strconv.Itoa(port)) + w.Health.Path,
				Status:    w.Health.Status,
				Successes: n.successesOf(&w),
				Interval:  w.Health.Interval.D(),
				Timeout:   w.Health.Timeout.D(),
			})
		}
	}
	if sp.Health != nil {
		for _, x := range sp.Health.Checks {
			if !x.Gate(rollout) {
				continue
			}
			c := health.Check{Name: "check " + x.Name, Status: x.Status, Successes: 1, Interval: 500 * time.Millisecond, Timeout: x.Timeout.D()}
			switch x.Kind() {
			case "http":
				c.URL = x.HTTP
			case "tcp":
				c.TCP = x.TCP
			default:
				c.Exec = &health.Program{Argv: x.Exec}
			}
			cs = append(cs, c)
		}
	}
	if rollout {
		cs = append(cs, n.routeChecks(sp)...)
	}
	return cs
}

// markHealthy writes or removes the file that makes nginx's LB health
// endpoint answer 200.
func (n *Node) markHealthy(ok bool) {
	p := layout.UpFile(n.cfg.HealthDir)
	var err error
	if ok {
		err = atomicfile.WriteFile(p, []byte("ok\n"), 0o644)
	} else if err = os.Remove(p); errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	if err != nil {
		n.log.Error("health marker", "err", err)
	}
}

// restore puts the node back on e.From: the release, nginx and workers,
// then verifies it and re-joins the LB.
func (n *Node) restore(ctx context.Context, e *entry) error {
	if e.From == "" {
		return errors.New("no previous release to roll back to")
	}
	// Rolling back must finish even if the lock was lost or the agent is
	// stopping: a node half on two releases is worse than a late one.
	ctx = context.WithoutCancel(ctx)
	e.Step = StepRollingBack
	if err := n.journal.write(e); err != nil {
		return err
	}
	n.setStep(ctx, StepRollingBack, e.From, nil)
	data, err := n.d.Releases.SpecOf(e.From)
	if err != nil {
		return err
	}
	sp, err := spec.ParseRelease(spec.PathIn(n.cfg.RepoDir), data)
	if err != nil {
		return fmt.Errorf("spec of release %s: %w", short(e.From), err)
	}
	if err := n.apply(ctx, e.From, sp); err != nil {
		return err
	}
	if err := n.verify(ctx, sp); err != nil {
		return fmt.Errorf("previous release %s: %w", short(e.From), err)
	}
	return n.rejoin(ctx, e, e.From)
}

// journalRejoin records that rev passed its checks and the node is about
// to re-join the LB with it. An agent killed from here on finds the node
// serving (or about to serve) a verified release, and must finish forward
// rather than change it (see Recover).
func (n *Node) journalRejoin(e *entry, rev string) error {
	e.Step, e.Verified = StepUndraining, rev
	return n.journal.write(e)
}

// rejoin is journalRejoin, then the undrain and the journal cleared.
func (n *Node) rejoin(ctx context.Context, e *entry, rev string) error {
	if err := n.journalRejoin(e, rev); err != nil {
		return err
	}
	return n.undrainAndClear(ctx, e)
}

func (n *Node) undrainAndClear(ctx context.Context, e *entry) error {
	if e.Drained {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
		defer cancel()
		if err := n.d.Drainer.Undrain(uctx); err != nil {
			return fmt.Errorf("undrain: %w", err)
		}
		e.Drained = false
	}
	if err := n.journal.clear(); err != nil {
		return err
	}
	if e.To != "" && e.Verified == e.To {
		if err := n.crashes.clear(e.To); err != nil {
			n.log.Warn("clear the count of stops mid-change", "err", err)
		}
	}
	return nil
}

func (n *Node) prune(ctx context.Context) {
	if err := n.d.Releases.Prune(ctx, n.cfg.KeepReleases); err != nil {
		n.log.Warn("prune releases", "err", err)
	}
}

// Recover finishes or undoes the change an earlier agent was making when it
// stopped, so that the node is on one release before anything else runs.
//
// It never changes a node that may be in service. The rule, by the step
// the journal names:
//
//   - draining, on the old release: nothing was switched; the node is
//     re-joined (an Undrain changes no release).
//   - undraining: the release named Verified passed its checks and the LB
//     may be sending it traffic again. Finish forward: make sure that same
//     release runs (idempotent: what runs as specified is left alone; the
//     exec supervisor's workers died with the agent), check it, undrain.
//     Going back instead would switch and restart a node the LB already
//     uses: the 502s of issue 16. Only if the checks now fail is it
//     drained, and then restored.
//   - switching, verifying, rolling-back: the node was drained before any
//     of them began and nothing undrained it since, so it is out of
//     service; Drain is called again anyway (idempotent, it returns at once
//     or after the quiet window) so that an LB that forgot the drain (an
//     HAProxy reload) has it out again before the restore switches it.
//     Restoring, rather than finishing, because the new release was never
//     verified: the next sync tries it again from a whole node.
//   - a first deploy (no previous release) is finished: there is nothing
//     to go back to, and the node was never in service.
func (n *Node) Recover(ctx context.Context) error {
	n.live.Lock()
	defer n.live.Unlock()
	defer n.settle(ctx) // the other range's instances, after an overlap (handover.go)
	e, err := n.journal.read()
	if err != nil {
		return err
	}
	if e == nil {
		return n.ensureLive(ctx)
	}
	cur, _ := n.d.Releases.Current()
	if e.Held {
		// onFailure: halt: the node stays drained on the failed release
		// for inspection, restart or not.
		err := fmt.Errorf("held drained on the failed release %s for inspection (rollout.onFailure: halt); the next revision rolls out from here", short(e.To))
		n.log.Warn("a failed change is held", "rev", short(e.To), "live", short(cur))
		n.setStep(ctx, StepFailed, e.To, err)
		return nil
	}
	n.log.Warn("the previous agent stopped mid-change; recovering", "step", e.Step, "from", short(e.From), "to", short(e.To), "live", short(cur))
	cc, cerr := n.crashes.add(e, time.Now())
	if cerr != nil {
		n.log.Warn("count the stop", "err", cerr)
	}
	switch {
	case e.Step == StepDraining && cur == e.From:
		// Nothing switched yet: only re-join the LB.
		if err := n.undrainAndClear(ctx, e); err != nil {
			return err
		}
		n.setStep(ctx, StepIdle, "", nil)
		return nil
	case e.Step == StepUndraining && e.Verified != "" && cur == e.Verified:
		if err := n.finishRejoin(ctx, e, cur); err != nil {
			n.setStep(ctx, StepFailed, cur, err)
			return err
		}
		n.setStep(ctx, StepIdle, "", nil)
		return nil
	case e.From == "":
		// A first deploy has nothing to go back to: finish it.
		data, err := n.d.Releases.SpecOf(e.To)
		if err != nil {
			return err
		}
		sp, err := spec.ParseRelease(spec.PathIn(n.cfg.RepoDir), data)
		if err != nil {
			return err
		}
		if err := n.switchAndVerify(ctx, e, e.To, sp); err != nil {
			if nf := n.nodeFault(ctx, err); nf != nil {
				n.setStep(ctx, StepFailed, e.To, nf) // the next agent tries again
				return nf
			}
			n.halt(ctx, e.To, err)
			return err
		}
		if err := n.rejoin(ctx, e, e.To); err != nil {
			return err
		}
		n.setStep(ctx, StepIdle, "", nil)
		return nil
	default:
		// Undo, drained: the revision will be tried again by the next
		// sync, from a node that is whole on its previous release.
		if err := n.drainThenRestore(ctx, e, cur); err != nil {
			n.setStep(ctx, StepFailed, e.To, err)
			return fmt.Errorf("recover to %s: %w", short(e.From), err)
		}
		n.setStep(ctx, StepIdle, "", nil)
		if cc.Count >= maxCrashes {
			// The node is whole on its previous release and in service;
			// the revision that keeps stopping the agent goes no further,
			// here or on the other nodes.
			n.halt(ctx, e.To, cc.error())
			// Cleared (drover clear), it has its tries again.
			if err := n.crashes.clear(e.To); err != nil {
				n.log.Warn("clear the count of stops mid-change", "err", err)
			}
		}
		return nil
	}
}

// finishRejoin completes a re-join killed midway: the live release cur
// (verified before the kill) is brought up as it is, checked, and
// undrained. If it no longer passes, the node is drained and restored.
func (n *Node) finishRejoin(ctx context.Context, e *entry, cur string) error {
	n.setStep(ctx, StepUndraining, cur, nil)
	err := n.runLive(ctx, cur)
	if err == nil {
		err = n.verify(ctx, n.specOrNil(cur))
	}
	if err != nil {
		n.markHealthy(false) // the LB stops sending it requests meanwhile
		n.log.Warn("the verified release fails after the restart; draining before restoring", "rev", short(cur), "err", err)
		if e.From == "" || e.From == cur {
			return fmt.Errorf("release %s: %w", short(cur), err)
		}
		return n.drainThenRestore(ctx, e, cur)
	}
	return n.undrainAndClear(ctx, e)
}

// runLive starts what release rev runs (its workers, its nginx config)
// where it is not running as specified; what is, is left alone.
func (n *Node) runLive(ctx context.Context, rev string) error {
	sp := n.specOrNil(rev)
	if sp == nil {
		return fmt.Errorf("spec of release %s is unreadable", short(rev))
	}
	if err := n.d.Supervisor.Apply(health.WithBudget(ctx, sp.Rollout.HealthTimeout.D()), sp.Workers, n.cfg.LiveDir); err != nil {
		return fmt.Errorf("workers of %s: %w", short(rev), err)
	}
	if err := n.d.Web.Apply(ctx, sp); err != nil {
		return fmt.Errorf("nginx of %s: %w", short(rev), err)
	}
	return nil
}

// parseSpec parses the drover.yaml of a revision about to be prepared
// against the node's policy. Releases already on the node are read back
// with spec.ParseRelease: the policy let them in, and one tightened since
// must not stop the node re-applying or rolling back to what it served.
func (n *Node) parseSpec(data []byte) (*spec.Spec, error) {
	p := spec.DefaultPolicy()
	if n.cfg.Policy != nil {
		p = *n.cfg.Policy
	}
	return spec.ParseFor(spec.PathIn(n.cfg.RepoDir), data, p)
}

// specOrNil is the spec of release rev, or nil when it cannot be read.
func (n *Node) specOrNil(rev string) *spec.Spec {
	data, err := n.d.Releases.SpecOf(rev)
	if err != nil {
		return nil
	}
	sp, err := spec.ParseRelease(spec.PathIn(n.cfg.RepoDir), data)
	if err != nil {
		return nil
	}
	return sp
}

// drainTimeoutOf is the drainTimeout of the first of revs whose spec the
// store holds: a drain outside a rollout (Recover, Leave) has no revision
// being rolled out to take it from.
func (n *Node) drainTimeoutOf(revs ...string) time.Duration {
	for _, rev := range revs {
		if rev == "" {
			continue
		}
		if sp := n.specOrNil(rev); sp != nil {
			return sp.Rollout.DrainTimeout.D()
		}
	}
	return spec.DefaultDrainTimeout
}

// drainThenRestore takes the node out of the LB (again: Drain is
// idempotent) and only then restores e.From: a restore switches the
// release and restarts workers, which no node in service may see.
func (n *Node) drainThenRestore(ctx context.Context, e *entry, cur string) error {
	timeout := n.drainTimeoutOf(cur, e.From)
	n.setStep(ctx, StepDraining, e.From, nil)
	if err := n.d.Drainer.Drain(ctx, timeout); err != nil {
		return fmt.Errorf("drain before restoring: %w", err)
	}
	e.Drained = true
	return n.restore(ctx, e)
}

// ensureLive makes the live release's workers and nginx config run as they
// should after an agent (re)start: workers supervised by the agent itself
// died with the previous agent, and nginx may not have been started yet. Both
// steps are idempotent: what already runs as specified is left alone.
func (n *Node) ensureLive(ctx context.Context) error {
	cur, err := n.d.Releases.Current()
	if err != nil || cur == "" {
		return err
	}
	data, err := n.d.Releases.SpecOf(cur)
	if err != nil {
		return err
	}
	sp, err := spec.ParseRelease(spec.PathIn(n.cfg.RepoDir), data)
	if err != nil {
		return fmt.Errorf("spec of live release %s: %w", short(cur), err)
	}
	if err := n.d.Supervisor.Apply(health.WithBudget(ctx, sp.Rollout.HealthTimeout.D()), sp.Workers, n.cfg.LiveDir); err != nil {
		n.markHealthy(false)
		n.setStep(ctx, StepFailed, cur, err)
		return fmt.Errorf("workers of live release %s: %w", short(cur), err)
	}
	if err := n.d.Web.Apply(ctx, sp); err != nil {
		n.markHealthy(false)
		n.setStep(ctx, StepFailed, cur, err)
		return fmt.Errorf("nginx of live release %s: %w", short(cur), err)
	}
	wasOut := !n.inLB()
	if err := n.verify(ctx, sp); err != nil {
		n.setStep(ctx, StepFailed, cur, err)
		return fmt.Errorf("live release %s: %w", short(cur), err)
	}
	// A node found drained without a change in flight (an operator's
	// drain, or an agent that died between undrain and clearing the
	// journal), or out of the LB (its guard took it out), is healthy now:
	// put it back, and say so only once the LB has it.
	if ds, ok := n.d.Drainer.(interface {
		Drained(context.Context) (bool, error)
	}); ok {
		if drained, err := ds.Drained(ctx); err != nil {
			n.log.Warn("read drain state", "err", err)
		} else if drained || wasOut {
			n.setStep(ctx, StepUndraining, cur, nil)
			if err := n.d.Drainer.Undrain(ctx); err != nil {
				n.setStep(ctx, StepFailed, cur, err)
				return fmt.Errorf("undrain: %w", err)
			}
		}
	}
	n.setStep(ctx, StepIdle, "", nil)
	return nil
}

func short(rev string) string {
	if len(rev) > 12 {
		return rev[:12]
	}
	return rev
}
