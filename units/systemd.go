package units

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"

	"github.com/drover-dev/drover/health"
	"github.com/drover-dev/drover/internal/atomicfile"
	"github.com/drover-dev/drover/internal/command"
	"github.com/drover-dev/drover/internal/sdbus"
	"github.com/drover-dev/drover/spec"
)

// SystemdConfig configures the systemd supervisor.
type SystemdConfig struct {
	Config
	// Socket is systemd's private bus. Default /run/systemd/private.
	Socket string
	// UnitsDir receives the unit files. Default /etc/systemd/system.
	UnitsDir string
	// StateFile records what each instance was last started with and the
	// release it was started in, so that Apply restarts only what changed
	// and ReleasesInUse survives an agent restart. Default
	// /var/lib/drover/units.json.
	StateFile string
	// Root is prepended to every path drover itself reads or writes (units
	// dir, state file, live dir, environment files), never to the paths
	// written into unit files. Empty on a server; a test node's root in
	// tests.
	Root string
	// Journal is the command that runs journalctl, to quote a failed
	// instance's last lines. Default ["journalctl"].
	Journal []string
	// Proc is /proc as it shows the node's processes, where Memory reads
	// an instance's VmRSS when systemd does not count its memory. Default
	// /proc; a test node's /proc/<its PID 1>/root/proc in tests.
	Proc string
}

// Defaults of SystemdConfig.
const (
	DefaultSocket    = "/run/systemd/private"
	DefaultUnitsDir  = "/etc/systemd/system"
	DefaultStateFile = "/var/lib/drover/units.json"
)

// Systemd runs workers as systemd services: one template unit
// drover-<worker>@.service whose instances are named by port, and a
// drover-<worker>.target, enabled for boot, that wants them (instances are
// named by port, not by index as DESIGN.md sketched: PORT=%i then needs no
// wrapper, and a new port is a new instance). Unit files are written
// atomically and only when changed, followed by one daemon-reload. What each
// instance was last started with (unit, environment file, bundle) and the
// release directory it started in are recorded in StateFile, so a restarted
// agent restarts only what changed and still knows which releases are in
// use.
// It talks to systemd over its private D-Bus socket, reads every job's
// result, and reconnects when the connection drops. The services outlive
// the agent: Close only closes the connection.
type Systemd struct {
	cfg SystemdConfig

	mu     sync.Mutex // one Apply at a time
	connMu sync.Mutex // conn, which Start's parallel ensures share
	conn   *sddbus.Conn
	saveMu sync.Mutex // one write of StateFile at a time, of the latest records

	// recMu guards records, which ReleasesInUse reads while Apply runs.
	recMu   sync.Mutex
	records map[string]record // instance unit -> what it was started with
}

// record is what an instance was last started with, as StateFile keeps it.
type record struct {
	// Fingerprint of its template unit, environment file and bundle.
	Fingerprint string `json:"fingerprint"`
	// Release is the directory the live symlink pointed at when it was
	// started, as the node sees it: its WorkingDirectory resolved there.
	Release string `json:"release"`
}

// NewSystemd returns a systemd supervisor; it connects on first use.
func NewSystemd(cfg SystemdConfig) *Systemd {
	cfg.Config = cfg.Config.withDefaults()
	if cfg.Socket == "" {
		cfg.Socket = DefaultSocket
	}
	if cfg.UnitsDir == "" {
		cfg.UnitsDir = DefaultUnitsDir
	}
	if cfg.StateFile == "" {
		cfg.StateFile = DefaultStateFile
	}
	if cfg.Proc == "" {
		cfg.Proc = "/proc"
	}
	if cfg.Journal == nil {
		cfg.Journal = []string{"journalctl"}
	}
	return &Systemd{cfg: cfg}
}

// Close closes the D-Bus connection; the workers keep running.
func (s *Systemd) Close(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
	return nil
}

// Apply brings the services to exactly workers; see the package doc.
func (s *Systemd) Apply(ctx context.Context, workers []spec.Worker, liveDir string) error {
	return s.apply(ctx, workers, liveDir, false)
}

// Start brings up workers' instances as Apply does, but stops nothing
// else (see the package doc: the overlap handover).
func (s *Systemd) Start(ctx context.Context, workers []spec.Worker, liveDir string) error {
	return s.apply(ctx, workers, liveDir, true)
}

func (s *Systemd) apply(ctx context.Context, workers []spec.Worker, liveDir string, additive bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := checkWorkers(workers); err != nil {
		return err
	}
	rendered := map[string][]byte{}
	for _, w := range workers {
		if err := refuseRootUser(s.cfg.Root, &w); err != nil && !s.cfg.AllowRoot {
			return err
		}
		f, err := Render(w, liveDir)
		if err != nil {
			return err
		}
		for name, data := range f {
			rendered[name] = data
		}
	}
	if err := s.loadRecords(); err != nil {
		return err
	}
	files := rendered
	if additive {
		var err error
		if files, err = s.besideLive(workers, rendered); err != nil {
			return err
		}
	}
	changed, err := s.syncFiles(files)
	if err != nil {
		return err
	}
	if changed {
		if err := s.call(func(c *sddbus.Conn) error { return c.ReloadContext(ctx) }); err != nil {
			return fmt.Errorf("systemd daemon-reload: %w", err)
		}
		s.cfg.Log.Info("worker units changed; systemd reloaded")
	}

	var loaded []sddbus.UnitStatus
	err = s.call(func(c *sddbus.Conn) (err error) {
		loaded, err = c.ListUnitsByPatternsContext(ctx, nil, []string{"drover-*@*.service", "drover-*.target"})
		return err
	})
	if err != nil {
		return fmt.Errorf("list drover units: %w", err)
	}
	wanted := map[string]bool{}
	portOwner := map[int]bool{}
	keep := map[string]bool{}
	for _, w := range workers {
		keep[w.Name] = true
		wanted[TargetName(w.Name)] = true
		for _, p := range w.InstancePorts() {
			wanted[InstanceName(w.Name, p)] = true
			portOwner[p] = true
		}
	}
	// Instances no longer wanted whose port a wanted instance needs go first.
	for _, u := range loaded {
		if _, port, ok := parseInstance(u.Name); ok && !wanted[u.Name] && portOwner[port] && isUp(u.ActiveState) {
			if err := s.stop(ctx, u.Name); err != nil {
				return err
			}
		}
	}

	release := liveRelease(s.cfg.Root, liveDir)
	if additive {
		return s.startAll(ctx, workers, rendered, liveDir, release)
	}
	for i := range workers {
		w := &workers[i]
		fp := s.fingerprintOf(rendered, w, release)
		for _, port := range w.InstancePorts() {
			if err := s.ensure(ctx, w, port, fp, liveDir); err != nil {
				return err
			}
		}
		target := TargetName(w.Name)
		if err := s.job(ctx, "start", target, func(c *sddbus.Conn, ch chan<- string) (int, error) {
			return c.StartUnitContext(ctx, target, "replace", ch)
		}); err != nil {
			return err
		}
		for _, u := range loaded {
			if name, _, ok := parseInstance(u.Name); ok && name == w.Name && !wanted[u.Name] {
				if err := s.stop(ctx, u.Name); err != nil {
					return err
				}
			}
		}
	}

	// Workers that left the list: their target first (which stops the
	// instances it is part of), then any instance left.
	slices.SortFunc(loaded, func(a, b sddbus.UnitStatus) int {
		return boolInt(strings.HasSuffix(b.Name, ".target")) - boolInt(strings.HasSuffix(a.Name, ".target"))
	})
	for _, u := range loaded {
		if wanted[u.Name] || keep[workerOf(u.Name)] {
			continue
		}
		if err := s.stop(ctx, u.Name); err != nil {
			return err
		}
		s.cfg.Log.Info("removed worker unit stopped", "unit", u.Name)
	}
	s.recMu.Lock()
	for unit := range s.records {
		if !wanted[unit] {
			delete(s.records, unit)
		}
	}
	s.recMu.Unlock()
	return s.saveRecords()
}

// ReleasesInUse lists the release directories that instances were started
// in (see the package doc), as drover sees them (under Root). It reads the
// state file when no Apply has run yet.
func (s *Systemd) ReleasesInUse() []string {
	if err := s.loadRecords(); err != nil {
		return nil
	}
	s.recMu.Lock()
	defer s.recMu.Unlock()
	var dirs []string
	for _, r := range s.records {
		if r.Release != "" {
			dirs = append(dirs, filepath.Join(s.cfg.Root, r.Release))
		}
	}
	slices.Sort(dirs)
	return slices.Compact(dirs)
}

func (s *Systemd) record(unit string) (record, bool) {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	r, ok := s.records[unit]
	return r, ok
}

func (s *Systemd) setRecord(unit string, r record) {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	s.records[unit] = r
}

func (s *Systemd) dropRecord(unit string) {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	delete(s.records, unit)
}

// ensure makes the instance on port run fingerprint fp and be healthy.
func (s *Systemd) ensure(ctx context.Context, w *spec.Worker, port int, fp, liveDir string) error {
	unit := InstanceName(w.Name, port)
	log := s.cfg.Log.With("worker", w.Name, "unit", unit)
	check := s.cfg.healthCheck(w, port)
	st, err := s.state(ctx, unit)
	if err != nil {
		return fmt.Errorf("worker %s instance on port %d: %w", w.Name, port, err)
	}
	rec, _ := s.record(unit)
	switch {
	case rec.Fingerprint != fp || st.Active != "active" || st.Sub != "running":
	case !present(s.cfg.Root, rec.Release, w.Name):
		log.Warn("worker instance unchanged but the release it started in is gone; restarting it", "release", rec.Release)
	default:
		once := check
		once.Successes = 1
		cctx, cancel := context.WithTimeout(ctx, 2*max(check.Timeout, time.Second))
		err := health.Wait(cctx, []health.Check{once})
		cancel()
		if err == nil {
			return nil
		}
		log.Warn("worker instance unchanged but not healthy; restarting it", "err", err)
	}
	// Until it is healthy the instance counts as changed; what it starts
	// in is known now: systemd resolves the symlink on start.
	release := liveRelease(s.cfg.Root, liveDir)
	s.setRecord(unit, record{Release: release})
	if err := s.saveRecords(); err != nil {
		return err
	}

	ictx, cancel := s.cfg.instanceContext(ctx)
	defer cancel()
	start := time.Now()
	// A unit that crash-looped into its start limit refuses to start.
	_ = s.call(func(c *sddbus.Conn) error { return c.ResetFailedUnitContext(ictx, unit) })
	err = s.job(ictx, "restart", unit, func(c *sddbus.Conn, ch chan<- string) (int, error) {
		return c.RestartUnitContext(ictx, unit, "replace", ch)
	})
	if errors.Is(err, errJobLost) {
		log.Warn("systemd connection lost while restarting; judging by the unit's state")
		err = nil
	}
	if err != nil {
		return s.instanceError(w, port, unit, err)
	}
	base, err := s.state(ictx, unit)
	if err != nil {
		return s.instanceError(w, port, unit, err)
	}
	probe := func(ctx context.Context) error {
		st, err := s.state(ctx, unit)
		switch {
		case err != nil:
			return err
		case st.Active != "active" || st.Sub != "running":
			return fmt.Errorf("%w (%s/%s)", errDown, st.Active, st.Sub)
		case st.NRestarts != base.NRestarts:
			return fmt.Errorf("%w and systemd restarted it (NRestarts %d -> %d)", errDown, base.NRestarts, st.NRestarts)
		}
		return nil
	}
	if err := s.cfg.settle(ictx, check, start, probe); err != nil {
		return s.instanceError(w, port, unit, err)
	}
	s.setRecord(unit, record{Fingerprint: fp, Release: release})
	if err := s.saveRecords(); err != nil {
		return err
	}
	log.Info("worker instance restarted and healthy", "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// stop stops unit, waits for the job, and clears a failed state.
func (s *Systemd) stop(ctx context.Context, unit string) error {
	err := s.job(ctx, "stop", unit, func(c *sddbus.Conn, ch chan<- string) (int, error) {
		return c.StopUnitContext(ctx, unit, "replace", ch)
	})
	if err != nil && !errors.Is(err, errJobLost) && !noSuchUnit(err) {
		return err
	}
	_ = s.call(func(c *sddbus.Conn) error { return c.ResetFailedUnitContext(ctx, unit) })
	s.dropRecord(unit)
	return nil
}

// instanceError explains why an instance is not healthy: the cause, what
// systemd says about it, and its last journal lines.
func (s *Systemd) instanceError(w *spec.Worker, port int, unit string, cause error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	state := ""
	match := []string{"-u", unit}
	if st, err := s.state(ctx, unit); err == nil {
		state = "; systemd: " + st.String()
		if st.Invocation != "" {
			// The last run only: its own output and systemd's words on it.
			match = []string{"_SYSTEMD_INVOCATION_ID=" + st.Invocation, "+", "INVOCATION_ID=" + st.Invocation}
		}
	}
	var lines []string
	argv := append(slices.Clone(s.cfg.Journal), "--no-pager", "-o", "cat", "-n", "10")
	argv = append(argv, match...)
	if out, err := command.Run(ctx, command.Cmd{Argv: argv, Timeout: 3 * time.Second}); err == nil {
		lines = tailLines(string(out), 10)
	}
	return fmt.Errorf("worker %s instance on port %d (%s) not healthy: %w%s%s", w.Name, port, unit, cause, state, formatOutput(lines))
}

// unitState is what Apply reads of an instance.
type unitState struct {
	Load, Active, Sub, Result string
	NRestarts                 uint32
	ExecCode, ExecStatus      int32
	Invocation                string // hex InvocationID of the last run
}

func (u unitState) String() string {
	s := fmt.Sprintf("%s/%s, NRestarts=%d", u.Active, u.Sub, u.NRestarts)
	if u.Result != "" && u.Result != "success" {
		s += ", result " + u.Result
	}
	switch u.ExecCode {
	case 1: // CLD_EXITED
		s += fmt.Sprintf(", main process exited with status %d", u.ExecStatus)
	case 2, 3: // CLD_KILLED, CLD_DUMPED
		s += fmt.Sprintf(", main process killed by signal %d", u.ExecStatus)
	}
	if u.Load != "" && u.Load != "loaded" {
		s += ", " + u.Load
	}
	return s
}

func (s *Systemd) state(ctx context.Context, unit string) (unitState, error) {
	var st unitState
	err := s.call(func(c *sddbus.Conn) error {
		p, err := c.GetUnitPropertiesContext(ctx, unit)
		if err != nil {
			return err
		}
		sp, err := c.GetUnitTypePropertiesContext(ctx, unit, "Service")
		if err != nil {
			return err
		}
		st.Load, _ = p["LoadState"].(string)
		st.Active, _ = p["ActiveState"].(string)
		st.Sub, _ = p["SubState"].(string)
		if id, ok := p["InvocationID"].([]byte); ok {
			st.Invocation = hex.EncodeToString(id)
		}
		st.Result, _ = sp["Result"].(string)
		st.NRestarts, _ = sp["NRestarts"].(uint32)
		st.ExecCode, _ = sp["ExecMainCode"].(int32)
		st.ExecStatus, _ = sp["ExecMainStatus"].(int32)
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("read state of %s: %w", unit, err)
	}
	return st, nil
}

// errJobLost: the connection dropped before the job's result arrived.
var errJobLost = errors.New("systemd connection lost before the job finished")

// job starts a systemd job and waits for its result, which must be "done".
// The result channel is buffered so that go-systemd never blocks on it,
// and always read unless ctx ends or the connection drops first.
func (s *Systemd) job(ctx context.Context, verb, unit string, start func(*sddbus.Conn, chan<- string) (int, error)) error {
	ch := make(chan string, 1)
	var conn *sddbus.Conn
	err := s.call(func(c *sddbus.Conn) error {
		conn = c
		_, err := start(c, ch)
		return err
	})
	if err != nil {
		return fmt.Errorf("%s %s: %w", verb, unit, err)
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case r := <-ch:
			if r != "done" {
				return fmt.Errorf("%s %s: job %s", verb, unit, r)
			}
			return nil
		case <-tick.C:
			if !conn.Connected() {
				return errJobLost
			}
		case <-ctx.Done():
			return fmt.Errorf("%s %s: waiting for the job: %w", verb, unit, ctx.Err())
		}
	}
}

// call runs f on a live connection. When f fails because the connection
// dropped, it reconnects and runs f once more.
func (s *Systemd) call(f func(*sddbus.Conn) error) error {
	c, err := s.bus()
	if err != nil {
		return err
	}
	err = f(c)
	if err == nil || c.Connected() {
		return err
	}
	s.cfg.Log.Warn("systemd connection lost; reconnecting", "err", err)
	if c, err = s.bus(); err != nil {
		return err
	}
	if err = f(c); err != nil && !c.Connected() {
		return &UnreachableError{Socket: s.cfg.Socket, Err: err}
	}
	return err
}

// Ping reports whether systemd answers on its bus now. The agent asks it
// before blaming a release for a failed switch: a node whose systemd went
// away (the host shutting down, systemd stopping) fails every release.
func (s *Systemd) Ping(ctx context.Context) error {
	return s.call(func(c *sddbus.Conn) error {
		// The root slice always exists while systemd runs.
		_, err := c.GetUnitPropertyContext(ctx, "-.slice", "Id")
		return err
	})
}

// UnreachableError says systemd itself could not be reached: a fault of the
// node, not of the release it was asked to run, so the agent must not halt
// the revision for the whole cluster because of it.
type UnreachableError struct {
	Socket string
	Err    error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("connect to systemd at %s: %v", e.Socket, e.Err)
}
func (e *UnreachableError) Unwrap() error { return e.Err }

// NodeFault marks the error as the node's (reconcile matches the method).
func (e *UnreachableError) NodeFault() bool { return true }

func (s *Systemd) bus() (*sddbus.Conn, error) {
	s.connMu.Lock() // Start ensures instances in parallel
	defer s.connMu.Unlock()
	if s.conn != nil && s.conn.Connected() {
		return s.conn, nil
	}
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
	c, err := sdbus.Dial(s.cfg.Socket)
	if err != nil {
		return nil, &UnreachableError{Socket: s.cfg.Socket, Err: err}
	}
	s.conn = c
	return c, nil
}

func (s *Systemd) loadRecords() error {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	if s.records != nil {
		return nil
	}
	s.records = map[string]record{}
	b, err := os.ReadFile(filepath.Join(s.cfg.Root, s.cfg.StateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err == nil {
		err = json.Unmarshal(b, &s.records)
	}
	var old map[string]string
	if err != nil && json.Unmarshal(b, &old) == nil {
		// Fingerprints only, of a drover that restarted every instance on
		// every release: each one runs from the live release.
		s.cfg.Log.Info("worker state file of an older drover; every instance will be restarted once")
		s.records = map[string]record{}
		return nil
	}
	if err != nil {
		// Unknown records only cost restarts.
		s.cfg.Log.Warn("worker state file unreadable; every instance will be restarted", "err", err)
		s.records = map[string]record{}
	}
	return nil
}

func (s *Systemd) saveRecords() error {
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	s.recMu.Lock()
	b, err := json.MarshalIndent(s.records, "", "  ")
	s.recMu.Unlock()
	if err != nil {
		return err
	}
	p := filepath.Join(s.cfg.Root, s.cfg.StateFile)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(p, append(b, '\n'), 0o600)
}

// parseInstance splits drover-<worker>@<port>.service.
func parseInstance(unit string) (worker string, port int, ok bool) {
	rest, ok := strings.CutPrefix(unit, "drover-")
	if !ok {
		return "", 0, false
	}
	rest, ok = strings.CutSuffix(rest, ".service")
	if !ok {
		return "", 0, false
	}
	worker, p, ok := strings.Cut(rest, "@")
	if !ok {
		return "", 0, false
	}
	port, err := strconv.Atoi(p)
	return worker, port, err == nil
}

// workerOf names the worker of an instance or target unit.
func workerOf(unit string) string {
	if w, _, ok := parseInstance(unit); ok {
		return w
	}
	rest, _ := strings.CutPrefix(unit, "drover-")
	return strings.TrimSuffix(rest, ".target")
}

// noSuchUnit: systemd no longer knows the unit (stopped and unloaded).
func noSuchUnit(err error) bool {
	var e dbus.Error
	return errors.As(err, &e) && e.Name == "org.freedesktop.systemd1.NoSuchUnit"
}

func isUp(activeState string) bool {
	return activeState != "inactive" && activeState != "failed"
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
