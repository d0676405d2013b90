package reconcile

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/drover-dev/drover/internal/atomicfile"

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
	Log        *slog.Logger
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
}

// Node runs the rollout of new revisions on this node. Its methods must not
// be called concurrently; Run serializes them.
type Node struct {
	cfg     Config
	d       Deps
	log     *slog.Logger
	journal journal

	mu     sync.Mutex
	status Status
	// retry holds, per revision whose preparation failed, when to try
	// again: a download or install that failed is retried with backoff,
	// not at every poll.
	retry map[string]retryState
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
	n := &Node{
		cfg:     cfg,
		d:       d,
		log:     cfg.Log,
		journal: journal{path: filepath.Join(cfg.StateDir, "journal.json")},
		retry:   map[string]retryState{},
	}
	rev, err := d.Releases.Current()
	if err != nil {
		return nil, err
	}
	n.status = Status{Node: cfg.Name, Rev: rev, Step: StepIdle, Since: time.Now()}
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
}

// ErrHalted is returned by Sync when the target revision is halted.
var ErrHalted = errors.New("revision is halted")

// Sync brings the node to the revision the branch points at now.
func (n *Node) Sync(ctx context.Context) (Outcome, error) {
	rev, err := n.d.Source.Remote(ctx)
	n.mu.Lock()
	n.status.Seen = time.Now()
	step := n.status.Step
	n.mu.Unlock()
	if err != nil {
		err = fmt.Errorf("poll repo: %w", err)
		if step == StepIdle {
			// Say why the node is not moving; it keeps serving meanwhile.
			n.setStep(ctx, StepIdle, "", err)
		}
		return Outcome{}, err
	}
	return n.SyncTo(ctx, rev)
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
		return out, nil
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
		var bad *badRevisionError
		if errors.As(err, &bad) {
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
	turnCtx, cancelTurn := context.WithTimeout(ctx, sp.Rollout.ProgressDeadline.D())
	defer cancelTurn()
	lockCtx, release, err := n.d.Lock.Acquire(turnCtx, rev, sp.Rollout.MaxUnavailable)
	if err != nil {
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
	// Another node may have failed rev while this one waited.
	if reason, halted, err := n.d.Registry.Halted(lockCtx, rev); err != nil {
		n.setStep(ctx, StepIdle, "", err)
		return out, fmt.Errorf("check halted revisions: %w", err)
	} else if halted {
		n.setStep(ctx, StepIdle, "", fmt.Errorf("revision %s is halted: %s", short(rev), reason))
		return out, fmt.Errorf("%w: %s: %s", ErrHalted, short(rev), reason)
	}
	out2, err := n.rollout(ctx, lockCtx, turnCtx, cur, rev, sp, fsys)
	out.Applied, out.RolledBack = out2.Applied, out2.RolledBack
	return out, err
}

// badRevisionError is a failure caused by the revision's content (invalid
// spec, path escape, a failing migration): it fails the same way on every
// node and every try, so the revision is halted instead of retried.
type badRevisionError struct{ err error }

func (e *badRevisionError) Error() string { return e.err.Error() }
func (e *badRevisionError) Unwrap() error { return e.err }

// BadRevision marks err as the revision's fault (for collaborators such as
// the migrator): the rollout halts the revision instead of retrying it.
func BadRevision(err error) error { return &badRevisionError{err} }

// IsBadRevision reports whether err is the revision's fault.
func IsBadRevision(err error) bool {
	var bad *badRevisionError
	return errors.As(err, &bad)
}

// prepare does the slow, risk-free work before the turn: fetch, parse and
// check the spec, materialize the release, install worker dependencies and
// test the nginx config. Nothing live changes.
func (n *Node) prepare(ctx context.Context, rev string) (*spec.Spec, fs.FS, error) {
	if err := n.d.Source.Fetch(ctx, rev); err != nil {
		return nil, nil, fmt.Errorf("fetch %s: %w", short(rev), err)
	}
	fsys, err := n.d.Source.Tree(ctx, rev, n.cfg.RepoDir)
	if err != nil {
		return nil, nil, fmt.Errorf("read tree of %s: %w", short(rev), err)
	}
	data, err := fs.ReadFile(fsys, spec.FileName)
	if err != nil {
		return nil, nil, &badRevisionError{fmt.Errorf("read %s of %s: %w", spec.PathIn(n.cfg.RepoDir), short(rev), err)}
	}
	sp, err := spec.Parse(spec.PathIn(n.cfg.RepoDir), data)
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
func (n *Node) rollout(ctx, lockCtx, turnCtx context.Context, from, to string, sp *spec.Spec, fsys fs.FS) (Outcome, error) {
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

	// Capacity (invariant 1): drain only if, counting this node, no more
	// than maxUnavailable nodes are out of service.
	waitCtx, cancel := mergeCancel(lockCtx, turnCtx)
	err := n.d.Capacity.WaitCapacity(waitCtx, sp.Rollout.MaxUnavailable, func(reason string) {
		n.setStep(ctx, StepWaiting, to, fmt.Errorf("waiting for capacity: %s", reason))
	})
	cancel()
	if err != nil {
		err = fmt.Errorf("capacity: %w", err)
		n.setStep(ctx, StepIdle, "", err)
		return out, err
	}

	e := &entry{From: from, To: to, Step: StepDraining, Drained: true, Started: time.Now()}
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
		n.undrainAndClear(ctx, e)
		n.setStep(ctx, StepIdle, "", err)
		return out, err
	}

	err = n.switchAndVerify(lockCtx, e, to, sp)
	if err == nil && lockCtx.Err() == nil {
		n.setStep(ctx, StepUndraining, to, nil)
		if uerr := n.undrainAndClear(ctx, e); uerr != nil {
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
		lerr := fmt.Errorf("rollout lock lost during %s: %w", e.Step, context.Cause(lockCtx))
		if rerr := n.restore(ctx, e); rerr != nil {
			n.setStep(ctx, StepFailed, to, fmt.Errorf("%v; rollback to %s failed: %w", lerr, short(from), rerr))
			return out, errors.Join(lerr, rerr)
		}
		out.RolledBack = true
		n.setStep(ctx, StepIdle, "", lerr)
		return out, lerr
	}

	// The new release failed. Mark it failed for the whole cluster first,
	// so that no other node takes it while this one rolls back.
	n.halt(ctx, to, err)
	if sp.Rollout.OnFailure == "halt" {
		n.log.Error("onFailure is halt: staying drained on the failed release for inspection", "rev", short(to))
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
	checks := n.checks(sp)
	vctx, cancel := context.WithTimeout(ctx, sp.Rollout.HealthTimeout.D())
	defer cancel()
	if err := health.Wait(vctx, checks); err != nil {
		n.markHealthy(false)
		return fmt.Errorf("health checks: %w", err)
	}
	if soak := sp.Rollout.Soak.D(); soak > 0 {
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
		if err := health.Wait(sctx, checks); err != nil {
			n.markHealthy(false)
			return fmt.Errorf("health checks after %s of soak: %w", soak, err)
		}
	}
	n.markHealthy(true)
	return nil
}

// checks are the health checks of a spec on this node.
func (n *Node) checks(sp *spec.Spec) []health.Check {
	var cs []health.Check
	for _, site := range sp.Sites {
		host := strings.Replace(site.ServerNames[0], "*", "health-check", 1)
		cs = append(cs, health.Check{
			Name: "site " + site.Name, URL: strings.TrimSuffix(n.cfg.SiteURL(sp), "/") + site.Health.Path, Host: host,
			Status: site.Health.Status, Successes: 1, Interval: 500 * time.Millisecond,
		})
	}
	for _, w := range sp.Workers {
		for i, port := range w.InstancePorts() {
			cs = append(cs, health.Check{
				Name:      fmt.Sprintf("worker %s instance %d", w.Name, i),
				URL:       "http://" + net.JoinHostPort(n.cfg.WorkerHost, strconv.Itoa(port)) + w.Health.Path,
				Status:    w.Health.Status,
				Successes: w.Health.Successes,
				Interval:  w.Health.Interval.D(),
				Timeout:   w.Health.Timeout.D(),
			})
		}
	}
	return cs
}

// markHealthy writes or removes the file that makes nginx's LB health
// endpoint answer 200.
func (n *Node) markHealthy(ok bool) {
	p := filepath.Join(n.cfg.HealthDir, "up")
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
	sp, err := spec.Parse(spec.PathIn(n.cfg.RepoDir), data)
	if err != nil {
		return fmt.Errorf("spec of release %s: %w", short(e.From), err)
	}
	if err := n.apply(ctx, e.From, sp); err != nil {
		return err
	}
	if err := n.verify(ctx, sp); err != nil {
		return fmt.Errorf("previous release %s: %w", short(e.From), err)
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
	return n.journal.clear()
}

func (n *Node) prune(ctx context.Context) {
	if err := n.d.Releases.Prune(ctx, n.cfg.KeepReleases); err != nil {
		n.log.Warn("prune releases", "err", err)
	}
}

// Recover finishes or undoes the change an earlier agent was making when it
// stopped, so that the node is on one release before anything else runs.
func (n *Node) Recover(ctx context.Context) error {
	e, err := n.journal.read()
	if err != nil {
		return err
	}
	if e == nil {
		return n.ensureLive(ctx)
	}
	cur, _ := n.d.Releases.Current()
	n.log.Warn("the previous agent stopped mid-change; recovering", "step", e.Step, "from", short(e.From), "to", short(e.To), "live", short(cur))
	switch {
	case e.Step == StepDraining && cur == e.From:
		// Nothing switched yet: only re-join the LB.
		if err := n.undrainAndClear(ctx, e); err != nil {
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
		sp, err := spec.Parse(spec.PathIn(n.cfg.RepoDir), data)
		if err != nil {
			return err
		}
		if err := n.switchAndVerify(ctx, e, e.To, sp); err != nil {
			n.halt(ctx, e.To, err)
			return err
		}
		if err := n.undrainAndClear(ctx, e); err != nil {
			return err
		}
		n.setStep(ctx, StepIdle, "", nil)
		return nil
	default:
		// Undo: the revision will be tried again by the next sync, from a
		// node that is whole on its previous release.
		if err := n.restore(ctx, e); err != nil {
			n.setStep(ctx, StepFailed, e.To, err)
			return fmt.Errorf("recover to %s: %w", short(e.From), err)
		}
		n.setStep(ctx, StepIdle, "", nil)
		return nil
	}
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
	sp, err := spec.Parse(spec.PathIn(n.cfg.RepoDir), data)
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
	if err := n.verify(ctx, sp); err != nil {
		n.setStep(ctx, StepFailed, cur, err)
		return fmt.Errorf("live release %s: %w", short(cur), err)
	}
	// A node found drained without a change in flight (an operator's
	// drain, or an agent that died between undrain and clearing the
	// journal) is healthy now: put it back.
	if ds, ok := n.d.Drainer.(interface {
		Drained(context.Context) (bool, error)
	}); ok {
		if drained, err := ds.Drained(ctx); err != nil {
			n.log.Warn("read drain state", "err", err)
		} else if drained {
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
