package reconcile

import (
	"context"
	"errors"
	"io/fs"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drover-dev/drover/health"
	"github.com/drover-dev/drover/spec"
)

// gateLock is a rollout lock held by another node until the test opens it;
// it records the grant in the rig's history and can say rollouts are
// paused.
type gateLock struct {
	log    *changeLog
	open   chan struct{}
	paused atomic.Bool
	asked  atomic.Int32 // Paused calls
}

func (l *gateLock) Acquire(ctx context.Context, _ string, _ int) (context.Context, func(context.Context) error, error) {
	select {
	case <-l.open:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	l.log.add("lock", false)
	held, cancel := context.WithCancel(ctx)
	return held, func(context.Context) error { cancel(); return nil }, nil
}

func (l *gateLock) Paused(context.Context) (string, bool, error) {
	l.asked.Add(1)
	return "test", l.paused.Load(), nil
}

// ledger is a Migrator whose ledger holds the revision's migrations once
// applied is set.
type ledger struct {
	noMigrations
	applied atomic.Bool
	asked   atomic.Int32
}

func (m *ledger) Applied(context.Context, string, *spec.Spec, fs.FS) (bool, error) {
	m.asked.Add(1)
	return m.applied.Load(), nil
}

// haltingRegistry says bbbb is halted once halted is set.
type haltingRegistry struct {
	*haltRegistry
	halted atomic.Bool
}

func (r *haltingRegistry) Halted(_ context.Context, rev string) (string, bool, error) {
	return "failed on n2", rev == "bbbb" && r.halted.Load(), nil
}

// aheadRig is the overlap rig with a lock held elsewhere and a ledger.
func aheadRig(t *testing.T) (*overlapRig, *gateLock, *ledger) {
	r := newOverlapRig(t, "bbbb", 4_000_000, nil)
	lock := &gateLock{log: r.log, open: make(chan struct{})}
	led := &ledger{}
	r.n.d.Lock, r.n.d.Migrator = lock, led
	return r, lock, led
}

// syncAsync runs sync1 in the background.
func syncAsync(t *testing.T, n *Node) func() (Outcome, error) {
	var (
		wg  sync.WaitGroup
		out Outcome
		err error
	)
	wg.Go(func() { out, err = sync1(t, n) })
	return func() (Outcome, error) { wg.Wait(); return out, err }
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestStartAheadOfTheTurn: with the revision's migrations in the ledger, a
// node waiting for the lock starts the new release's instances on the
// second range, healthy, while the lock is still held elsewhere; its turn
// then holds only the drain, the switch and the verification.
func TestStartAheadOfTheTurn(t *testing.T) {
	r, lock, led := aheadRig(t)
	led.applied.Store(true)
	wait := syncAsync(t, r.n)
	waitUntil(t, "bbbb started ahead", func() bool { return r.sup.running()[r.port+1] == "bbbb" })
	waitUntil(t, "waiting for the lock again", func() bool { return r.n.Status().Step == StepWaiting })
	if st := r.n.Status(); st.Target != "bbbb" {
		t.Errorf("status while waiting: %+v", st)
	}
	close(lock.open)
	if out, err := wait(); err != nil || !out.Applied {
		t.Fatalf("rollout: %+v, %v", out, err)
	}
	r.mustHistory(t, "start bbbb@A, lock, drain, switch bbbb, nginx A, undrain, stop aaaa@P")
	r.mustRun(t, map[int]string{r.port + 1: "bbbb"})
	r.mustEnd(t, "bbbb")
}

// TestStartAheadWaitsForTheLedger: while the ledger lacks the revision's
// migrations (the first node has not applied them), or rollouts are
// paused, nothing starts before the turn: new code never meets the old
// schema, and a pause starts nothing.
func TestStartAheadWaitsForTheLedger(t *testing.T) {
	for _, c := range []struct {
		name   string
		paused bool
	}{{"migrations pending", false}, {"rollouts paused", true}} {
		t.Run(c.name, func(t *testing.T) {
			r, lock, led := aheadRig(t)
			led.applied.Store(c.paused)
			lock.paused.Store(c.paused)
			wait := syncAsync(t, r.n)
			// Two polls: the node asked, and asked again, and started nothing.
			waitUntil(t, "two polls", func() bool { return led.asked.Load() >= 2 || lock.asked.Load() >= 2 })
			if got := r.sup.running(); len(got) != 1 || got[r.port] != "aaaa" {
				t.Fatalf("running before the turn: %v, want only aaaa", got)
			}
			close(lock.open)
			if out, err := wait(); err != nil || !out.Applied {
				t.Fatalf("rollout: %+v, %v", out, err)
			}
			r.mustHistory(t, "lock, start bbbb@A, drain, switch bbbb, nginx A, undrain, stop aaaa@P")
			r.mustEnd(t, "bbbb")
		})
	}
}

// TestStartAheadHaltedOrPausedMeanwhile: another node halts the revision,
// or an operator pauses rollouts, while this one waits with the new range
// started: the range stops while the node still waits (it does not run a
// halted revision's code until its turn), and the node never leaves the LB.
func TestStartAheadHaltedOrPausedMeanwhile(t *testing.T) {
	for _, c := range []struct {
		name string
		stop func(*haltingRegistry, *gateLock)
		want string // the turn's end: halted, or rolled out once resumed
	}{
		{"halted", func(reg *haltingRegistry, _ *gateLock) { reg.halted.Store(true) },
			"start bbbb@A, stop bbbb@A, lock"},
		{"paused", func(_ *haltingRegistry, lock *gateLock) { lock.paused.Store(true) },
			"start bbbb@A, stop bbbb@A, lock, start bbbb@A, drain, switch bbbb, nginx A, undrain, stop aaaa@P"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, lock, led := aheadRig(t)
			led.applied.Store(true)
			reg := &haltingRegistry{haltRegistry: r.reg}
			r.n.d.Registry = reg
			wait := syncAsync(t, r.n)
			waitUntil(t, "bbbb started ahead", func() bool { return r.sup.running()[r.port+1] == "bbbb" })
			c.stop(reg, lock)
			waitUntil(t, "the range stopped while waiting", func() bool { return r.sup.running()[r.port+1] == "" })
			lock.paused.Store(false) // resumed: the lock is handed out again
			close(lock.open)
			out, err := wait()
			if c.name == "halted" && (err == nil || out.Applied || !strings.Contains(err.Error(), "halted")) {
				t.Fatalf("rollout of a revision halted meanwhile: %+v, %v", out, err)
			}
			if c.name == "paused" && (err != nil || !out.Applied) {
				t.Fatalf("rollout after the pause: %+v, %v", out, err)
			}
			r.mustHistory(t, c.want)
		})
	}
}

// TestStartAheadNotWithACanary: with rollout.canary the other nodes must not
// run the revision before it is judged, so nothing starts before the turn.
func TestStartAheadNotWithACanary(t *testing.T) {
	r, _, _ := aheadRig(t)
	r.n.d.Canaries, r.n.d.Traffic = &memCanaries{recs: map[string]Canary{}}, &fakeTraffic{}
	sp := r.n.specOrNil("bbbb")
	if !r.n.mayStartAhead("aaaa", sp) {
		t.Fatal("control: without a canary the spec cannot start ahead")
	}
	sp.Rollout.Canary = &spec.Canary{}
	if r.n.mayStartAhead("aaaa", sp) {
		t.Error("with a canary the new workers would start before the canary decides")
	}
}

// failingLedger cannot be read (no database section, say).
type failingLedger struct {
	noMigrations
	asked atomic.Int32
}

func (m *failingLedger) Applied(context.Context, string, *spec.Spec, fs.FS) (bool, error) {
	m.asked.Add(1)
	return false, errors.New("node.yaml of node n1 has no database section")
}

// TestStartAheadStopsAskingAnUnreadableLedger: a ledger that cannot be read
// is asked once; the start stays in the turn.
func TestStartAheadStopsAskingAnUnreadableLedger(t *testing.T) {
	r, lock, _ := aheadRig(t)
	led := &failingLedger{}
	r.n.d.Migrator = led
	wait := syncAsync(t, r.n)
	waitUntil(t, "asked", func() bool { return led.asked.Load() >= 1 })
	time.Sleep(2500 * time.Millisecond) // more than two polls
	if got := led.asked.Load(); got != 1 {
		t.Errorf("asked %d times, want once", got)
	}
	close(lock.open)
	if out, err := wait(); err != nil || !out.Applied {
		t.Fatalf("rollout: %+v, %v", out, err)
	}
	r.mustHistory(t, "lock, start bbbb@A, drain, switch bbbb, nginx A, undrain, stop aaaa@P")
}

// TestStartAheadRangeDiedMeanwhile: the instances started ahead stop
// answering while the node waits; its turn starts them again, before the
// drain, instead of switching to instances that are gone.
func TestStartAheadRangeDiedMeanwhile(t *testing.T) {
	r, lock, led := aheadRig(t)
	led.applied.Store(true)
	wait := syncAsync(t, r.n)
	waitUntil(t, "bbbb started ahead", func() bool { return r.sup.running()[r.port+1] == "bbbb" })
	waitUntil(t, "waiting for the lock again", func() bool { return r.n.Status().Step == StepWaiting })
	r.sup.mu.Lock()
	r.sup.stopLocked(r.port + 1)
	r.sup.mu.Unlock()
	close(lock.open)
	if out, err := wait(); err != nil || !out.Applied {
		t.Fatalf("rollout: %+v, %v", out, err)
	}
	r.mustHistory(t, "start bbbb@A, stop bbbb@A, lock, start bbbb@A, drain, switch bbbb, nginx A, undrain, stop aaaa@P")
	r.mustEnd(t, "bbbb")
}

// TestGuardLeavesTheRangeStartedAhead: a guard round while the new range
// waits for the turn stops nothing of it, even with a live instance down
// (which a guard would otherwise restart through an Apply that stops every
// instance the live release does not name).
func TestGuardLeavesTheRangeStartedAhead(t *testing.T) {
	r, lock, led := aheadRig(t)
	led.applied.Store(true)
	wait := syncAsync(t, r.n)
	waitUntil(t, "waiting with bbbb started ahead", func() bool {
		return r.sup.running()[r.port+1] == "bbbb" && r.n.Status().Step == StepWaiting
	})
	r.sup.mu.Lock()
	r.sup.stopLocked(r.port) // the live instance dies
	r.sup.mu.Unlock()
	gc := GuardConfig{Interval: 50 * time.Millisecond, UnhealthyAfter: 3, HealthyAfter: 3}
	g := &guard{failingSince: map[string]time.Time{"worker api instance 0": time.Now().Add(-time.Hour)}, prober: health.NewProber()}
	defer g.prober.Close()
	r.n.live.Lock()
	r.n.guardRound(context.Background(), gc, g)
	r.n.live.Unlock()
	if got := r.sup.running(); got[r.port+1] != "bbbb" {
		t.Fatalf("after a guard round: running %v, want bbbb still on the second range", got)
	}
	close(lock.open)
	if out, err := wait(); err != nil || !out.Applied {
		t.Fatalf("rollout: %+v, %v", out, err)
	}
	r.mustEnd(t, "bbbb")
}
