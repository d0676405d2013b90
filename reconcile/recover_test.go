package reconcile

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/drover-dev/drover/spec"
)

// Recovery, driven in-process: an agent restarted with a journal in place
// (as after a SIGKILL at each step) must never switch, restart or
// reconfigure a node the load balancer is sending traffic to. The LB is a
// fake that knows whether it has the node in service; every change to the
// node is recorded with that state at the moment it was made.

// recorder is the node's history: drains, undrains and every change.
type changeLog struct {
	mu        sync.Mutex
	inService bool
	events    []string // "drain", "undrain", "switch bbbb", "workers", "nginx"
	whileIn   []string // changes made while the LB had the node in service
	// tee, when set, also gets each event, after it took effect (the
	// suite's cluster-wide history, suite_test.go).
	tee func(ev string)
}

func (c *changeLog) add(ev string, change bool) {
	c.mu.Lock()
	c.events = append(c.events, ev)
	if change && c.inService {
		c.whileIn = append(c.whileIn, ev)
	}
	tee := c.tee
	c.mu.Unlock()
	if tee != nil {
		tee(ev)
	}
}

func (c *changeLog) setInService(in bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inService = in
}

func (c *changeLog) snapshot() (events, whileIn []string, in bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.events...), append([]string(nil), c.whileIn...), c.inService
}

// recLB is the load balancer: Drain takes the node out, Undrain puts it
// back; onUndrain runs first (to look at the journal).
type recLB struct {
	log       *changeLog
	onUndrain func()
	// incomplete is what the last drain says it could not prove.
	incomplete string
	// drainErr fails each Drain after the LB took the node out (its
	// wait for the LB to stop failed).
	drainErr error
}

func (l *recLB) LastDrainIncomplete() string { return l.incomplete }

func (l *recLB) Drain(context.Context, time.Duration) error {
	l.log.setInService(false)
	l.log.add("drain", false)
	return l.drainErr
}

func (l *recLB) Undrain(context.Context) error {
	if l.onUndrain != nil {
		l.onUndrain()
	}
	l.log.setInService(true)
	l.log.add("undrain", false)
	return nil
}

// recReleases holds one spec per release; a switch is a change.
type recReleases struct {
	log   *changeLog
	mu    sync.Mutex
	cur   string
	specs map[string][]byte
	// prepareErr fails Prepare (a download or install that failed).
	prepareErr error
}

func (r *recReleases) Prepare(context.Context, string, []byte, *spec.Spec, fs.FS) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.prepareErr
}
func (r *recReleases) Current() (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur, nil
}
func (r *recReleases) Switch(rev string) error {
	r.mu.Lock()
	changed := r.cur != rev
	r.cur = rev
	r.mu.Unlock()
	r.log.add("switch "+rev, changed)
	return nil
}
func (r *recReleases) SpecOf(rev string) ([]byte, error) {
	if b, ok := r.specs[rev]; ok {
		return b, nil
	}
	return nil, fmt.Errorf("no release %s", rev)
}
func (r *recReleases) Prune(context.Context, int) error { return nil }

// recParts are nginx and the supervisor. Applying the live, verified
// release again is allowed in service (each Apply leaves what runs as
// specified alone); applying another release's is a change.
type recParts struct {
	log *changeLog
	rel *recReleases
	// applied is the release whose workers and nginx config ran at the
	// start; runs, per part ("workers", "nginx"), the one each runs since.
	applied string
	mu      sync.Mutex
	runs    map[string]string
}

func (p *recParts) apply(what string) {
	cur, _ := p.rel.Current()
	p.mu.Lock()
	was, ok := p.runs[what]
	if !ok {
		was = p.applied
	}
	if p.runs == nil {
		p.runs = map[string]string{}
	}
	p.runs[what] = cur
	p.mu.Unlock()
	p.log.add(what+" "+cur, cur != was)
}

// running is the release whose what ("workers", "nginx") runs now.
func (p *recParts) running(what string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if rev, ok := p.runs[what]; ok {
		return rev
	}
	return p.applied
}

type recWeb struct{ *recParts }

func (recWeb) Check(context.Context, *spec.Spec) error { return nil }
func (w recWeb) Apply(context.Context, *spec.Spec) error {
	w.apply("nginx")
	return nil
}

type recSup struct{ *recParts }

func (s recSup) Apply(context.Context, []spec.Worker, string) error {
	s.apply("workers")
	return nil
}

// treeSource serves one revision's tree.
type treeSource struct {
	rev  string
	tree fs.FS
}

func (s treeSource) Remote(context.Context) (string, error)              { return s.rev, nil }
func (s treeSource) Fetch(context.Context, string) error                 { return nil }
func (s treeSource) Tree(context.Context, string, string) (fs.FS, error) { return s.tree, nil }

type recoverRig struct {
	n    *Node
	log  *changeLog
	rel  *recReleases
	lb   *recLB
	old  *worker // the release aaaa's worker
	new  *worker // bbbb's
	dir  string
	spec map[string]string
}

func workerSpec(port int) string {
	return fmt.Sprintf(`version: 1
rollout: {healthTimeout: 5s, soak: 0s}
workers:
  - name: api
    source: workers/api
    exec: [node, server.js]
    port: %d
    health: {path: /healthz, timeout: 500ms, interval: 50ms}
`, port)
}

// newRecoverRig is a node on release live (aaaa or bbbb), in service or
// not, whose previous agent left journal e.
func newRecoverRig(t *testing.T, live string, inService bool, e *entry) *recoverRig {
	t.Helper()
	r := &recoverRig{log: &changeLog{inService: inService}, old: newWorker(t), new: newWorker(t), dir: t.TempDir()}
	r.spec = map[string]string{"aaaa": workerSpec(r.old.port()), "bbbb": workerSpec(r.new.port())}
	r.rel = &recReleases{log: r.log, cur: live, specs: map[string][]byte{"aaaa": []byte(r.spec["aaaa"]), "bbbb": []byte(r.spec["bbbb"])}}
	parts := &recParts{log: r.log, rel: r.rel, applied: live}
	r.lb = &recLB{log: r.log}
	n, err := New(Config{
		Name: "n1", StateDir: r.dir, LiveDir: filepath.Join(r.dir, "current"), HealthDir: filepath.Join(r.dir, "lb"),
		SiteURL: func(*spec.Spec) string { return "http://127.0.0.1:1" }, WorkerHost: "127.0.0.1",
	}, Deps{Source: treeSource{rev: "bbbb", tree: fstest.MapFS{
		"drover.yaml": {Data: []byte(r.spec["bbbb"])}, "workers/api/server.js": {Data: []byte("x")},
	}}, Releases: r.rel, Web: recWeb{parts}, Supervisor: recSup{parts}, Drainer: r.lb, Registry: &memRegistry{}})
	if err != nil {
		t.Fatal(err)
	}
	if e != nil {
		if err := n.journal.write(e); err != nil {
			t.Fatal(err)
		}
	}
	r.n = n
	return r
}

func (r *recoverRig) journalStep(t *testing.T) *entry {
	t.Helper()
	return journalOf(t, r.n)
}

// journalOf is n's journal entry in flight, nil when clear.
func journalOf(t *testing.T, n *Node) *entry {
	t.Helper()
	e, err := n.journal.read()
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestRecoverNeverChangesANodeInService: the agent killed at each step of
// its turn in turn, then restarted. Killed while undraining (the release
// verified, the LB already sending it traffic: issue 16's 404 lost
// requests), it finishes forward without switching anything; killed
// earlier, it drains before it restores. In every case the node ends in
// service, on one release, with the journal cleared, and no switch,
// restart or reconfiguration happened while the LB had it in service.
func TestRecoverNeverChangesANodeInService(t *testing.T) {
	for _, c := range []struct {
		name      string
		live      string // release live at the kill
		inService bool   // what the LB had at the kill
		e         entry
		want      []string // the node's history during recovery
		end       string   // the release live after it
	}{
		{"killed while undraining the new release", "bbbb", true,
			entry{From: "aaaa", To: "bbbb", Step: StepUndraining, Verified: "bbbb", Drained: true},
			[]string{"workers bbbb", "nginx bbbb", "undrain"}, "bbbb"},
		{"killed while undraining, the LB not yet back", "bbbb", false,
			entry{From: "aaaa", To: "bbbb", Step: StepUndraining, Verified: "bbbb", Drained: true},
			[]string{"workers bbbb", "nginx bbbb", "undrain"}, "bbbb"},
		{"killed while undraining after a rollback", "aaaa", true,
			entry{From: "aaaa", To: "bbbb", Step: StepUndraining, Verified: "aaaa", Drained: true},
			[]string{"workers aaaa", "nginx aaaa", "undrain"}, "aaaa"},
		{"killed while verifying", "bbbb", false,
			entry{From: "aaaa", To: "bbbb", Step: StepVerifying, Drained: true},
			[]string{"drain", "switch aaaa", "workers aaaa", "nginx aaaa", "undrain"}, "aaaa"},
		{"killed while verifying, the LB forgot the drain", "bbbb", true,
			entry{From: "aaaa", To: "bbbb", Step: StepVerifying, Drained: true},
			[]string{"drain", "switch aaaa", "workers aaaa", "nginx aaaa", "undrain"}, "aaaa"},
		{"killed while switching", "bbbb", false,
			entry{From: "aaaa", To: "bbbb", Step: StepSwitching, Drained: true},
			[]string{"drain", "switch aaaa", "workers aaaa", "nginx aaaa", "undrain"}, "aaaa"},
		{"killed while switching, before the switch", "aaaa", false,
			entry{From: "aaaa", To: "bbbb", Step: StepSwitching, Drained: true},
			[]string{"drain", "switch aaaa", "workers aaaa", "nginx aaaa", "undrain"}, "aaaa"},
		{"killed while rolling back", "bbbb", false,
			entry{From: "aaaa", To: "bbbb", Step: StepRollingBack, Drained: true},
			[]string{"drain", "switch aaaa", "workers aaaa", "nginx aaaa", "undrain"}, "aaaa"},
		{"killed while draining", "aaaa", true,
			entry{From: "aaaa", To: "bbbb", Step: StepDraining, Drained: true},
			[]string{"undrain"}, "aaaa"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := c.e
			r := newRecoverRig(t, c.live, c.inService, &e)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := r.n.Recover(ctx); err != nil {
				t.Fatal(err)
			}
			events, whileIn, in := r.log.snapshot()
			if len(whileIn) > 0 {
				t.Errorf("changed the node while the LB had it in service: %v (history %v)", whileIn, events)
			}
			if strings.Join(events, ", ") != strings.Join(c.want, ", ") {
				t.Errorf("history %v, want %v", events, c.want)
			}
			if cur, _ := r.rel.Current(); cur != c.end || !in {
				t.Errorf("after recovery: live %s, in service %v; want %s in service", cur, in, c.end)
			}
			if e := r.journalStep(t); e != nil {
				t.Errorf("journal left: %+v", e)
			}
		})
	}
}

// TestRecoverVerifiedReleaseThatNowFails: killed while undraining, but
// the verified release fails its checks after the restart: the node is
// drained before anything is switched back.
func TestRecoverVerifiedReleaseThatNowFails(t *testing.T) {
	e := entry{From: "aaaa", To: "bbbb", Step: StepUndraining, Verified: "bbbb", Drained: true}
	r := newRecoverRig(t, "bbbb", true, &e)
	r.new.mode.Store("fail")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := r.n.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	events, whileIn, in := r.log.snapshot()
	if len(whileIn) > 0 {
		t.Errorf("changed the node while the LB had it in service: %v (history %v)", whileIn, events)
	}
	want := []string{"workers bbbb", "nginx bbbb", "drain", "switch aaaa", "workers aaaa", "nginx aaaa", "undrain"}
	if strings.Join(events, ", ") != strings.Join(want, ", ") {
		t.Errorf("history %v, want %v", events, want)
	}
	if cur, _ := r.rel.Current(); cur != "aaaa" || !in {
		t.Errorf("after recovery: live %s, in service %v; want aaaa in service", cur, in)
	}
}

// TestRolloutJournalsTheRejoin: during a rollout's undrain the journal says
// undraining with the verified release, which is what lets a restarted
// agent tell a verified release from one still being checked.
func TestRolloutJournalsTheRejoin(t *testing.T) {
	r := newRecoverRig(t, "aaaa", true, nil)
	var during *entry
	r.lb.onUndrain = func() { during = r.journalStep(t) }
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := r.n.Sync(ctx)
	if err != nil || !out.Applied {
		t.Fatalf("rollout: %+v, %v", out, err)
	}
	if during == nil || during.Step != StepUndraining || during.Verified != "bbbb" {
		t.Fatalf("the journal during the undrain: %+v, want step undraining, verified bbbb", during)
	}
	events, whileIn, _ := r.log.snapshot()
	if len(whileIn) > 0 {
		t.Errorf("the rollout changed the node in service: %v (history %v)", whileIn, events)
	}
}

// TestDrainAtItsBoundIsAnEvent: a drain that went on at its bound (the LB
// not seen to stop in time) does not stop the rollout, and is recorded as
// an event naming why.
func TestDrainAtItsBoundIsAnEvent(t *testing.T) {
	r := newRecoverRig(t, "aaaa", true, nil)
	reg := &memRegistry{}
	r.n.d.Registry = reg
	r.lb.incomplete = "3 requests still in flight at the drain timeout"
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := r.n.Sync(ctx); err != nil || !out.Applied {
		t.Fatalf("rollout: %+v, %v", out, err)
	}
	reg.mu.Lock()
	defer reg.mu.Unlock()
	if len(reg.notices) != 1 || !strings.Contains(reg.notices[0], "drain went on at its bound: 3 requests still in flight") {
		t.Fatalf("events %q, want the drain's bound and why", reg.notices)
	}
}
