package reconcile

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/drover-dev/drover/health"
	"github.com/drover-dev/drover/internal/atomicfile"
	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/spec"
)

// The overlap handover (rollout.handover: overlap, or auto, the default).
//
// With restart, a rollout restarts each worker instance in place, on its
// port, while the node is drained. With overlap, after the lock and the
// migrations and while the node still serves, the new release's instances
// start on each worker's other port range (port.. or altPort..), from
// their own release directory (the live symlink has not moved), and must
// be healthy; a release whose instances never get healthy is halted there,
// and the node never leaves the LB. Only then the node drains; the drained
// window switches the release (sites), renders nginx's upstreams on the
// new range and reloads, and verifies through nginx (the sites, each
// worker route, each instance once: the instances passed their checks and
// the spec's soak before the drain, so the window holds no soak); the node re-joins
// and hands the lock on, and then Settle stops the old range's instances
// (SIGTERM: in-flight requests finish; none should reach them, since
// nginx moved while the node was drained and the drain waited for the
// requests before it).
//
// Where each release's workers run (its placement: range and directory) is
// kept in STATE/workers.json for the release live and the one the node is
// moving to, and in the journal's fromWorkers and toWorkers while a change
// is in flight. Every Apply of workers or nginx, by the rollout, a
// rollback, Recover or the guard, goes through placedSupervisor and
// placedWeb, which place the workers of the release live at that moment
// (Releases.Current): node.go's steps need not know about ranges. A
// restarted agent so finds the node on one release and one range, and the
// first Apply of that placement stops the other range's instances.
//
// The choice, per rollout: overlap when the spec asks for it (overlap, or
// auto, the default), the node serves a release already (a first deploy
// has nothing to overlap), the supervisor can start instances beside the
// live ones, the new range holds no port the live release serves on, every
// second range is clear of the other workers' and nginx's ports
// (Spec.OverlapProblem; validation enforces it only for a named overlap),
// nothing already answers on the new range, and the node's MemAvailable
// covers the live instances' resident memory once more plus
// overlapMargin; otherwise restart, with an event saying why. restart is
// what a memory-tight 1 GB node names: no second copy of its workers ever
// runs.

// overlapMargin is the memory, beyond a second copy of the live workers'
// resident memory, that an overlap needs to be free: nginx's reload starts
// a second set of its workers, and the page cache must not be squeezed dry.
const overlapMargin = 128 << 20

// HandoverConfig holds what the overlap handover needs of the node.
type HandoverConfig struct {
	// ReleaseDir is release rev's directory as workers see it. Default:
	// LiveDir's sibling releases/<rev> (the artifacts store's layout).
	ReleaseDir func(rev string) string
	// MemInfo is /proc/meminfo, where MemAvailable is read.
	MemInfo string
}

// starter is a Supervisor that can bring up instances beside the running
// ones, and say how much memory instances use (units.Systemd, units.Exec).
type starter interface {
	Start(ctx context.Context, ws []spec.Worker, dir string) error
	Memory(ctx context.Context, ws []spec.Worker) (uint64, error)
}

// placement is where a release's workers run.
type placement struct {
	Rev string `json:"rev"`
	// Alt is true when the instances run on each worker's second range.
	Alt bool `json:"alt,omitempty"`
	// Dir is the directory the instances started from: the release's own
	// with overlap, "" for the live symlink (Config.LiveDir).
	Dir string `json:"dir,omitempty"`
}

func (p placement) String() string {
	r := "port"
	if p.Alt {
		r = "altPort"
	}
	return short(p.Rev) + " on its " + r + " range"
}

// placesFile is STATE/workers.json.
type placesFile struct {
	Places []placement `json:"places"`
	// Unsettled is true from the start of a change until settleWorkers
	// found the node on one placement: instances may run beside it.
	Unsettled bool `json:"unsettled,omitempty"`
}

func (n *Node) placesPath() string { return layout.New(n.cfg.StateDir).Workers() }

func (n *Node) readPlaces() placesFile {
	var f placesFile
	b, err := os.ReadFile(n.placesPath())
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			n.log.Warn("read worker placements", "err", err)
		}
		return f
	}
	if err := json.Unmarshal(b, &f); err != nil {
		n.log.Warn("worker placements unreadable; workers taken to run on their port range from the live release", "err", err)
		return placesFile{Unsettled: true}
	}
	return f
}

// writePlaces records the placements of ps that are not the default (the
// port range from the live symlink), which placeOf assumes for any other.
func (n *Node) writePlaces(unsettled bool, ps ...placement) error {
	f := placesFile{Places: []placement{}, Unsettled: unsettled}
	for _, p := range ps {
		if p.Alt || p.Dir != "" {
			f.Places = append(f.Places, p)
		}
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(n.placesPath(), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write worker placements: %w", err)
	}
	return nil
}

// placeOf is where rev's workers run: as the journal says while a change
// is in flight, else as workers.json says, else on their port range from
// the live symlink (a release put live with restart, or by an older drover).
func (n *Node) placeOf(rev string) placement {
	if e, err := n.journal.read(); err == nil && e != nil {
		switch {
		case e.ToWorkers != nil && rev == e.To:
			return *e.ToWorkers
		case e.FromWorkers != nil && rev == e.From:
			return *e.FromWorkers
		}
	}
	for _, p := range n.readPlaces().Places {
		if p.Rev == rev {
			return p
		}
	}
	return placement{Rev: rev}
}

// place returns ws as placement p runs them, and the directory they start
// from.
func (n *Node) place(p placement, ws []spec.Worker) ([]spec.Worker, string) {
	dir := p.Dir
	if dir == "" {
		dir = n.cfg.LiveDir
	}
	if !p.Alt {
		return ws, dir
	}
	out := make([]spec.Worker, len(ws))
	for i := range ws {
		out[i] = ws[i].OnAlt()
	}
	return out, dir
}

// placedWorkers is ws as the live release's placement runs them.
func (n *Node) placedWorkers(ws []spec.Worker) []spec.Worker {
	if len(ws) == 0 {
		return ws
	}
	cur, _ := n.d.Releases.Current()
	out, _ := n.place(n.placeOf(cur), ws)
	return out
}

func (n *Node) releaseDir(rev string) string {
	if f := n.cfg.Handover.ReleaseDir; f != nil {
		return f(rev)
	}
	return layout.New(filepath.Dir(n.cfg.LiveDir)).Release(rev)
}

// placeParts puts placedSupervisor and placedWeb in front of the node's
// supervisor and web server (see the top of this file).
func (n *Node) placeParts() {
	n.d.Supervisor = &placedSupervisor{n: n, inner: n.d.Supervisor}
	n.d.Web = &placedWeb{n: n, inner: n.d.Web}
}

// rawSupervisor is the supervisor behind placedSupervisor.
func (n *Node) rawSupervisor() Supervisor {
	if p, ok := n.d.Supervisor.(*placedSupervisor); ok {
		return p.inner
	}
	return n.d.Supervisor
}

// placedSupervisor applies the live release's workers where its placement
// says. During an overlap change, the new release's Apply is a Start: the
// old range keeps running until the node is back in the LB (settleWorkers).
type placedSupervisor struct {
	n     *Node
	inner Supervisor
}

func (s *placedSupervisor) Apply(ctx context.Context, ws []spec.Worker, _ string) error {
	cur, _ := s.n.d.Releases.Current()
	p := s.n.placeOf(cur)
	ws, dir := s.n.place(p, ws)
	if st, ok := s.inner.(starter); ok && s.n.overlapInFlight(cur) {
		return st.Start(ctx, ws, dir)
	}
	return s.inner.Apply(ctx, ws, dir)
}

func (s *placedSupervisor) Drift(ctx context.Context, ws []spec.Worker, _ string) ([]string, error) {
	wd, ok := s.inner.(WorkerDrift)
	if !ok {
		return nil, nil
	}
	cur, _ := s.n.d.Releases.Current()
	ws, dir := s.n.place(s.n.placeOf(cur), ws)
	return wd.Drift(ctx, ws, dir)
}

// placedWeb renders nginx's upstreams on the live release's range.
type placedWeb struct {
	n     *Node
	inner WebServer
}

func (w *placedWeb) Check(ctx context.Context, sp *spec.Spec) error { return w.inner.Check(ctx, sp) }

func (w *placedWeb) Apply(ctx context.Context, sp *spec.Spec) error {
	return w.inner.Apply(ctx, w.placed(sp))
}

func (w *placedWeb) Drift(ctx context.Context, sp *spec.Spec) ([]string, error) {
	wd, ok := w.inner.(WebDrift)
	if !ok {
		return nil, nil
	}
	return wd.Drift(ctx, w.placed(sp))
}

func (w *placedWeb) placed(sp *spec.Spec) *spec.Spec {
	cur, _ := w.n.d.Releases.Current()
	p := w.n.placeOf(cur)
	if !p.Alt {
		return sp
	}
	c := *sp
	c.Workers, _ = w.n.place(p, sp.Workers)
	return &c
}

// overlapInFlight reports whether rev is the target of an overlap change
// the journal has in flight (not being rolled back).
func (n *Node) overlapInFlight(rev string) bool {
	e, err := n.journal.read()
	return err == nil && e != nil && e.Handover == spec.HandoverOverlap && rev == e.To && e.Step != StepRollingBack
}

// handover is an overlap change under way: where its two releases run.
type handover struct {
	from, to placement
}

// carry records h in the journal entry e of the change.
func (h *handover) carry(e *entry) {
	if h == nil {
		return
	}
	e.Handover = spec.HandoverOverlap
	from, to := h.from, h.to
	e.FromWorkers, e.ToWorkers = &from, &to
}

// startAhead is the overlap's first half, run after the migrations and
// before the capacity wait and the drain: rev's instances are started on
// the range the live release does not use and must be healthy. It returns
// nil, nil when this rollout restarts instead. When they never get healthy
// the revision is halted, the started instances are stopped, and the node
// never left the LB.
func (n *Node) startAhead(ctx, lockCtx context.Context, from, to string, sp *spec.Spec) (*handover, error) {
	fromPlace := n.placeOf(from)
	toPlace := placement{Rev: to}
	kind := n.handoverKind(ctx, from, to, sp, fromPlace)
	if kind == spec.HandoverOverlap {
		toPlace = placement{Rev: to, Alt: !fromPlace.Alt, Dir: n.releaseDir(to)}
	}
	// Recorded before anything starts: an agent killed from here on finds
	// the live release's placement and stops whatever else runs.
	unsettled := kind == spec.HandoverOverlap || fromPlace != placement{Rev: from}
	if err := n.writePlaces(unsettled, fromPlace, toPlace); err != nil {
		n.setStep(ctx, StepIdle, "", err) // the node's fault: the next sync tries again
		return nil, err
	}
	if kind != spec.HandoverOverlap {
		return nil, nil
	}
	st := n.rawSupervisor().(starter)
	n.setStep(ctx, StepStarting, to, nil)
	ws, dir := n.place(toPlace, sp.Workers)
	start := time.Now()
	err := st.Start(health.WithBudget(lockCtx, sp.Rollout.HealthTimeout.D()), ws, dir)
	if err == nil {
		err = n.soakAhead(lockCtx, sp, ws)
	}
	if err == nil {
		n.log.Info("new release's workers healthy beside the live ones", "rev", short(to), "on", toPlace.String(), "took", time.Since(start).Round(time.Millisecond))
		n.reportOverlapMemory(ctx, st, sp, fromPlace, toPlace)
		return &handover{from: fromPlace, to: toPlace}, nil
	}
	err = fmt.Errorf("workers of %s on their second range: %w", short(to), err)
	if nf := n.nodeFault(ctx, err); nf != nil {
		n.backoff(to)
		n.setStep(ctx, StepIdle, "", nf)
	} else if ctx.Err() == nil && lockCtx.Err() == nil {
		// The release's own fault, caught before the drain.
		n.halt(ctx, to, err)
	} else {
		n.setStep(ctx, StepIdle, "", err)
	}
	n.settle(ctx)
	return nil, err
}

// handoverKind decides overlap or restart for one rollout (see the top of
// this file), and says why when the spec's overlap is not possible.
func (n *Node) handoverKind(ctx context.Context, from, to string, sp *spec.Spec, fromPlace placement) string {
	if sp.Rollout.Handover == spec.HandoverRestart || len(sp.Workers) == 0 {
		return spec.HandoverRestart
	}
	st, ok := n.rawSupervisor().(starter)
	switch {
	case from == "":
		return spec.HandoverRestart // a first deploy: nothing serves
	case !ok:
		if sp.Rollout.Handover == spec.HandoverOverlap { // auto says nothing: restart is all there is
			n.notice(ctx, to, "handover: restart, since this node's supervisor cannot start instances beside the live ones")
		}
		return spec.HandoverRestart
	}
	fromSpec := n.specOrNil(from)
	if fromSpec == nil {
		// Without the live spec the new range cannot be checked against
		// the live ports: starting on one would stop a serving instance.
		n.notice(ctx, to, "handover: restart for this rollout: the live release's spec cannot be read to check its ports")
		return spec.HandoverRestart
	}
	ws, _ := n.place(fromPlace, fromSpec.Workers)
	// The new range must be free: a spec that moved a worker's ports onto
	// the ones the live release serves on cannot overlap.
	next, _ := n.place(placement{Rev: to, Alt: !fromPlace.Alt}, sp.Workers)
	if port, ok := sharedPort(ws, next); ok {
		n.notice(ctx, to, fmt.Sprintf("handover: restart for this rollout: port %d is the live release's and the new one's", port))
		return spec.HandoverRestart
	}
	// auto accepts second ranges that collide (spec validation fails them
	// only for a named overlap); and a range can be taken by a process
	// drover does not know. Either would make good instances fail to
	// start, and halt a good revision: restart instead, and say why.
	if p := sp.OverlapProblem(); p != "" {
		n.notice(ctx, to, "handover: restart for this rollout: "+p)
		return spec.HandoverRestart
	}
	if port, ok := n.portTaken(ctx, next); ok {
		n.notice(ctx, to, fmt.Sprintf("handover: restart for this rollout: port %d of the second range already answers (another process listens there)", port))
		return spec.HandoverRestart
	}
	live, err := st.Memory(ctx, ws)
	if err != nil {
		n.log.Warn("live workers' memory unreadable; overlapping anyway", "err", err)
		return spec.HandoverOverlap
	}
	avail, err := memAvailable(n.cfg.Handover.MemInfo)
	if err != nil {
		n.log.Warn("MemAvailable unreadable; overlapping anyway", "err", err)
		return spec.HandoverOverlap
	}
	if avail < live+overlapMargin {
		n.notice(ctx, to, fmt.Sprintf("handover: restart for this rollout: MemAvailable %d MiB is less than the live workers' %d MiB plus %d MiB",
			avail>>20, live>>20, overlapMargin>>20))
		return spec.HandoverRestart
	}
	return spec.HandoverOverlap
}

// soakOf is the soak a verification waits: the spec's, except while an
// overlap change verifies in the drained window, whose new instances soaked
// before the drain (soakAhead).
func (n *Node) soakOf(sp *spec.Spec) time.Duration {
	if cur, _ := n.d.Releases.Current(); n.overlapInFlight(cur) {
		return 0
	}
	return sp.Rollout.Soak.D()
}

// successesOf is how many good answers in a row an instance check of w
// needs: its spec's, except while an overlap change verifies in the drained
// window: its instances passed theirs, and the soak, before the drain.
func (n *Node) successesOf(w *spec.Worker) int {
	if cur, _ := n.d.Releases.Current(); n.overlapInFlight(cur) {
		return 1
	}
	return w.Health.Successes
}

// soakAhead is the soak of an overlap's new instances, before the drain:
// they must stay up for the spec's soak and then answer again.
func (n *Node) soakAhead(ctx context.Context, sp *spec.Spec, ws []spec.Worker) error {
	soak := sp.Rollout.Soak.D()
	if soak <= 0 {
		return nil
	}
	select {
	case <-time.After(soak):
	case <-ctx.Done():
		return ctx.Err()
	}
	sctx, cancel := context.WithTimeout(ctx, sp.Rollout.HealthTimeout.D())
	defer cancel()
	if err := n.waitChecks(sctx, n.instanceChecks(ws)); err != nil {
		return fmt.Errorf("health checks after %s of soak: %w", soak, err)
	}
	return nil
}

// instanceChecks is one good answer from each instance of ws.
func (n *Node) instanceChecks(ws []spec.Worker) []health.Check {
	var cs []health.Check
	for _, w := range ws {
		for i, port := range w.InstancePorts() {
			cs = append(cs, health.Check{
				Name:   fmt.Sprintf("worker %s instance %d (port %d)", w.Name, i, port),
				URL:    "http://" + net.JoinHostPort(n.cfg.WorkerHost, strconv.Itoa(port)) + w.Health.Path,
				Status: w.Health.Status, Successes: 1, Interval: w.Health.Interval.D(), Timeout: w.Health.Timeout.D(),
			})
		}
	}
	return cs
}

// sharedPort returns a port both a and b have instances on.
func sharedPort(a, b []spec.Worker) (int, bool) {
	used := map[int]bool{}
	for _, w := range a {
		for _, p := range w.InstancePorts() {
			used[p] = true
		}
	}
	for _, w := range b {
		for _, p := range w.InstancePorts() {
			if used[p] {
				return p, true
			}
		}
	}
	return 0, false
}

// portTaken returns the first instance port of ws on which something
// already accepts connections on the workers' host.
func (n *Node) portTaken(ctx context.Context, ws []spec.Worker) (int, bool) {
	var d net.Dialer
	for _, w := range ws {
		for _, p := range w.InstancePorts() {
			dctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			c, err := d.DialContext(dctx, "tcp", net.JoinHostPort(n.cfg.WorkerHost, strconv.Itoa(p)))
			cancel()
			if err == nil {
				c.Close()
				return p, true
			}
		}
	}
	return 0, false
}

// reportOverlapMemory logs both ranges' resident memory while they overlap.
func (n *Node) reportOverlapMemory(ctx context.Context, st starter, sp *spec.Spec, fromPlace, toPlace placement) {
	newWs, _ := n.place(toPlace, sp.Workers)
	newMem, err := st.Memory(ctx, newWs)
	if err != nil {
		n.log.Warn("new workers' memory", "err", err)
		return
	}
	var oldMem uint64
	if fromSpec := n.specOrNil(fromPlace.Rev); fromSpec != nil {
		oldWs, _ := n.place(fromPlace, fromSpec.Workers)
		oldMem, _ = st.Memory(ctx, oldWs)
	}
	avail, _ := memAvailable(n.cfg.Handover.MemInfo)
	n.log.Info("overlap memory", "rev", short(toPlace.Rev), "liveMiB", oldMem>>20, "newMiB", newMem>>20, "availableMiB", avail>>20)
}

// settleWorkers stops what runs beside the live release's placement (the
// other range, after an overlap) once no change is in flight, and forgets
// the other release's placement. It does nothing while the journal holds a
// change, or when workers.json says the node is settled.
func (n *Node) settleWorkers(ctx context.Context) error {
	if e, err := n.journal.read(); err != nil || e != nil {
		return err
	}
	cur, err := n.d.Releases.Current()
	if err != nil || cur == "" {
		return err
	}
	if !n.readPlaces().Unsettled {
		return nil
	}
	p := n.placeOf(cur)
	sp := n.specOrNil(cur)
	if sp == nil {
		return fmt.Errorf("spec of live release %s is unreadable", short(cur))
	}
	ws, dir := n.place(p, sp.Workers)
	start := time.Now()
	if err := n.rawSupervisor().Apply(health.WithBudget(ctx, sp.Rollout.HealthTimeout.D()), ws, dir); err != nil {
		return fmt.Errorf("workers of %s: %w", short(cur), err)
	}
	n.log.Info("workers settled on the live release", "rev", short(cur), "on", p.String(), "took", time.Since(start).Round(time.Millisecond))
	return n.writePlaces(false, p)
}

// Settle stops the old release's instances after an overlap handover put
// a new one live (see settleWorkers). Loop calls it after each revision it
// put live, once the node is back in the LB and the rollout lock handed
// on, so that neither the drained window nor the next node waits for the
// old instances to finish their requests and exit; Recover calls it too.
func (n *Node) Settle(ctx context.Context) {
	n.live.Lock()
	defer n.live.Unlock()
	n.settle(ctx)
}

// settle is settleWorkers, its failure logged: the node serves the live
// release either way, and the next settle (a rollout's end, Recover)
// tries again.
func (n *Node) settle(ctx context.Context) {
	if err := n.settleWorkers(context.WithoutCancel(ctx)); err != nil {
		n.log.Error("stop the workers beside the live release", "err", err)
	}
}

// routeChecks are worker routes checked through nginx, as users reach
// them, while an overlap change verifies: GET the worker's health path on
// each route it falls under, with the route's server name.
func (n *Node) routeChecks(sp *spec.Spec) []health.Check {
	if len(sp.Workers) == 0 {
		return nil
	}
	cur, _ := n.d.Releases.Current()
	if !n.overlapInFlight(cur) {
		return nil
	}
	var cs []health.Check
	for _, w := range sp.Workers {
		for _, r := range w.Routes {
			if !strings.HasPrefix(w.Health.Path, r.Path) {
				continue
			}
			cs = append(cs, health.Check{
				Name:      fmt.Sprintf("worker %s through nginx at %s%s", w.Name, r.ServerName, r.Path),
				URL:       strings.TrimSuffix(n.cfg.SiteURL(sp), "/") + w.Health.Path,
				Host:      strings.Replace(r.ServerName, "*", "health-check", 1),
				Status:    w.Health.Status,
				Successes: 1,
				Interval:  200 * time.Millisecond,
				Timeout:   w.Health.Timeout.D(),
			})
		}
	}
	return cs
}

// memAvailable reads MemAvailable, in bytes, from path (/proc/meminfo).
func memAvailable(path string) (uint64, error) {
	if path == "" {
		path = "/proc/meminfo"
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "MemAvailable:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: MemAvailable %q: %w", path, v, err)
			}
			return kb << 10, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s has no MemAvailable", path)
}
