package reconcile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/drover-dev/drover/health"
	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/spec"
)

// The steady-state guard. Between rollouts (nearly all of the time) the
// agent keeps checking the live release: every site through nginx, every
// worker instance, and the spec's extra steady-state checks. A node that
// fails UnhealthyAfter rounds in a row takes itself out of the LB by making
// its health endpoint answer 503, but only within the capacity rule; it comes
// back after HealthyAfter good rounds in a row. It also puts back what
// drifted from the live release (unit files, nginx.conf, `current`, stopped
// instances) with the same idempotent apply a rollout uses, and restarts an
// instance that has failed its check for RestartAfter.
//
// The guard and rollouts never fight: a guard round runs only while the
// node does not hold the rollout lock (Node.live), and a node the guard took
// out counts as out of service in the cluster, so other nodes' rollouts wait
// for it.

// Room is the cluster's side of the guard's decision to take the node out.
type Room interface {
	// TakeOut calls out, which publishes this node as out of service, only
	// if, counting this node, at most maxUnavailable registered nodes are
	// out of service or failing their checks; decisions of different nodes
	// are serialized. Otherwise it returns why the node must stay in.
	TakeOut(ctx context.Context, maxUnavailable int, out func(context.Context) error) (taken bool, reason string, err error)
}

// Noticer records what the guard found (drift, a restart) in the cluster's
// event stream; a Registry may implement it.
type Noticer interface {
	Notice(ctx context.Context, rev, msg string) error
}

// WorkerDrift is implemented by a Supervisor that can tell cheaply how the
// running workers differ from ws (unit files changed or removed, wanted
// instances not running), without restarting anything.
type WorkerDrift interface {
	Drift(ctx context.Context, ws []spec.Worker, liveDir string) ([]string, error)
}

// WebDrift is implemented by a WebServer that can tell how the installed
// config differs from sp's, or that nginx is not running.
type WebDrift interface {
	Drift(ctx context.Context, sp *spec.Spec) ([]string, error)
}

// GuardConfig is node.yaml's guard section; a zero Interval turns the guard
// off.
type GuardConfig struct {
	Interval       time.Duration
	UnhealthyAfter int
	HealthyAfter   int
	RestartAfter   time.Duration
}

// singleNode is the Room of a node without a cluster: there is nobody to
// take its traffic, so it never takes itself out.
type singleNode struct{}

func (singleNode) TakeOut(context.Context, int, func(context.Context) error) (bool, string, error) {
	return false, "a single node never takes itself out: the LB would have no node to send to", nil
}

// guard is the guard's memory between rounds; only Guard's goroutine uses it.
type guard struct {
	fails, passes int
	// failingSince is when each worker instance check started failing.
	failingSince map[string]time.Time
	lastRestart  time.Time
	// drift backoff: a restore at most every delay, doubled while the
	// drift keeps coming back.
	driftNext, lastRestore time.Time
	driftDelay             time.Duration
	// the live release's parsed spec and its steady-state checks, by
	// revision and by where its instances run (the checks name their
	// ports)
	rev    string
	place  placement
	sp     *spec.Spec
	checks []health.Check
	prober *health.Prober
}

// maxDriftDelay bounds the backoff of a drift that keeps coming back.
const maxDriftDelay = 5 * time.Minute

// undrainTimeout bounds the guard's wait for the LB to see the node again.
const undrainTimeout = 2 * time.Minute

// Guard runs the steady-state guard until ctx ends. Call it after Recover,
// in its own goroutine, beside Loop.
func (n *Node) Guard(ctx context.Context) {
	gc := n.cfg.Guard
	if gc.Interval <= 0 {
		return
	}
	gc.UnhealthyAfter, gc.HealthyAfter = max(gc.UnhealthyAfter, 1), max(gc.HealthyAfter, 1)
	g := &guard{failingSince: map[string]time.Time{}, prober: health.NewProber()}
	defer g.prober.Close()
	t := time.NewTicker(gc.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !n.live.TryLock() {
			// A rollout or a recovery owns the node; it verifies on its own.
			g.fails, g.passes = 0, 0
			clear(g.failingSince)
			continue
		}
		n.guardRound(ctx, gc, g)
		n.live.Unlock()
	}
}

// guardRound is one round: check, judge, restart, put drift back.
func (n *Node) guardRound(ctx context.Context, gc GuardConfig, g *guard) {
	if e, err := n.journal.read(); err != nil || e != nil {
		return // a change is in flight; the next agent start recovers it
	}
	rev, sp, err := n.liveSpec(g)
	if err != nil {
		n.log.Warn("guard: read the live release", "err", err)
		return
	}
	if sp == nil {
		return // nothing deployed yet
	}
	checks := g.checks
	errs := probeAll(ctx, g.prober, checks, gc.Interval)
	if ctx.Err() != nil {
		return
	}
	now := time.Now()
	var failed []string
	for i, c := range checks {
		if errs[i] == nil {
			delete(g.failingSince, c.Name)
			continue
		}
		failed = append(failed, c.Name+": "+errs[i].Error())
		if _, ok := g.failingSince[c.Name]; !ok {
			g.failingSince[c.Name] = now
		}
	}
	if len(failed) == 0 {
		g.fails, g.passes = 0, g.passes+1
	} else {
		g.fails, g.passes = g.fails+1, 0
	}
	n.judge(ctx, gc, g, sp, failed)
	n.mu.Lock()
	ahead := n.aheadWaiting
	n.mu.Unlock()
	if ahead {
		// The next release's workers, started ahead of the node's turn,
		// run beside the live ones (ahead.go): a restart or a put-back
		// of the workers would stop them. The turn that comes next
		// verifies everything.
		return
	}
	n.restartFailing(ctx, gc, g, rev, sp, now)
	n.putBackDrift(ctx, gc, g, rev, sp, now)
}

// judge moves the node between healthy, failing, out and degraded.
func (n *Node) judge(ctx context.Context, gc GuardConfig, g *guard, sp *spec.Spec, failed []string) {
	cur := n.Status().Health
	if len(failed) == 0 {
		switch {
		case cur == HealthOut || !n.healthMarked():
			if g.passes < gc.HealthyAfter {
				return
			}
			n.markHealthy(true)
			// Until the LB itself sees the node healthy again it still
			// counts as out, so no other node drains meanwhile.
			uctx, cancel := context.WithTimeout(ctx, undrainTimeout)
			err := n.d.Drainer.Undrain(uctx)
			cancel()
			if err != nil {
				n.log.Warn("guard: the node passes its checks but the LB does not see it healthy yet", "err", err)
				n.setHealth(ctx, HealthOut, "passes its checks; waiting for the LB to see it healthy: "+err.Error())
				return
			}
			n.log.Info("guard: the live release passes its checks again; back in the load balancer", "passes", g.passes)
			n.setHealth(ctx, HealthOK, "")
			if st := n.Status(); st.Step == StepFailed {
				n.setStep(ctx, StepIdle, "", nil)
			}
		case cur != HealthOK:
			n.setHealth(ctx, HealthOK, "")
		}
		return
	}
	why := failed[0]
	if len(failed) > 1 {
		why += fmt.Sprintf(" (and %d more)", len(failed)-1)
	}
	switch {
	case cur == HealthOut || !n.healthMarked():
		// Out already: by the guard, or a start or rollback that did not
		// verify. Say why.
		if cur != HealthOut || n.Status().HealthWhy != why {
			n.setHealth(ctx, HealthOut, why)
		}
	case g.fails < gc.UnhealthyAfter:
		if cur != HealthFailing && cur != HealthDegraded {
			n.log.Warn("guard: check failed", "fails", g.fails, "of", gc.UnhealthyAfter, "err", why)
			n.setHealth(ctx, HealthFailing, why)
		}
	default:
		taken, reason, err := n.d.Room.TakeOut(ctx, sp.Rollout.MaxUnavailable, func(ctx context.Context) error {
			if err := n.setHealthErr(ctx, HealthOut, why); err != nil {
				return err
			}
			n.markHealthy(false)
			return nil
		})
		switch {
		case err != nil:
			// Cannot tell whether there is room: staying in is the side
			// that keeps capacity.
			n.log.Warn("guard: cannot decide whether the node may leave; it stays in", "err", err)
			n.setHealth(ctx, HealthDegraded, why+"; cannot count the nodes out: "+err.Error())
		case taken:
			n.log.Error("guard: the live release fails its checks; out of the load balancer", "fails", g.fails, "err", why)
		default:
			if st := n.Status(); st.Health != HealthDegraded || !strings.HasPrefix(st.HealthWhy, why) {
				n.log.Warn("guard: the live release fails its checks but the node stays in", "err", why, "because", reason)
			}
			n.setHealth(ctx, HealthDegraded, why+"; "+reason)
		}
	}
}

// restartFailing restarts the worker instances that have failed their check
// for RestartAfter, through the supervisor's idempotent apply (which
// restarts each unhealthy instance, one at a time, and waits until it is
// healthy before the next). At most one such restart per RestartAfter.
func (n *Node) restartFailing(ctx context.Context, gc GuardConfig, g *guard, rev string, sp *spec.Spec, now time.Time) {
	var long []string
	for name, since := range g.failingSince {
		if strings.HasPrefix(name, "worker ") && now.Sub(since) >= gc.RestartAfter {
			long = append(long, name)
		}
	}
	if len(long) == 0 || now.Sub(g.lastRestart) < gc.RestartAfter {
		return
	}
	g.lastRestart = now
	msg := fmt.Sprintf("guard: restarting %s: failing for %s or more", strings.Join(long, ", "), gc.RestartAfter)
	n.log.Warn(msg)
	n.notice(ctx, rev, msg)
	if err := n.d.Supervisor.Apply(health.WithBudget(ctx, sp.Rollout.HealthTimeout.D()), sp.Workers, n.cfg.LiveDir); err != nil {
		n.log.Error("guard: restart failing instances", "err", err)
	}
}

// putBackDrift compares the node with the live release and restores what
// differs, at most once per interval, backing off while it keeps coming back.
func (n *Node) putBackDrift(ctx context.Context, gc GuardConfig, g *guard, rev string, sp *spec.Spec, now time.Time) {
	var drift []string
	cur, err := n.d.Releases.Current()
	if err != nil {
		n.log.Warn("guard: read the live link", "err", err)
		return
	}
	if cur != rev {
		drift = append(drift, fmt.Sprintf("current points at %s, not the live release %s", short(cur), short(rev)))
	}
	if wd, ok := n.d.Supervisor.(WorkerDrift); ok && cur == rev {
		d, err := wd.Drift(ctx, sp.Workers, n.cfg.LiveDir)
		if err != nil {
			n.log.Warn("guard: compare workers with the live release", "err", err)
		}
		drift = append(drift, d...)
	}
	webDrift := false
	if wd, ok := n.d.Web.(WebDrift); ok {
		d, err := wd.Drift(ctx, sp)
		if err != nil {
			n.log.Warn("guard: compare nginx with the live release", "err", err)
		}
		drift = append(drift, d...)
		webDrift = len(d) > 0
	}
	if len(drift) == 0 || now.Before(g.driftNext) {
		return
	}
	// Back off while the drift keeps coming back (something else on the
	// node fights drover): doubling from the interval up to 5 minutes.
	if !g.lastRestore.IsZero() && now.Sub(g.lastRestore) < 2*max(g.driftDelay, gc.Interval)+gc.Interval {
		g.driftDelay = min(max(2*g.driftDelay, 2*gc.Interval), maxDriftDelay)
	} else {
		g.driftDelay = 0
	}
	g.lastRestore, g.driftNext = now, now.Add(g.driftDelay)
	msg := "drift: " + strings.Join(drift, "; ")
	n.log.Warn("guard: the node differs from the live release; putting it back", "drift", strings.Join(drift, "; "))
	n.notice(ctx, rev, msg)
	if cur != rev {
		if err := n.d.Releases.Switch(rev); err != nil {
			n.log.Error("guard: switch back to the live release", "err", err)
			return
		}
	}
	if err := n.d.Supervisor.Apply(health.WithBudget(ctx, sp.Rollout.HealthTimeout.D()), sp.Workers, n.cfg.LiveDir); err != nil {
		n.log.Error("guard: restore workers", "err", err)
	}
	if webDrift {
		n.restoreNginx(ctx, sp)
	}
}

// restoreNginx puts nginx's config back. A reload closes the idle
// keep-alive connections the LB holds to this node, and an LB that does not
// retry turns a request sent on one as it closes into an error; so a node in
// service reloads out of the LB (within the capacity rule, like a rollout's
// drain) and re-joins once the LB sees it again. Without room it waits for
// a later round, with the drift's backoff (a single node, which has no one
// to hand its traffic to, reloads in place, as its rollouts do).
func (n *Node) restoreNginx(ctx context.Context, sp *spec.Spec) {
	apply := func() {
		if err := n.d.Web.Apply(ctx, sp); err != nil {
			n.log.Error("guard: restore nginx", "err", err)
		}
	}
	_, single := n.d.Room.(singleNode)
	if single || !n.inLB() {
		apply()
		return
	}
	prev, prevWhy := n.Status().Health, n.Status().HealthWhy
	taken, reason, err := n.d.Room.TakeOut(ctx, sp.Rollout.MaxUnavailable, func(ctx context.Context) error {
		return n.setHealthErr(ctx, HealthOut, "drift: reloading nginx's config out of the load balancer")
	})
	switch {
	case err != nil:
		n.log.Warn("guard: nginx's config drifted; cannot count the nodes out, so it is put back at a later round", "err", err)
		return
	case !taken:
		n.log.Warn("guard: nginx's config drifted; no room to leave the LB for the reload, trying again later", "because", reason)
		return
	}
	dctx, cancel := context.WithTimeout(ctx, sp.Rollout.DrainTimeout.D()+undrainTimeout)
	defer cancel()
	if err := n.d.Drainer.Drain(dctx, sp.Rollout.DrainTimeout.D()); err != nil {
		n.log.Error("guard: drain to reload nginx", "err", err)
	} else {
		apply()
	}
	if err := n.d.Drainer.Undrain(dctx); err != nil {
		n.log.Error("guard: undrain after reloading nginx", "err", err)
		n.setHealth(ctx, HealthOut, "drift: the LB does not see the node again after nginx's reload: "+err.Error())
		return
	}
	n.setHealth(ctx, prev, prevWhy)
}

// liveSpec returns the revision the node last verified and its spec, parsed
// once per revision; the checks are made again when the live release's
// instances moved to the other range.
func (n *Node) liveSpec(g *guard) (string, *spec.Spec, error) {
	n.mu.Lock()
	rev := n.liveRev
	n.mu.Unlock()
	if rev == "" {
		return "", nil, nil
	}
	cur, _ := n.d.Releases.Current()
	place := n.placeOf(cur) // what n.checks places the workers by
	if g.rev == rev && g.sp != nil {
		if g.place != place {
			// Other instances: what failed on the old ports says nothing.
			g.place, g.checks = place, n.checks(g.sp, false)
			g.fails, g.passes = 0, 0
			clear(g.failingSince)
		}
		return rev, g.sp, nil
	}
	data, err := n.d.Releases.SpecOf(rev)
	if err != nil {
		return "", nil, err
	}
	sp, err := spec.ParseRelease(spec.PathIn(n.cfg.RepoDir), data)
	if err != nil {
		return "", nil, fmt.Errorf("spec of live release %s: %w", short(rev), err)
	}
	g.rev, g.place, g.sp, g.checks = rev, place, sp, n.checks(sp, false)
	return rev, sp, nil
}

// probeAll makes one attempt of every check at once, each bounded by its own
// timeout and by the interval (a round must not outlast the next one).
func probeAll(ctx context.Context, p *health.Prober, checks []health.Check, interval time.Duration) []error {
	errs := make([]error, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		if c.Timeout <= 0 || c.Timeout > max(interval, time.Second) {
			c.Timeout = max(interval, time.Second)
		}
		wg.Go(func() { errs[i] = p.Probe(ctx, c) })
	}
	wg.Wait()
	return errs
}

// setHealth records the guard's verdict and publishes it (best effort).
func (n *Node) setHealth(ctx context.Context, h Health, why string) {
	if err := n.setHealthErr(ctx, h, why); err != nil {
		n.log.Warn("report status", "err", err)
	}
}

func (n *Node) setHealthErr(ctx context.Context, h Health, why string) error {
	n.mu.Lock()
	if n.status.Health != h {
		n.status.HealthSince = time.Now()
	}
	n.status.Health, n.status.HealthWhy = h, why
	st := n.status
	n.mu.Unlock()
	return n.d.Registry.Report(ctx, st)
}

// healthMarked reports whether the LB health endpoint's "up" file exists.
func (n *Node) healthMarked() bool {
	_, err := os.Stat(layout.UpFile(n.cfg.HealthDir))
	return !errors.Is(err, os.ErrNotExist)
}

// inLB reports whether the health endpoint says the node serves: "up" is
// there and "drain" is not.
func (n *Node) inLB() bool {
	_, err := os.Stat(layout.DrainFile(n.cfg.HealthDir))
	return n.healthMarked() && errors.Is(err, os.ErrNotExist)
}

func (n *Node) notice(ctx context.Context, rev, msg string) {
	if nt, ok := n.d.Registry.(Noticer); ok {
		if err := nt.Notice(ctx, rev, msg); err != nil {
			n.log.Warn("record event", "err", err)
		}
	}
}
