package reconcile

import (
	"context"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drover-dev/drover/spec"
)

// The guard, driven in-process: its collaborators are fakes that record what
// it asks, except the worker instance, which is a real HTTP server on
// loopback whose answers the test turns bad and good.

// worker is a real HTTP server standing in for a worker instance.
type worker struct {
	srv  *httptest.Server
	mode atomic.Value // "ok", "fail", "hang"
	hits atomic.Int32 // requests answered or not
}

func newWorker(t testing.TB) *worker {
	w := &worker{}
	w.mode.Store("ok")
	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.hits.Add(1)
		switch w.mode.Load() {
		case "fail":
			http.Error(rw, "database gone", http.StatusInternalServerError)
		case "hang":
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		default:
			fmt.Fprintln(rw, "ok")
		}
	}))
	t.Cleanup(w.srv.Close)
	return w
}

func (w *worker) port() int { return w.srv.Listener.Addr().(*net.TCPAddr).Port }

type fakeReleases struct {
	mu   sync.Mutex
	cur  string
	spec []byte
	// switched records Switch calls.
	switched []string
}

func (r *fakeReleases) Prepare(context.Context, string, []byte, *spec.Spec, fs.FS) error { return nil }
func (r *fakeReleases) Current() (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur, nil
}
func (r *fakeReleases) Switch(rev string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cur = rev
	r.switched = append(r.switched, rev)
	return nil
}
func (r *fakeReleases) SpecOf(string) ([]byte, error)    { return r.spec, nil }
func (r *fakeReleases) Prune(context.Context, int) error { return nil }

// fakeParts is the web server and the supervisor: each Apply is counted and
// each Drift answers what the test set.
type fakeParts struct {
	mu                    sync.Mutex
	workerDrift, webDrift []string
	supApplies, webApply  int
}

type fakeWeb struct{ *fakeParts }

func (fakeWeb) Check(context.Context, *spec.Spec) error { return nil }
func (w fakeWeb) Apply(context.Context, *spec.Spec) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.webApply++
	w.webDrift = nil // put back
	return nil
}
func (w fakeWeb) Drift(context.Context, *spec.Spec) ([]string, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.webDrift, nil
}

type fakeSup struct{ *fakeParts }

func (s fakeSup) Apply(context.Context, []spec.Worker, string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.supApplies++
	return nil
}
func (s fakeSup) Drift(context.Context, []spec.Worker, string) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.workerDrift, nil
}

func (p *fakeParts) counts() (sup, web int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.supApplies, p.webApply
}

// memRegistry keeps every reported status and notice.
type memRegistry struct {
	mu       sync.Mutex
	statuses []Status
	notices  []string
	halts    []string // "rev: reason"
}

func (r *memRegistry) Report(_ context.Context, st Status) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.statuses = append(r.statuses, st)
	return nil
}
func (r *memRegistry) Halted(context.Context, string) (string, bool, error) { return "", false, nil }
func (r *memRegistry) Halt(_ context.Context, rev, reason string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.halts = append(r.halts, rev+": "+reason)
	return nil
}
func (r *memRegistry) halted() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.halts)
}
func (r *memRegistry) Notice(_ context.Context, _, msg string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notices = append(r.notices, msg)
	return nil
}

// healths is the sequence of distinct health verdicts reported.
func (r *memRegistry) healths() []Health {
	r.mu.Lock()
	defer r.mu.Unlock()
	var hs []Health
	for _, st := range r.statuses {
		if st.Health != HealthUnknown && (len(hs) == 0 || hs[len(hs)-1] != st.Health) {
			hs = append(hs, st.Health)
		}
	}
	return hs
}

// fakeRoom lets the node out or not, and counts the asks.
type fakeRoom struct {
	allow atomic.Bool
	asks  atomic.Int32
}

func (r *fakeRoom) TakeOut(ctx context.Context, _ int, out func(context.Context) error) (bool, string, error) {
	r.asks.Add(1)
	if !r.allow.Load() {
		return false, "2 of 3 nodes are failing too", nil
	}
	return true, "", out(ctx)
}

type guardRig struct {
	t     testing.TB
	n     *Node
	w     *worker
	parts *fakeParts
	rel   *fakeReleases
	reg   *memRegistry
	room  *fakeRoom
	dir   string
}

const guardTick = 40 * time.Millisecond

func newGuardRig(t testing.TB, gc GuardConfig, withRoom bool) *guardRig {
	t.Helper()
	w := newWorker(t)
	sp := fmt.Sprintf(`version: 1
workers:
  - name: api
    source: workers/api
    exec: [node, server.js]
    port: %d
    health: {path: /healthz, timeout: 500ms}
`, w.port())
	if _, err := spec.Parse("drover.yaml", []byte(sp)); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	r := &guardRig{t: t, w: w, parts: &fakeParts{}, rel: &fakeReleases{cur: "aaaa", spec: []byte(sp)}, reg: &memRegistry{}, room: &fakeRoom{}, dir: dir}
	r.room.allow.Store(true)
	d := Deps{Source: nil, Releases: r.rel, Web: fakeWeb{r.parts}, Supervisor: fakeSup{r.parts}, Registry: r.reg}
	if withRoom {
		d.Room = r.room
	}
	d.Source = noSource{}
	if gc.Interval == 0 {
		gc.Interval = guardTick
	}
	n, err := New(Config{
		Name: "n1", StateDir: dir, LiveDir: filepath.Join(dir, "current"), HealthDir: filepath.Join(dir, "lb"),
		SiteURL: func(*spec.Spec) string { return "http://127.0.0.1:1" }, WorkerHost: "127.0.0.1", Guard: gc,
	}, d)
	if err != nil {
		t.Fatal(err)
	}
	n.markHealthy(true)
	r.n = n
	return r
}

type noSource struct{}

func (noSource) Remote(context.Context) (string, error)              { return "aaaa", nil }
func (noSource) Fetch(context.Context, string) error                 { return nil }
func (noSource) Tree(context.Context, string, string) (fs.FS, error) { return nil, nil }

func (r *guardRig) run() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.n.Guard(ctx) }()
	r.t.Cleanup(func() { cancel(); <-done })
}

func (r *guardRig) up() bool {
	_, err := os.Stat(filepath.Join(r.dir, "lb", "up"))
	return err == nil
}

// until waits up to d for ok, failing the test with what.
func (r *guardRig) until(d time.Duration, what string, ok func() bool) {
	r.t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			r.t.Fatalf("after %s: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *guardRig) waitHealth(h Health, d time.Duration) Status {
	r.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if st := r.n.Status(); st.Health == h {
			return st
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.t.Fatalf("health is %q after %s, want %q (verdicts %v)", r.n.Status().Health, d, h, r.reg.healths())
	return Status{}
}

// A failing worker takes the node out after UnhealthyAfter rounds, and a
// healed one brings it back after HealthyAfter; the status says which check
// failed and why.
func TestGuardTakesOutAndBringsBack(t *testing.T) {
	r := newGuardRig(t, GuardConfig{UnhealthyAfter: 3, HealthyAfter: 3, RestartAfter: time.Hour}, true)
	r.run()
	r.waitHealth(HealthOK, 2*time.Second)
	r.w.mode.Store("fail")
	st := r.waitHealth(HealthOut, 3*time.Second)
	if r.up() {
		t.Fatal("the node is out but its health endpoint still says up")
	}
	if !strings.Contains(st.HealthWhy, "worker api instance 0") || !strings.Contains(st.HealthWhy, "database gone") {
		t.Fatalf("why = %q, want the instance and its answer", st.HealthWhy)
	}
	if got := r.reg.healths(); len(got) < 3 || got[len(got)-3] != HealthOK || got[len(got)-2] != HealthFailing {
		t.Fatalf("verdicts %v: want healthy, failing, out", got)
	}
	r.w.mode.Store("ok")
	r.waitHealth(HealthOK, 3*time.Second)
	if !r.up() {
		t.Fatal("healthy again but the health endpoint still says down")
	}
}

// TestGuardFollowsThePlacement: the guard probes the ports the live
// release's instances run on now. The same revision recorded anew on its
// second range (a rollback that placed it there) is probed there, not on
// the ports the guard cached with the revision's spec.
func TestGuardFollowsThePlacement(t *testing.T) {
	r := newGuardRig(t, GuardConfig{UnhealthyAfter: 2, HealthyAfter: 2, RestartAfter: time.Hour}, true)
	alt := newWorker(t)
	first := fmt.Sprintf("port: %d\n", r.w.port())
	r.rel.spec = []byte(strings.Replace(string(r.rel.spec), first, first+fmt.Sprintf("    altPort: %d\n", alt.port()), 1))
	r.run()
	r.waitHealth(HealthOK, 2*time.Second)
	if alt.hits.Load() != 0 {
		t.Fatal("the guard probed the second range before the release ran there")
	}
	// aaaa's instances now run on the second range; the first is gone.
	if err := r.n.writePlaces(false, placement{Rev: "aaaa", Alt: true}); err != nil {
		t.Fatal(err)
	}
	r.w.mode.Store("fail")
	r.until(3*time.Second, "the guard probes the second range", func() bool { return alt.hits.Load() >= 4 })
	if got := r.reg.healths(); slices.Contains(got, HealthFailing) || slices.Contains(got, HealthOut) {
		t.Fatalf("verdicts %v: the guard judged the range the release left", got)
	}
}

// A hung instance (no answer at all) counts as failing too.
func TestGuardHungInstance(t *testing.T) {
	r := newGuardRig(t, GuardConfig{UnhealthyAfter: 2, HealthyAfter: 1, RestartAfter: time.Hour}, true)
	r.run()
	r.waitHealth(HealthOK, 2*time.Second)
	r.w.mode.Store("hang")
	st := r.waitHealth(HealthOut, 5*time.Second)
	if !strings.Contains(st.HealthWhy, "deadline exceeded") && !strings.Contains(st.HealthWhy, "Timeout") {
		t.Fatalf("why = %q, want a timeout", st.HealthWhy)
	}
	r.w.mode.Store("ok")
	r.waitHealth(HealthOK, 5*time.Second)
}

// Fewer failed rounds than UnhealthyAfter never take the node out.
func TestGuardHysteresis(t *testing.T) {
	r := newGuardRig(t, GuardConfig{Interval: 100 * time.Millisecond, UnhealthyAfter: 1000, HealthyAfter: 1, RestartAfter: time.Hour}, true)
	r.run()
	r.waitHealth(HealthOK, 2*time.Second)
	r.w.mode.Store("fail")
	r.waitHealth(HealthFailing, 2*time.Second)
	time.Sleep(300 * time.Millisecond) // a few more failed rounds, far fewer than 1000
	r.w.mode.Store("ok")
	r.waitHealth(HealthOK, 2*time.Second)
	if n := r.room.asks.Load(); n != 0 {
		t.Fatalf("the guard asked to leave %d times before UnhealthyAfter", n)
	}
	if !r.up() {
		t.Fatal("the node left the LB")
	}
}

// When the cluster has no room (other nodes failing or out), the node stays
// in and says degraded, and why.
func TestGuardDegradedWithoutRoom(t *testing.T) {
	r := newGuardRig(t, GuardConfig{UnhealthyAfter: 2, HealthyAfter: 2, RestartAfter: time.Hour}, true)
	r.room.allow.Store(false)
	r.run()
	r.waitHealth(HealthOK, 2*time.Second)
	r.w.mode.Store("fail")
	st := r.waitHealth(HealthDegraded, 3*time.Second)
	if !r.up() {
		t.Fatal("a degraded node left the LB")
	}
	if !strings.Contains(st.HealthWhy, "failing too") {
		t.Fatalf("why = %q, want the room's reason", st.HealthWhy)
	}
	// Room appears (another node recovered): the next round takes it out.
	r.room.allow.Store(true)
	r.waitHealth(HealthOut, 3*time.Second)
}

// A node without a cluster never takes itself out.
func TestGuardSingleNodeStaysIn(t *testing.T) {
	r := newGuardRig(t, GuardConfig{UnhealthyAfter: 1, HealthyAfter: 1, RestartAfter: time.Hour}, false)
	r.run()
	r.waitHealth(HealthOK, 2*time.Second)
	r.w.mode.Store("fail")
	st := r.waitHealth(HealthDegraded, 3*time.Second)
	if !r.up() || !strings.Contains(st.HealthWhy, "single node") {
		t.Fatalf("single node: up=%v why=%q", r.up(), st.HealthWhy)
	}
}

// While the node holds the rollout (live) lock, the guard does nothing.
func TestGuardPausesDuringRollout(t *testing.T) {
	r := newGuardRig(t, GuardConfig{UnhealthyAfter: 1, HealthyAfter: 1, RestartAfter: time.Hour}, true)
	r.w.mode.Store("fail")
	r.n.live.Lock()
	r.run()
	time.Sleep(10 * guardTick)
	if n := r.room.asks.Load(); n != 0 || !r.up() {
		t.Fatalf("during a rollout the guard asked to leave %d times (up=%v)", n, r.up())
	}
	r.n.live.Unlock()
	r.waitHealth(HealthOut, 3*time.Second)
}

// Drift is put back by the same apply a rollout uses, and noticed; drift
// that keeps coming back is put back with a growing delay, not every round.
func TestGuardPutsBackDrift(t *testing.T) {
	r := newGuardRig(t, GuardConfig{UnhealthyAfter: 3, HealthyAfter: 3, RestartAfter: time.Hour}, true)
	r.parts.mu.Lock()
	r.parts.webDrift = []string{"nginx config /etc/nginx/nginx.conf was changed"}
	r.parts.mu.Unlock()
	r.rel.Switch("bbbb") // someone moved `current` by hand
	r.run()
	r.until(2*time.Second, "drift not put back by the supervisor's and nginx's apply", func() bool {
		sup, web := r.parts.counts()
		return sup >= 1 && web >= 1
	})
	if cur, _ := r.rel.Current(); cur != "aaaa" {
		t.Fatalf("current is %s after the guard, want the live release aaaa", cur)
	}
	r.reg.mu.Lock()
	notices := strings.Join(r.reg.notices, "\n")
	r.reg.mu.Unlock()
	for _, want := range []string{"current points at bbbb", "nginx config /etc/nginx/nginx.conf was changed"} {
		if !strings.Contains(notices, want) {
			t.Errorf("events %q lack %q", notices, want)
		}
	}

	// A worker unit that keeps drifting: restores back off.
	r.parts.mu.Lock()
	r.parts.workerDrift = []string{"drover-api@3000.service is inactive"}
	r.parts.mu.Unlock()
	before, _ := r.parts.counts()
	time.Sleep(40 * guardTick)
	after, _ := r.parts.counts()
	if got := after - before; got < 2 || got > 12 {
		t.Fatalf("%d restores in 40 rounds of drift that keeps coming back; want a few, backing off", got)
	}
}

// An instance failing its check for RestartAfter is restarted through the
// supervisor's apply, and not again before another RestartAfter.
func TestGuardRestartsLongFailingInstance(t *testing.T) {
	r := newGuardRig(t, GuardConfig{UnhealthyAfter: 1000, HealthyAfter: 1, RestartAfter: 200 * time.Millisecond}, true)
	r.run()
	r.waitHealth(HealthOK, 2*time.Second)
	r.w.mode.Store("fail")
	time.Sleep(100 * time.Millisecond)
	if sup, _ := r.parts.counts(); sup != 0 {
		t.Fatalf("restarted after %d applies, before RestartAfter", sup)
	}
	r.until(3*time.Second, "a failing instance was never restarted", func() bool {
		sup, _ := r.parts.counts()
		return sup >= 1
	})
	time.Sleep(150 * time.Millisecond)
	if sup, _ := r.parts.counts(); sup > 2 {
		t.Fatalf("%d restarts within RestartAfter", sup)
	}
}

// Extra checks gate what they say: rollout checks verify a switched node,
// steady ones are the guard's, both are both.
func TestExtraChecksGates(t *testing.T) {
	sp, err := spec.Parse("drover.yaml", []byte(`version: 1
health:
  checks:
    - {name: db, tcp: "127.0.0.1:5432"}
    - {name: deep, http: "http://127.0.0.1:3000/deep", gates: steady}
    - {name: disk, exec: [/bin/true], gates: rollout}
`))
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{cfg: Config{SiteURL: func(*spec.Spec) string { return "" }, WorkerHost: "127.0.0.1"}}
	names := func(rollout bool) string {
		var s []string
		for _, c := range n.checks(sp, rollout) {
			s = append(s, c.Name+"="+c.Target())
		}
		return strings.Join(s, " ")
	}
	if got, want := names(true), "check db=tcp 127.0.0.1:5432 check disk=exec /bin/true"; got != want {
		t.Errorf("rollout checks %q, want %q", got, want)
	}
	if got, want := names(false), "check db=tcp 127.0.0.1:5432 check deep=http://127.0.0.1:3000/deep"; got != want {
		t.Errorf("steady checks %q, want %q", got, want)
	}
}

// nginx's config is put back out of the LB (a reload closes the LB's
// keep-alive connections): only when the cluster has room, and the node
// re-joins afterwards.
func TestGuardReloadsNginxOutOfTheLB(t *testing.T) {
	r := newGuardRig(t, GuardConfig{UnhealthyAfter: 3, HealthyAfter: 3, RestartAfter: time.Hour}, true)
	r.room.allow.Store(false)
	r.parts.mu.Lock()
	r.parts.webDrift = []string{"nginx config /etc/nginx/nginx.conf was changed"}
	r.parts.mu.Unlock()
	r.run()
	r.waitHealth(HealthOK, 2*time.Second)
	time.Sleep(10 * guardTick)
	if _, web := r.parts.counts(); web != 0 || r.room.asks.Load() == 0 {
		t.Fatalf("without room: %d nginx applies after %d asks; want none, and asks", web, r.room.asks.Load())
	}
	r.room.allow.Store(true)
	r.until(5*time.Second, "nginx's config never put back once there was room", func() bool {
		_, web := r.parts.counts()
		return web == 1
	})
	r.waitHealth(HealthOK, 2*time.Second)
	r.reg.mu.Lock()
	defer r.reg.mu.Unlock()
	saw := false
	for _, st := range r.reg.statuses {
		saw = saw || (st.Health == HealthOut && strings.Contains(st.HealthWhy, "reloading nginx"))
	}
	if !saw {
		t.Error("the node never reported itself out while it reloaded nginx")
	}
}
