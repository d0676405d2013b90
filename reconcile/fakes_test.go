package reconcile

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/drover-dev/drover/health"
	"github.com/drover-dev/drover/spec"
)

// The suite's fakes (suite_test.go): a cluster of nodes whose every part
// holds its state and tells one history, in order, what each node did.
// They build on recover_test.go's recorders (changeLog, recLB,
// recReleases, recParts): each node's changeLog tees into the cluster's
// history, with the node's name in front.

// suiteCluster is what the nodes share: the rollout lock's slots, the
// halts, the nodes without an agent here (out of service or not), and the
// history.
type suiteCluster struct {
	mu      sync.Mutex
	history []string // "n1 lock", "n1 drain", "n1 switch bbbb", "n3 out", …
	holders map[string]context.CancelCauseFunc
	others  map[string]bool // a node with no agent here → out of service
	nodes   []*suiteNode
	reg     *canaryRegistry
	// hook sees each event after it took effect (lose the lock, crash).
	hook func(node, ev string)
}

func newSuiteCluster() *suiteCluster {
	return &suiteCluster{
		holders: map[string]context.CancelCauseFunc{}, others: map[string]bool{},
		reg: &canaryRegistry{log: &changeLog{}, halted: map[string]string{}},
	}
}

func (c *suiteCluster) event(node, ev string) {
	c.mu.Lock()
	c.history = append(c.history, node+" "+ev)
	hook := c.hook
	c.mu.Unlock()
	if hook != nil {
		hook(node, ev)
	}
}

func (c *suiteCluster) events() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.history...)
}

// setOther registers a node with no agent here, out of service or back.
func (c *suiteCluster) setOther(name string, out bool) {
	c.mu.Lock()
	c.others[name] = out
	c.mu.Unlock()
	c.event(name, map[bool]string{true: "out", false: "in"}[out])
}

// outBesides counts the registered nodes out of service, but name.
func (c *suiteCluster) outBesides(name string) (int, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var who []string
	for o, out := range c.others {
		if out {
			who = append(who, o)
		}
	}
	for _, sn := range c.nodes {
		if sn.name != name && !sn.inService() {
			who = append(who, sn.name)
		}
	}
	return len(who), who
}

// loseLock takes the lock from node, as an expired Redis key does.
func (c *suiteCluster) loseLock(node string) {
	c.mu.Lock()
	cancel, ok := c.holders[node]
	delete(c.holders, node)
	c.mu.Unlock()
	if ok {
		cancel(errors.New("lock expired"))
		c.event(node, "lost")
	}
}

// suiteLock is one node's view of the rollout lock: slots holders at once.
type suiteLock struct{ sn *suiteNode }

func (l suiteLock) Acquire(ctx context.Context, rev string, slots int) (context.Context, func(context.Context) error, error) {
	c := l.sn.c
	for {
		c.mu.Lock()
		if len(c.holders) < slots {
			held, cancel := context.WithCancelCause(ctx)
			c.holders[l.sn.name] = cancel
			c.mu.Unlock()
			c.event(l.sn.name, "lock")
			return held, func(context.Context) error {
				c.mu.Lock()
				cancel, ok := c.holders[l.sn.name]
				delete(c.holders, l.sn.name)
				c.mu.Unlock()
				if ok {
					cancel(context.Canceled)
					c.event(l.sn.name, "unlock")
				}
				return nil
			}, nil
		}
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// suiteCapacity is the capacity rule over the cluster's nodes.
type suiteCapacity struct{ sn *suiteNode }

func (p suiteCapacity) WaitCapacity(ctx context.Context, maxUnavailable int, waiting func(string)) error {
	said := false
	for {
		n, who := p.sn.c.outBesides(p.sn.name)
		if n+1 <= maxUnavailable {
			return nil
		}
		if !said {
			p.sn.event("capacity wait")
			said = true
		}
		waiting(fmt.Sprintf("%s out of service", strings.Join(who, ", ")))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// suiteRegistry is the cluster's registry seen from one node: the halts
// are the cluster's; each step it reports is an event.
type suiteRegistry struct {
	*canaryRegistry
	sn   *suiteNode
	last Step
}

func (r *suiteRegistry) Report(ctx context.Context, st Status) error {
	if st.Step != r.last {
		r.last = st.Step
		r.sn.event("step " + string(st.Step))
	}
	return r.canaryRegistry.Report(ctx, st)
}

func (r *suiteRegistry) Halt(ctx context.Context, rev, reason string) error {
	err := r.canaryRegistry.Halt(ctx, rev, reason)
	r.sn.event("halt " + rev)
	return err
}

// suiteMigrator fails its next fails Migrates with err.
type suiteMigrator struct {
	sn    *suiteNode
	mu    sync.Mutex
	fails int
	err   error
}

func (m *suiteMigrator) Check(*spec.Spec, fs.FS) error { return nil }

func (m *suiteMigrator) Migrate(_ context.Context, rev string, _ *spec.Spec, _ fs.FS) error {
	m.mu.Lock()
	fail := m.fails > 0
	m.fails--
	m.mu.Unlock()
	if fail {
		m.sn.event("migrate " + rev + " fail")
		return m.err
	}
	m.sn.event("migrate " + rev)
	return nil
}

// faultyWeb fails Apply of the release failOn.
type faultyWeb struct {
	recWeb
	failOn string
}

func (w faultyWeb) Apply(ctx context.Context, sp *spec.Spec) error {
	if cur, _ := w.rel.Current(); cur == w.failOn {
		return errors.New("nginx -t: unknown directive")
	}
	return w.recWeb.Apply(ctx, sp)
}

// Worker health per release, as the fake node's checks answer.
const (
	healthOK   = "ok"
	healthFail = "fail"
	// healthDies passes for dieAfter after its workers start, then fails:
	// a release that dies during the soak.
	healthDies = "dies"
	dieAfter   = 3 * time.Second
)

// suiteNode is one node: its release store, workers and nginx (recParts),
// its LB (recLB), what its workers answer per release, and its agent.
type suiteNode struct {
	name  string
	c     *suiteCluster
	log   *changeLog
	rel   *recReleases
	parts *recParts
	lb    *recLB
	mig   *suiteMigrator
	cfg   Config
	deps  Deps
	n     *Node

	mu      sync.Mutex
	health  map[string]string // release → healthOK, healthFail, healthDies
	started time.Time         // when the workers last changed release
	// crashAt crashes the agent (runtime.Goexit: nothing after it runs)
	// right after this event, once.
	crashAt string
}

// treeOf is a config repo tree whose drover.yaml is sp.
func treeOf(sp string) fstest.MapFS {
	return fstest.MapFS{"drover.yaml": {Data: []byte(sp)}, "workers/api/server.js": {Data: []byte("x")}}
}

// addNode is a node live on aaaa (spec from) and in service, whose branch
// points at bbbb (spec to).
func (c *suiteCluster) addNode(t *testing.T, name, from, to string) *suiteNode {
	t.Helper()
	sn := &suiteNode{name: name, c: c, health: map[string]string{"aaaa": healthOK, "bbbb": healthOK}}
	sn.log = &changeLog{inService: true, tee: sn.event}
	sn.rel = &recReleases{log: sn.log, cur: "aaaa", specs: map[string][]byte{"aaaa": []byte(from), "bbbb": []byte(to)}}
	sn.parts = &recParts{log: sn.log, rel: sn.rel, applied: "aaaa"}
	sn.lb = &recLB{log: sn.log}
	sn.mig = &suiteMigrator{sn: sn}
	dir := t.TempDir()
	sn.cfg = Config{
		Name: name, StateDir: dir, LiveDir: filepath.Join(dir, "current"), HealthDir: filepath.Join(dir, "lb"),
		SiteURL: func(*spec.Spec) string { return "http://127.0.0.1:1" }, WorkerHost: "127.0.0.1",
	}
	sn.deps = Deps{
		Source:   treeSource{rev: "bbbb", tree: treeOf(to)},
		Releases: sn.rel, Web: recWeb{sn.parts}, Supervisor: recSup{sn.parts}, Drainer: sn.lb,
		Lock: suiteLock{sn}, Capacity: suiteCapacity{sn}, Migrator: sn.mig,
		Registry: &suiteRegistry{canaryRegistry: c.reg, sn: sn},
	}
	c.mu.Lock()
	c.nodes = append(c.nodes, sn)
	c.mu.Unlock()
	// aaaa was verified and is in service: the LB health endpoint says so.
	if err := os.MkdirAll(sn.cfg.HealthDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sn.cfg.HealthDir, "up"), []byte("ok\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sn.start(t)
	return sn
}

// start is the agent starting (again): a new Node on the same state dir
// and parts.
func (sn *suiteNode) start(t *testing.T) {
	t.Helper()
	n, err := New(sn.cfg, sn.deps)
	if err != nil {
		t.Fatal(err)
	}
	n.waitHealthy = sn.wait
	sn.n = n
}

func (sn *suiteNode) event(ev string) {
	if strings.HasPrefix(ev, "workers ") {
		sn.mu.Lock()
		sn.started = time.Now()
		sn.mu.Unlock()
	}
	sn.c.event(sn.name, ev)
	sn.mu.Lock()
	crash := sn.crashAt != "" && ev == sn.crashAt
	if crash {
		sn.crashAt = ""
	}
	sn.mu.Unlock()
	if crash {
		sn.c.event(sn.name, "crash")
		runtime.Goexit()
	}
}

func (sn *suiteNode) inService() bool {
	_, _, in := sn.log.snapshot()
	return in
}

func (sn *suiteNode) setHealth(rev, h string) {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	sn.health[rev] = h
}

// healthy is what every check of the live release answers now: its
// workers and nginx must run it, and its workers answer as set.
func (sn *suiteNode) healthy(rev string) error {
	if w := sn.parts.running("workers"); w != rev {
		return fmt.Errorf("workers run %s, not %s", w, rev)
	}
	if w := sn.parts.running("nginx"); w != rev {
		return fmt.Errorf("nginx serves %s, not %s", w, rev)
	}
	sn.mu.Lock()
	defer sn.mu.Unlock()
	switch sn.health[rev] {
	case healthOK:
		return nil
	case healthDies:
		if time.Since(sn.started) < dieAfter {
			return nil
		}
	}
	return errors.New("status 500, want 200: database gone")
}

// wait stands in for health.Wait (Node.waitHealthy): every check asks
// the fake node, Interval apart, until Successes in a row or ctx ends.
func (sn *suiteNode) wait(ctx context.Context, checks []health.Check) error {
	rev, _ := sn.rel.Current()
	need, interval := 1, time.Second
	for _, c := range checks {
		need = max(need, c.Successes)
		if c.Interval > 0 {
			interval = min(interval, c.Interval)
		}
	}
	streak := 0
	var last error
	for {
		if last = sn.healthy(rev); last == nil {
			if streak++; streak >= need {
				sn.event("checks " + rev + " ok")
				return nil
			}
		} else {
			streak = 0
		}
		select {
		case <-ctx.Done():
			sn.event("checks " + rev + " fail")
			return fmt.Errorf("%d checks of %s not healthy: %w", len(checks), rev, last)
		case <-time.After(interval):
		}
	}
}

// sync runs one Sync as the agent does; crashed is true when the agent
// crashed (crashAt) during it.
func (sn *suiteNode) sync(ctx context.Context) (out Outcome, err error, crashed bool) {
	done := make(chan struct{})
	crashed = true
	go func() {
		defer close(done)
		out, err = sn.n.Sync(ctx)
		crashed = false
	}()
	<-done
	return out, err, crashed
}

// journal is the node's journal entry in flight, nil when clear.
func (sn *suiteNode) journal(t *testing.T) *entry {
	t.Helper()
	return journalOf(t, sn.n)
}
