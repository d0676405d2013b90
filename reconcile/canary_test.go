package reconcile

import (
	"context"
	"errors"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"testing/synctest"
	"time"

	"github.com/drover-dev/drover/spec"
	"github.com/drover-dev/drover/traffic"
)

// The canary, driven in-process in a synctest bubble: the lock, the LB, the
// release store, the cluster's canary records and the node's traffic are
// fakes that record the order of what the node did; time is the bubble's,
// so a 5-minute canary takes no wall time.

// memCanaries is the cluster's canary records, with an operator's word.
type memCanaries struct {
	mu   sync.Mutex
	recs map[string]Canary
	op   map[string]CanaryState
	base traffic.Baseline
	log  *changeLog
}

func (m *memCanaries) ClaimCanary(_ context.Context, c Canary) (Canary, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if cur, ok := m.recs[c.Rev]; ok {
		return cur, false, nil
	}
	m.recs[c.Rev] = c
	m.log.add("claim "+c.Node, false)
	return c, true, nil
}

func (m *memCanaries) CanaryOf(_ context.Context, rev string) (Canary, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.recs[rev]
	if op, set := m.op[rev]; ok && set && c.State != CanaryFailed {
		c.State = op
	}
	return c, ok, nil
}

func (m *memCanaries) UpdateCanary(_ context.Context, c Canary) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if prev := m.recs[c.Rev]; prev.State != c.State {
		m.log.add("canary "+string(c.State), false)
	}
	m.recs[c.Rev] = c
	return nil
}

func (m *memCanaries) Baseline(context.Context, string, time.Time, time.Time) (traffic.Baseline, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.base, nil
}

func (m *memCanaries) record(rev string) Canary {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.recs[rev]
}

// fakeTraffic is the node's own figures: perMinute requests every minute
// since Live, errEvery-th of them an error.
type fakeTraffic struct {
	mu        sync.Mutex
	rev       string
	since     time.Time
	perMinute uint64
	errPerK   uint64 // errors per 1000 requests
	p99       time.Duration
}

func (f *fakeTraffic) Live(rev string, _ *spec.Spec, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.rev != rev {
		f.rev, f.since = rev, now
	}
}

func (f *fakeTraffic) Figures(from, to time.Time) traffic.Figures {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := uint64(to.Sub(from).Seconds() * float64(f.perMinute) / 60)
	return traffic.Figures{Rev: f.rev, Total: traffic.Counts{Requests: n, Errors: n * f.errPerK / 1000}, P99: f.p99}
}

// countLock is the rollout lock; each Acquire is an event.
type countLock struct{ log *changeLog }

func (l countLock) Acquire(ctx context.Context, rev string, _ int) (context.Context, func(context.Context) error, error) {
	l.log.add("lock", false)
	return ctx, func(context.Context) error { l.log.add("unlock", false); return nil }, nil
}

// canaryRegistry records halts as events.
type canaryRegistry struct {
	memRegistry
	log    *changeLog
	mu     sync.Mutex
	halted map[string]string
}

func (r *canaryRegistry) Halted(_ context.Context, rev string) (string, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	why, ok := r.halted[rev]
	return why, ok, nil
}

func (r *canaryRegistry) Halt(_ context.Context, rev, reason string) error {
	r.mu.Lock()
	r.halted[rev] = reason
	r.mu.Unlock()
	r.log.add("halt "+rev, false)
	return nil
}

type canaryRig struct {
	n   *Node
	log *changeLog
	can *memCanaries
	tr  *fakeTraffic
	reg *canaryRegistry
}

func canarySpec(canary string) string {
	return "version: 1\nrollout: {soak: 0s, canary: " + canary + "}\n"
}

// newCanaryRig is node name live on aaaa, in service, with bbbb at the
// branch head; can is shared between the nodes of one test.
func newCanaryRig(t *testing.T, name, canary string, can *memCanaries) *canaryRig {
	t.Helper()
	log := can.log
	specs := map[string][]byte{"aaaa": []byte("version: 1\nrollout: {soak: 0s}\n"), "bbbb": []byte(canarySpec(canary))}
	rel := &recReleases{log: log, cur: "aaaa", specs: specs}
	parts := &recParts{log: log, rel: rel, applied: "aaaa"}
	r := &canaryRig{log: log, can: can, tr: &fakeTraffic{perMinute: 600}, reg: &canaryRegistry{log: log, halted: map[string]string{}}}
	dir := t.TempDir()
	n, err := New(Config{
		Name: name, StateDir: dir, LiveDir: dir + "/current", HealthDir: dir + "/lb",
		SiteURL: func(*spec.Spec) string { return "http://127.0.0.1:1" }, WorkerHost: "127.0.0.1",
	}, Deps{
		Source:   treeSource{rev: "bbbb", tree: fstest.MapFS{"drover.yaml": {Data: specs["bbbb"]}}},
		Releases: rel, Web: recWeb{parts}, Supervisor: recSup{parts}, Drainer: &recLB{log: log},
		Registry: r.reg, Lock: countLock{log}, Canaries: can, Traffic: r.tr,
	})
	if err != nil {
		t.Fatal(err)
	}
	r.n = n
	return r
}

func newCanaries() *memCanaries {
	return &memCanaries{recs: map[string]Canary{}, op: map[string]CanaryState{}, log: &changeLog{inService: true}}
}

func (r *canaryRig) events() []string {
	ev, _, _ := r.log.snapshot()
	return ev
}

func wantEvents(t *testing.T, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("events\n got %q\nwant %q", got, want)
	}
}

// A revision whose API answers 500 one time in twenty, against an old
// revision at 0.2%: the canary fails as soon as it has seen minRequests,
// halts the revision before it drains, and rolls back drained, under the
// lock.
func TestCanaryBadRevisionHaltsAndRollsBackDrained(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		can := newCanaries()
		can.base = traffic.Baseline{Total: traffic.Counts{Requests: 4000, Errors: 8}}
		r := newCanaryRig(t, "n1", "{duration: 5m, minRequests: 200, maxErrorRate: 1%}", can)
		r.tr.errPerK = 50
		start := time.Now()
		_, err := r.n.Sync(t.Context())
		if err == nil || !strings.Contains(err.Error(), "canary failed: error rate 5.0% above maxErrorRate 1% and worse than the old revision's 0.20%") {
			t.Fatalf("sync: %v", err)
		}
		took := time.Since(start)
		wantEvents(t, r.events(),
			"lock", "claim n1", "drain", "switch bbbb", "workers bbbb", "nginx bbbb", "undrain", "unlock",
			"canary failed", "halt bbbb", "lock", "drain", "switch aaaa", "workers aaaa", "nginx aaaa", "undrain", "unlock")
		// 600 requests a minute: minRequests (200) after 20 s, seen at the
		// next 5 s tick.
		if took > 25*time.Second {
			t.Fatalf("decided after %s", took)
		}
		c := can.record("bbbb")
		if c.State != CanaryFailed || c.Node != "n1" || c.From != "aaaa" || c.Requests < 200 || c.Z < ZCritical {
			t.Fatalf("record %+v", c)
		}
		if st := r.n.Status(); st.Step != StepFailed || st.Rev != "aaaa" || !strings.Contains(st.Canary, "canary on n1: failed") {
			t.Fatalf("status %+v", st)
		}
		if e, err := r.n.journal.read(); e != nil || err != nil {
			t.Fatalf("journal left: %+v, %v", e, err)
		}
	})
}

// A good revision is promoted after duration, with no second lock and no
// drain after the canary's own rollout; a second node waits for it without
// taking the lock, saying how the canary goes, and then goes on.
func TestCanaryGoodRevisionPromotedAndOthersWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		can := newCanaries()
		can.base = traffic.Baseline{Total: traffic.Counts{Requests: 4000, Errors: 8}}
		r1 := newCanaryRig(t, "n1", "{duration: 5m, minRequests: 200}", can)
		r1.tr.errPerK = 2
		done := make(chan error, 1)
		start := time.Now()
		go func() { _, err := r1.n.Sync(t.Context()); done <- err }()
		time.Sleep(time.Minute)
		synctest.Wait()
		if st := r1.n.Status(); st.Step != StepCanary || !strings.Contains(st.Canary, "canary on n1: observing, 4m0s left") {
			t.Fatalf("canary status %+v", st)
		}
		// n2 on its own lock fake: it must not even ask for it.
		r2 := newCanaryRig(t, "n2", "{duration: 5m, minRequests: 200}", can)
		go func() {
			_, err := r2.n.Sync(t.Context())
			if !errors.Is(err, errCanaryWait) {
				t.Errorf("n2 while n1 observes: %v", err)
			}
		}()
		time.Sleep(30 * time.Second)
		synctest.Wait()
		if st := r2.n.Status(); st.Step != StepWaiting ||
			!regexp.MustCompile(`^waiting: canary on n1: observing, 3m[0-9]+s left, [89][0-9]{2} requests, 0\.1[0-9]% errors$`).MatchString(st.Canary) {
			t.Fatalf("n2 status %+v", st)
		}
		if err := <-done; err != nil {
			t.Fatalf("canary: %v", err)
		}
		if took := time.Since(start); took < 5*time.Minute || took > 5*time.Minute+canaryTick {
			t.Fatalf("promoted after %s, want duration", took)
		}
		c := can.record("bbbb")
		if c.State != CanaryPromoted || !strings.Contains(c.Reason, "within limits") {
			t.Fatalf("record %+v", c)
		}
		time.Sleep(time.Minute) // n2's bounded wait ends
		if _, err := r2.n.Sync(t.Context()); err != nil {
			t.Fatalf("n2 after the promotion: %v", err)
		}
		wantEvents(t, r1.events(),
			"lock", "claim n1", "drain", "switch bbbb", "workers bbbb", "nginx bbbb", "undrain", "unlock", "canary promoted",
			"lock", "drain", "switch bbbb", "workers bbbb", "nginx bbbb", "undrain", "unlock") // n2, after the promotion
	})
}

// Too few requests at the end of duration extend once; at the end of the
// extension the gate decides on what it saw and says so.
func TestCanaryExtendsOnceOnLittleTraffic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		can := newCanaries()
		r := newCanaryRig(t, "n1", "{duration: 2m, minRequests: 1000}", can)
		r.tr.perMinute = 100
		start := time.Now()
		if _, err := r.n.Sync(t.Context()); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took < 4*time.Minute || took > 4*time.Minute+canaryTick {
			t.Fatalf("decided after %s, want 2 × duration", took)
		}
		c := can.record("bbbb")
		if c.State != CanaryPromoted || !c.Extended || !strings.Contains(c.Reason, "fewer than the 1000 asked, after the extension") {
			t.Fatalf("record %+v", c)
		}
		if !slices.ContainsFunc(r.reg.notices, func(s string) bool { return strings.Contains(s, "extended once by 2m0s") }) {
			t.Fatalf("no notice of the extension: %q", r.reg.notices)
		}
	})
}

// promote: manual waits after a pass until drover promote; drover abort
// instead halts and rolls back, drained first.
func TestCanaryManualPromoteAndAbort(t *testing.T) {
	for _, op := range []CanaryState{CanaryPromoted, CanaryAborted} {
		t.Run(string(op), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				can := newCanaries()
				r := newCanaryRig(t, "n1", "{duration: 1m, minRequests: 10, promote: manual}", can)
				done := make(chan error, 1)
				go func() { _, err := r.n.Sync(t.Context()); done <- err }()
				time.Sleep(10 * time.Minute)
				synctest.Wait()
				if c := can.record("bbbb"); c.State != CanaryPassed {
					t.Fatalf("after 10 min: %+v", c)
				}
				if st := r.n.Status(); st.Step != StepCanary || !strings.Contains(st.Canary, "canary on n1: passed") {
					t.Fatalf("status %+v", st)
				}
				can.mu.Lock()
				can.op["bbbb"] = op
				can.mu.Unlock()
				err := <-done
				ev := r.events()
				if op == CanaryPromoted {
					if err != nil || slices.Contains(ev, "halt bbbb") || can.record("bbbb").State != CanaryPromoted {
						t.Fatalf("promote: %v, %q", err, ev)
					}
					return
				}
				if err == nil || !strings.Contains(err.Error(), "aborted by an operator") {
					t.Fatalf("abort: %v", err)
				}
				i := slices.Index(ev, "halt bbbb")
				if i < 0 || !slices.Equal(ev[i:], []string{"halt bbbb", "lock", "drain", "switch aaaa", "workers aaaa", "nginx aaaa", "undrain", "unlock"}) {
					t.Fatalf("abort events %q", ev)
				}
			})
		})
	}
}

// A canary agent that restarts mid-canary judges again from its restart:
// the new agent, already live on the revision, finds its record and runs
// the gate; nothing is switched again.
func TestCanaryResumesAfterRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		can := newCanaries()
		can.recs["bbbb"] = Canary{Rev: "bbbb", Node: "n1", From: "aaaa", State: CanaryObserving, Updated: time.Now().Add(-time.Hour)}
		r := newCanaryRig(t, "n1", "{duration: 1m, minRequests: 10}", can)
		if err := r.n.d.Releases.Switch("bbbb"); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if _, err := r.n.Sync(t.Context()); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took < time.Minute {
			t.Fatalf("judged in %s: not from the restart", took)
		}
		if c := can.record("bbbb"); c.State != CanaryPromoted {
			t.Fatalf("record %+v", c)
		}
		wantEvents(t, r.events(), "switch bbbb", "canary promoted")
	})
}

// A canary aborted while its agent was gone rolls back, drained first, as
// soon as the agent is back, although the revision is its live one.
func TestCanaryAbortedWhileAwayRollsBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		can := newCanaries()
		can.recs["bbbb"] = Canary{Rev: "bbbb", Node: "n1", From: "aaaa", State: CanaryObserving}
		can.op["bbbb"] = CanaryAborted
		r := newCanaryRig(t, "n1", "{duration: 1m, minRequests: 10}", can)
		if err := r.n.d.Releases.Switch("bbbb"); err != nil {
			t.Fatal(err)
		}
		_, err := r.n.Sync(t.Context())
		if err == nil || !strings.Contains(err.Error(), "canary aborted") {
			t.Fatalf("sync: %v", err)
		}
		wantEvents(t, r.events(), "switch bbbb", "canary aborted", "halt bbbb", "lock", "drain", "switch aaaa", "workers aaaa", "nginx aaaa", "undrain", "unlock")
	})
}
