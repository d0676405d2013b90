package reconcile

import (
	"context"
	"errors"
	"fmt"
	"github.com/drover-dev/drover/internal/testsvc"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/drover-dev/drover/spec"
)

// The overlap handover, driven in-process. The supervisor is a fake that
// runs a real HTTP server on every port it is asked for, answering for the
// release it was started from (503 for a release marked bad), so that the
// node's own health checks reach what runs; nginx, the LB and the release
// store are recorders (recover_test.go). Every step lands in one history,
// with whether the LB had the node in service at that moment.

// portSup is the fake supervisor.
type portSup struct {
	log *changeLog
	rel *recReleases
	bad map[string]bool // releases whose instances answer 503

	mu  sync.Mutex
	run map[int]*portInst
}

var _ starter = (*portSup)(nil)

type portInst struct {
	rel string
	srv *http.Server
}

func (s *portSup) release(dir string) string {
	if filepath.Base(dir) == "current" {
		cur, _ := s.rel.Current()
		return cur
	}
	return filepath.Base(dir)
}

func (s *portSup) stopLocked(port int) {
	in := s.run[port]
	if in == nil {
		return
	}
	in.srv.Close()
	delete(s.run, port)
	s.log.add(fmt.Sprintf("stop %s@%d", in.rel, port), false)
}

func (s *portSup) start(ws []spec.Worker, dir string) error {
	rel := s.release(dir)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range ws {
		for _, port := range w.InstancePorts() {
			if in := s.run[port]; in != nil && in.rel == rel {
				continue
			}
			s.stopLocked(port)
			ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
			if err != nil {
				return err
			}
			bad := s.bad[rel]
			srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
				if bad {
					http.Error(rw, "broken on purpose", http.StatusServiceUnavailable)
					return
				}
				fmt.Fprintln(rw, rel)
			})}
			go srv.Serve(ln)
			s.run[port] = &portInst{rel: rel, srv: srv}
			s.log.add(fmt.Sprintf("start %s@%d", rel, port), false)
			if bad {
				return fmt.Errorf("worker %s instance on port %d not healthy: status 503", w.Name, port)
			}
		}
	}
	return nil
}

func (s *portSup) Start(_ context.Context, ws []spec.Worker, dir string) error {
	return s.start(ws, dir)
}

func (s *portSup) Apply(_ context.Context, ws []spec.Worker, dir string) error {
	if err := s.start(ws, dir); err != nil {
		return err
	}
	want := map[int]bool{}
	for _, w := range ws {
		for _, p := range w.InstancePorts() {
			want[p] = true
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range slices.Sorted(func(yield func(int) bool) {
		for p := range s.run {
			if !yield(p) {
				return
			}
		}
	}) {
		if !want[p] {
			s.stopLocked(p)
		}
	}
	return nil
}

func (s *portSup) Memory(_ context.Context, ws []spec.Worker) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var sum uint64
	for _, w := range ws {
		for _, p := range w.InstancePorts() {
			if s.run[p] != nil {
				sum += 40 << 20
			}
		}
	}
	return sum, nil
}

// running is port -> release of what runs.
func (s *portSup) running() map[int]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[int]string{}
	for p, in := range s.run {
		m[p] = in.rel
	}
	return m
}

func (s *portSup) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for p := range s.run {
		s.stopLocked(p)
	}
}

// portWeb records the upstream ports nginx is given; failing names a
// release whose nginx config fails to apply.
type portWeb struct {
	log     *changeLog
	rel     *recReleases
	failing string
	applied string // the ports nginx proxies to now
}

func (*portWeb) Check(context.Context, *spec.Spec) error { return nil }
func (w *portWeb) Apply(_ context.Context, sp *spec.Spec) error {
	cur, _ := w.rel.Current()
	if cur == w.failing {
		return errors.New("nginx -t failed on purpose")
	}
	var ports []string
	for _, wk := range sp.Workers {
		for _, p := range wk.InstancePorts() {
			ports = append(ports, strconv.Itoa(p))
		}
	}
	to := strings.Join(ports, ",")
	w.log.add("nginx "+to, to != w.applied)
	w.applied = to
	return nil
}

// haltRegistry records halts.
type haltRegistry struct {
	memRegistry
	halts []string
}

func (r *haltRegistry) Halt(_ context.Context, rev, reason string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.halts = append(r.halts, rev+": "+reason)
	return nil
}

type overlapRig struct {
	n    *Node
	log  *changeLog
	rel  *recReleases
	sup  *portSup
	web  *portWeb
	lb   *recLB
	reg  *haltRegistry
	dir  string
	port int // the worker's port; altPort is port+1
}

func overlapSpec(port int) string {
	return fmt.Sprintf(`version: 1
rollout: {healthTimeout: 3s, soak: 0s, handover: overlap}
workers:
  - name: api
    source: workers/api
    exec: [node, server.js]
    port: %d
    altPort: %d
    health: {path: /healthz, timeout: 500ms, interval: 50ms, successes: 1}
`, port, port+1)
}

// twoFreePorts finds a port whose next one is free too (below the
// ephemeral range, where no test's outgoing connection takes it).
func twoFreePorts(t *testing.T) int { return testsvc.FreePorts(t, 2) }

// newOverlapRig is a node in service on release aaaa, its worker on its
// port range, about to sync to target; memKB is the node's MemAvailable.
func newOverlapRig(t *testing.T, target string, memKB int, e *entry) *overlapRig {
	t.Helper()
	r := &overlapRig{log: &changeLog{inService: true}, dir: t.TempDir(), port: twoFreePorts(t)}
	sp := overlapSpec(r.port)
	r.rel = &recReleases{log: r.log, cur: "aaaa", specs: map[string][]byte{"aaaa": []byte(sp), "bbbb": []byte(sp), "cccc": []byte(sp)}}
	r.sup = &portSup{log: r.log, rel: r.rel, bad: map[string]bool{}, run: map[int]*portInst{}}
	t.Cleanup(r.sup.close)
	r.web = &portWeb{log: r.log, rel: r.rel, applied: strconv.Itoa(r.port)}
	r.lb = &recLB{log: r.log}
	r.reg = &haltRegistry{}
	meminfo := filepath.Join(r.dir, "meminfo")
	if err := os.WriteFile(meminfo, fmt.Appendf(nil, "MemTotal: 2000000 kB\nMemAvailable: %d kB\n", memKB), 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := New(Config{
		Name: "n1", StateDir: r.dir, LiveDir: filepath.Join(r.dir, "current"), HealthDir: filepath.Join(r.dir, "lb"),
		SiteURL: func(*spec.Spec) string { return "http://127.0.0.1:1" }, WorkerHost: "127.0.0.1",
		Handover: HandoverConfig{MemInfo: meminfo},
	}, Deps{Source: treeSource{rev: target, tree: fstest.MapFS{
		"drover.yaml": {Data: []byte(sp)}, "workers/api/server.js": {Data: []byte("x")},
	}}, Releases: r.rel, Web: r.web, Supervisor: r.sup, Drainer: r.lb, Registry: r.reg})
	if err != nil {
		t.Fatal(err)
	}
	r.n = n
	// aaaa runs as a restart rollout left it: its port range, through current.
	if err := r.sup.Apply(context.Background(), n.specOrNil("aaaa").Workers, n.cfg.LiveDir); err != nil {
		t.Fatal(err)
	}
	r.log.mu.Lock()
	r.log.events = nil
	r.log.mu.Unlock()
	if e != nil {
		if err := n.journal.write(e); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func (r *overlapRig) history() string {
	events, _, _ := r.log.snapshot()
	return strings.Join(events, ", ")
}

// expand names the ports in want: P is the port, A the altPort.
func (r *overlapRig) expand(want string) string {
	return strings.NewReplacer("@P", "@"+strconv.Itoa(r.port), "@A", "@"+strconv.Itoa(r.port+1),
		"nginx P", "nginx "+strconv.Itoa(r.port), "nginx A", "nginx "+strconv.Itoa(r.port+1)).Replace(want)
}

func (r *overlapRig) mustHistory(t *testing.T, want string) {
	t.Helper()
	if got, want := r.history(), r.expand(want); got != want {
		t.Errorf("history\n  %s\nwant\n  %s", got, want)
	}
	if _, whileIn, _ := r.log.snapshot(); len(whileIn) > 0 {
		t.Errorf("switched or reconfigured while the LB had the node in service: %v", whileIn)
	}
}

// mustRun checks what runs: port -> release.
func (r *overlapRig) mustRun(t *testing.T, want map[int]string) {
	t.Helper()
	got := r.sup.running()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("running %v, want %v", got, want)
	}
}

func (r *overlapRig) mustEnd(t *testing.T, live string) {
	t.Helper()
	if cur, _ := r.rel.Current(); cur != live {
		t.Errorf("live release %s, want %s", cur, live)
	}
	if _, _, in := r.log.snapshot(); !in {
		t.Error("the node ended out of the LB")
	}
	if e, err := r.n.journal.read(); err != nil || e != nil {
		t.Errorf("journal left: %+v, %v", e, err)
	}
}

// withSpec makes bbbb's spec sp, in the release store and the tree.
func (r *overlapRig) withSpec(sp string) {
	r.rel.specs["bbbb"] = []byte(sp)
	r.n.d.Source = treeSource{rev: "bbbb", tree: fstest.MapFS{
		"drover.yaml": {Data: []byte(sp)}, "workers/api/server.js": {Data: []byte("x")},
	}}
}

// mustNotice fails unless the rollout noticed exactly one event, holding want.
func (r *overlapRig) mustNotice(t *testing.T, want string) {
	t.Helper()
	r.reg.mu.Lock()
	defer r.reg.mu.Unlock()
	if len(r.reg.notices) != 1 || !strings.Contains(r.reg.notices[0], want) {
		t.Fatalf("events %q, want one with %q", r.reg.notices, want)
	}
}

// sync1 is one turn of Loop: Sync, and Settle after a revision went live.
func sync1(t *testing.T, n *Node) (Outcome, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := n.Sync(ctx)
	if out.Applied {
		if e, _ := n.journal.read(); e != nil {
			t.Errorf("journal left after the rollout: %+v", e)
		}
		n.Settle(ctx)
	}
	return out, err
}

// TestOverlapStartsBeforeTheDrain: the new release's instance starts on the
// second range and is healthy before the node leaves the LB; the drained
// window holds only the switch and nginx moving to the new range; the old
// instance stops after the node is back. The next release flips back to
// the first range.
func TestOverlapStartsBeforeTheDrain(t *testing.T) {
	r := newOverlapRig(t, "bbbb", 4_000_000, nil)
	var atUndrain *entry
	r.lb.onUndrain = func() { atUndrain, _ = r.n.journal.read() }
	if out, err := sync1(t, r.n); err != nil || !out.Applied {
		t.Fatalf("rollout: %+v, %v", out, err)
	}
	r.mustHistory(t, "start bbbb@A, drain, switch bbbb, nginx A, undrain, stop aaaa@P")
	r.mustRun(t, map[int]string{r.port + 1: "bbbb"})
	r.mustEnd(t, "bbbb")
	if atUndrain == nil || atUndrain.Handover != "overlap" || atUndrain.ToWorkers == nil || !atUndrain.ToWorkers.Alt ||
		atUndrain.FromWorkers == nil || atUndrain.FromWorkers.Alt {
		t.Fatalf("journal at the undrain: %+v; want the overlap with bbbb on the second range, aaaa on the first", atUndrain)
	}
	if p := r.n.placeOf("bbbb"); !p.Alt || p.Dir != filepath.Join(r.dir, "releases", "bbbb") {
		t.Fatalf("bbbb placed %+v", p)
	}

	// The next release goes back to the first range, from its own dir.
	r.log.mu.Lock()
	r.log.events = nil
	r.log.mu.Unlock()
	r.n.d.Source = treeSource{rev: "cccc", tree: fstest.MapFS{
		"drover.yaml": {Data: r.rel.specs["cccc"]}, "workers/api/server.js": {Data: []byte("x")},
	}}
	if out, err := sync1(t, r.n); err != nil || !out.Applied {
		t.Fatalf("second rollout: %+v, %v", out, err)
	}
	r.mustHistory(t, "start cccc@P, drain, switch cccc, nginx P, undrain, stop bbbb@A")
	r.mustRun(t, map[int]string{r.port: "cccc"})
	r.mustEnd(t, "cccc")
}

// TestOverlapNeverHealthyHaltsBeforeTheDrain: a release whose instances
// never get healthy is halted before the drain; the node never leaves the
// LB and the old instance keeps serving.
func TestOverlapNeverHealthyHaltsBeforeTheDrain(t *testing.T) {
	r := newOverlapRig(t, "bbbb", 4_000_000, nil)
	r.sup.bad["bbbb"] = true
	out, err := sync1(t, r.n)
	if err == nil || out.Applied {
		t.Fatalf("rollout of a never-healthy release: %+v, %v", out, err)
	}
	r.mustHistory(t, "start bbbb@A, stop bbbb@A")
	r.mustRun(t, map[int]string{r.port: "aaaa"})
	r.mustEnd(t, "aaaa")
	if len(r.reg.halts) != 1 || !strings.HasPrefix(r.reg.halts[0], "bbbb: ") || !strings.Contains(r.reg.halts[0], "second range") {
		t.Fatalf("halts %q, want bbbb halted naming its second range", r.reg.halts)
	}
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(r.port) + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("the old instance after the halt: %v %v", resp, err)
	}
	resp.Body.Close()
}

// TestOverlapRollbackFlipsBack: the new release fails in the drained
// window (its nginx config); the node goes back to the old release on the
// first range, whose instance never stopped, and the new range is cleaned.
func TestOverlapRollbackFlipsBack(t *testing.T) {
	r := newOverlapRig(t, "bbbb", 4_000_000, nil)
	r.web.failing = "bbbb"
	out, err := sync1(t, r.n)
	if err == nil || !out.RolledBack {
		t.Fatalf("rollout: %+v, %v; want rolled back", out, err)
	}
	r.mustHistory(t, "start bbbb@A, drain, switch bbbb, switch aaaa, stop bbbb@A, nginx P, undrain")
	r.mustRun(t, map[int]string{r.port: "aaaa"})
	r.mustEnd(t, "aaaa")
}

// TestOverlapFallsBackToRestartWithoutMemory: with less MemAvailable than
// the live workers' memory plus the margin, the rollout restarts in place,
// and says why.
func TestOverlapFallsBackToRestartWithoutMemory(t *testing.T) {
	r := newOverlapRig(t, "bbbb", 100_000, nil) // ~98 MiB < 40 MiB + 128 MiB
	if out, err := sync1(t, r.n); err != nil || !out.Applied {
		t.Fatalf("rollout: %+v, %v", out, err)
	}
	r.mustHistory(t, "drain, switch bbbb, stop aaaa@P, start bbbb@P, nginx P, undrain")
	r.mustEnd(t, "bbbb")
	r.mustNotice(t, "handover: restart for this rollout: MemAvailable 97 MiB is less than the live workers' 40 MiB plus 128 MiB")
}

// TestRecoverOverlapCleansTheOtherRange: an agent killed at each step of
// an overlap change, restarted: the node ends on exactly one release, in
// the LB, with only that release's range running.
func TestRecoverOverlapCleansTheOtherRange(t *testing.T) {
	for _, c := range []struct {
		name, live string
		inService  bool
		step       Step
		verified   string
		journal    bool
		want       string
		end        string
	}{
		{"killed while starting the new range", "aaaa", true, "", "", false,
			"stop bbbb@A, nginx P", "aaaa"},
		{"killed while draining", "aaaa", true, StepDraining, "", true,
			"undrain, stop bbbb@A", "aaaa"},
		{"killed while verifying", "bbbb", false, StepVerifying, "", true,
			"drain, switch aaaa, stop bbbb@A, nginx P, undrain", "aaaa"},
		{"killed while undraining the new release", "bbbb", true, StepUndraining, "bbbb", true,
			"nginx A, undrain, stop aaaa@P", "bbbb"},
		{"killed after the undrain, before the old range stopped", "bbbb", true, "", "", false,
			"stop aaaa@P, nginx A", "bbbb"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newOverlapRig(t, "bbbb", 4_000_000, nil)
			from := placement{Rev: "aaaa"}
			to := placement{Rev: "bbbb", Alt: true, Dir: filepath.Join(r.dir, "releases", "bbbb")}
			if err := r.n.writePlaces(true, from, to); err != nil {
				t.Fatal(err)
			}
			ws, dir := r.n.place(to, r.n.specOrNil("bbbb").Workers)
			if err := r.sup.Start(context.Background(), ws, dir); err != nil {
				t.Fatal(err)
			}
			if c.live == "bbbb" {
				r.rel.cur = "bbbb"
				r.web.applied = strconv.Itoa(r.port + 1)
			}
			if c.journal {
				e := &entry{From: "aaaa", To: "bbbb", Step: c.step, Drained: true, Verified: c.verified}
				(&handover{from: from, to: to}).carry(e)
				if err := r.n.journal.write(e); err != nil {
					t.Fatal(err)
				}
			}
			r.log.mu.Lock()
			r.log.events, r.log.inService = nil, c.inService
			r.log.mu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := r.n.Recover(ctx); err != nil {
				t.Fatal(err)
			}
			r.mustHistory(t, c.want)
			want := map[int]string{r.port: "aaaa"}
			if c.end == "bbbb" {
				want = map[int]string{r.port + 1: "bbbb"}
			}
			r.mustRun(t, want)
			r.mustEnd(t, c.end)
		})
	}
}

// TestOverlapRefusesTheLivePorts: a release whose second range is where
// the live one serves (its ports moved) restarts instead, and says why.
func TestOverlapRefusesTheLivePorts(t *testing.T) {
	r := newOverlapRig(t, "bbbb", 4_000_000, nil)
	moved := strings.Replace(overlapSpec(r.port+1), fmt.Sprintf("altPort: %d", r.port+2), fmt.Sprintf("altPort: %d", r.port), 1)
	r.withSpec(moved)
	if out, err := sync1(t, r.n); err != nil || !out.Applied {
		t.Fatalf("rollout: %+v, %v", out, err)
	}
	r.mustHistory(t, "drain, switch bbbb, start bbbb@A, stop aaaa@P, nginx A, undrain")
	r.mustNotice(t, fmt.Sprintf("port %d is the live release's and the new one's", r.port))
}

type noCapacity struct{}

func (noCapacity) WaitCapacity(context.Context, int, func(string)) error {
	return errors.New("another node is out")
}

// TestOverlapWithoutCapacityCleansUp: the new range started, but the node
// may not leave service (capacity): it never drains, the new range is
// stopped, the old one serves on, and nothing is halted.
func TestOverlapWithoutCapacityCleansUp(t *testing.T) {
	r := newOverlapRig(t, "bbbb", 4_000_000, nil)
	r.n.d.Capacity = noCapacity{}
	if out, err := sync1(t, r.n); err == nil || out.Applied {
		t.Fatalf("rollout without capacity: %+v, %v", out, err)
	}
	r.mustHistory(t, "start bbbb@A, stop bbbb@A")
	r.mustRun(t, map[int]string{r.port: "aaaa"})
	r.mustEnd(t, "aaaa")
	if len(r.reg.halts) != 0 {
		t.Fatalf("halted %q: a capacity wait is not the revision's fault", r.reg.halts)
	}
	if f := r.n.readPlaces(); f.Unsettled {
		t.Fatalf("workers.json still unsettled: %+v", f)
	}
}

// TestAutoOverlapsByDefault: a spec that names no handover (auto) overlaps
// when nothing stands in the way.
func TestAutoOverlapsByDefault(t *testing.T) {
	r := newOverlapRig(t, "bbbb", 4_000_000, nil)
	auto := strings.Replace(overlapSpec(r.port), ", handover: overlap}", "}", 1)
	r.rel.specs["aaaa"] = []byte(auto)
	r.withSpec(auto)
	if out, err := sync1(t, r.n); err != nil || !out.Applied {
		t.Fatalf("rollout: %+v, %v", out, err)
	}
	r.mustHistory(t, "start bbbb@A, drain, switch bbbb, nginx A, undrain, stop aaaa@P")
	r.mustEnd(t, "bbbb")
}

// TestOverlapFallsBackWhenTheRangeIsTaken: something drover does not know
// listens on the second range; starting there would fail a good release,
// so the rollout restarts in place, and says why.
func TestOverlapFallsBackWhenTheRangeIsTaken(t *testing.T) {
	r := newOverlapRig(t, "bbbb", 4_000_000, nil)
	squatter, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(r.port+1))
	if err != nil {
		t.Fatal(err)
	}
	defer squatter.Close()
	if out, err := sync1(t, r.n); err != nil || !out.Applied {
		t.Fatalf("rollout: %+v, %v", out, err)
	}
	r.mustHistory(t, "drain, switch bbbb, stop aaaa@P, start bbbb@P, nginx P, undrain")
	r.mustEnd(t, "bbbb")
	r.mustNotice(t, fmt.Sprintf("port %d of the second range already answers", r.port+1))
}

// TestAutoFallsBackWhenTheRangesCollide: auto accepts a default second
// range on another port the spec uses (validation fails it only for a
// named overlap); the rollout restarts, naming the collision.
func TestAutoFallsBackWhenTheRangesCollide(t *testing.T) {
	r := newOverlapRig(t, "bbbb", 4_000_000, nil)
	// The default second range, port+1, is nginx's health port.
	collide := strings.Replace(overlapSpec(r.port), ", handover: overlap}", "}", 1)
	collide = strings.Replace(collide, fmt.Sprintf("    altPort: %d\n", r.port+1), "", 1)
	collide += fmt.Sprintf("nginx: {healthPort: %d}\n", r.port+1)
	r.withSpec(collide)
	if out, err := sync1(t, r.n); err != nil || !out.Applied {
		t.Fatalf("rollout: %+v, %v", out, err)
	}
	r.mustHistory(t, "drain, switch bbbb, stop aaaa@P, start bbbb@P, nginx P, undrain")
	r.mustNotice(t, fmt.Sprintf("handover: restart for this rollout: workers[0] (api): second port range %d-%d (altPort defaults to port + instances; set altPort to move it) includes nginx.healthPort", r.port+1, r.port+1))
}
