package units

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"

	sddbus "github.com/coreos/go-systemd/v22/dbus"

	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/spec"
)

// This file holds what the overlap handover (rollout.handover: overlap) asks
// of a supervisor besides Apply:
//
//   - Start(ctx, workers, dir) is Apply without the stops: workers' instances
//     (on the ports their Port and Instances name, which the caller sets to
//     either of the worker's ranges) are brought up and must be healthy;
//     every other instance, of these workers or others, keeps running. The
//     caller then moves nginx to them, and later calls Apply with the same
//     workers to stop the rest.
//   - dir may be the live symlink (S/current) or a release directory
//     (S/releases/<rev>): a new release's instances start from their own
//     release before the live symlink moves. Either way the worker sandbox
//     hides the whole state dir S but the bundle.
//   - Start brings the instances up in parallel, at most startLimit (two
//     per CPU, at most 8) at a time (each is on a port nothing serves from yet, so none must wait
//     for another), instead of one after another as Apply must.
//   - Memory sums the resident memory of workers' running instances.
//
// With the systemd supervisor both ranges are instances of one template
// unit. Start leaves the template as the live instances run it and gives
// each new instance the new release's unit as its own file (besideLive), so
// systemd restarts a live instance that crashes during the overlap from
// its own release, on its own port; the Apply after the switch (or a
// rollback's, or Recover's) writes the template again and removes the
// instance files. The exec supervisor restarts each instance in its own
// directory.

// stateDirOf is the state dir S of a live dir S/current (any name but a
// release's: the live symlink) or a release dir S/releases/<rev>.
func stateDirOf(liveDir string) string {
	parent := path.Dir(liveDir)
	if path.Base(parent) == layout.ReleasesDir && path.Base(liveDir) != layout.CurrentLink {
		return path.Dir(parent)
	}
	return parent
}

// Memory returns the resident memory, in bytes, of workers' running
// instances: systemd's MemoryCurrent of each instance unit, or where the
// memory controller does not count it (cgroup v1 nodes), the VmRSS of its
// main process read from /proc.
func (s *Systemd) Memory(ctx context.Context, workers []spec.Worker) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var sum uint64
	for _, w := range workers {
		for _, port := range w.InstancePorts() {
			unit := InstanceName(w.Name, port)
			var cur uint64
			var pid uint32
			err := s.call(func(c *sddbus.Conn) error {
				p, err := c.GetUnitTypePropertiesContext(ctx, unit, "Service")
				if err != nil {
					return err
				}
				cur, _ = p["MemoryCurrent"].(uint64)
				pid, _ = p["MainPID"].(uint32)
				return nil
			})
			if err != nil {
				return sum, fmt.Errorf("memory of %s: %w", unit, err)
			}
			switch {
			case cur != 0 && cur != math.MaxUint64:
				sum += cur
			case pid != 0:
				rss, err := processRSS(s.cfg.Proc, int(pid))
				if err != nil {
					return sum, fmt.Errorf("memory of %s: %w", unit, err)
				}
				sum += rss
			}
		}
	}
	return sum, nil
}

// Memory returns the VmRSS, in bytes, of workers' running instances.
func (e *Exec) Memory(_ context.Context, workers []spec.Worker) (uint64, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var sum uint64
	for _, w := range workers {
		for _, port := range w.InstancePorts() {
			p := e.procs[InstanceName(w.Name, port)]
			if p == nil {
				continue
			}
			p.mu.Lock()
			pid, running := p.pid, p.running
			p.mu.Unlock()
			if !running || pid == 0 {
				continue
			}
			rss, err := processRSS("/proc", pid)
			if err != nil {
				return sum, fmt.Errorf("memory of worker %s instance on port %d: %w", w.Name, port, err)
			}
			sum += rss
		}
	}
	return sum, nil
}

// processRSS reads VmRSS of pid from proc (a /proc).
func processRSS(proc string, pid int) (uint64, error) {
	f, err := os.Open(filepath.Join(proc, strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("VmRSS %q: %w", v, err)
			}
			return kb * 1024, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, nil // a zombie or kernel thread has no VmRSS
}

// besideLive is the unit files Start writes: where a worker's template
// already runs live instances and the new release's differs, the template
// stays theirs and each new instance gets the new unit as its own file
// (systemd prefers drover-<worker>@<port>.service to the template). So a
// live instance that crashes during the overlap is restarted by systemd
// from its own release, on its own port. The next Apply writes the
// template and removes the instance files; the new instances' unit stays
// the same, so it restarts none of them.
func (s *Systemd) besideLive(workers []spec.Worker, rendered map[string][]byte) (map[string][]byte, error) {
	files := maps.Clone(rendered)
	dir := filepath.Join(s.cfg.Root, s.cfg.UnitsDir)
	for _, w := range workers {
		tmpl := TemplateName(w.Name)
		live, err := os.ReadFile(filepath.Join(dir, tmpl))
		switch {
		case errors.Is(err, os.ErrNotExist):
			continue // a new worker: no live instance to keep
		case err != nil:
			return nil, fmt.Errorf("read unit %s: %w", tmpl, err)
		case bytes.Equal(live, rendered[tmpl]) || !bytes.HasPrefix(live, []byte(managedHeader)):
			continue
		}
		files[tmpl] = live
		// Live instances that run from their own file (an earlier
		// overlap that never settled) keep it.
		own, err := filepath.Glob(filepath.Join(dir, "drover-"+w.Name+"@*.service"))
		if err != nil {
			return nil, err
		}
		for _, f := range own {
			if _, _, ok := parseInstance(filepath.Base(f)); !ok {
				continue
			}
			data, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("read unit %s: %w", filepath.Base(f), err)
			}
			if bytes.HasPrefix(data, []byte(managedHeader)) { // an operator's own file is not ours to keep
				files[filepath.Base(f)] = data
			}
		}
		for _, port := range w.InstancePorts() {
			files[InstanceName(w.Name, port)] = rendered[tmpl]
		}
	}
	return files, nil
}

// fingerprintOf is what an instance of w runs, for its record: its template
// unit, environment file, bundle and secret file in release.
func (s *Systemd) fingerprintOf(files map[string][]byte, w *spec.Worker, release string) string {
	return fingerprint(string(files[TemplateName(w.Name)]), fileID(s.cfg.Root, w.EnvironmentFile),
		bundleID(releaseBundle(s.cfg.Root, release, w.Name)), secretID(s.cfg.Root, release, w))
}

// startAll is Start's part after the unit files: every instance of workers
// ensured in parallel, then each worker's target started.
func (s *Systemd) startAll(ctx context.Context, workers []spec.Worker, files map[string][]byte, liveDir, release string) error {
	var jobs []func(context.Context) error
	for i := range workers {
		w := &workers[i]
		fp := s.fingerprintOf(files, w, release)
		for _, port := range w.InstancePorts() {
			jobs = append(jobs, func(ctx context.Context) error { return s.ensure(ctx, w, port, fp, liveDir) })
		}
	}
	if err := parallel(ctx, startLimit(), jobs); err != nil {
		_ = s.saveRecords()
		return err
	}
	for _, w := range workers {
		target := TargetName(w.Name)
		if err := s.job(ctx, "start", target, func(c *sddbus.Conn, ch chan<- string) (int, error) {
			return c.StartUnitContext(ctx, target, "replace", ch)
		}); err != nil {
			return err
		}
	}
	return s.saveRecords()
}

// startAll is Start's part for the exec supervisor: every instance of
// workers ensured in parallel.
func (e *Exec) startAll(ctx context.Context, workers []spec.Worker, liveDir, release string) error {
	var jobs []func(context.Context) error
	for i := range workers {
		w := &workers[i]
		files := bundleID(releaseBundle("", release, w.Name))
		for _, port := range w.InstancePorts() {
			jobs = append(jobs, func(ctx context.Context) error { return e.ensure(ctx, w, port, liveDir, files) })
		}
	}
	return parallel(ctx, startLimit(), jobs)
}

// proc is the instance name, or nil; the caller holds mu.
func (e *Exec) proc(name string) *proc {
	e.procsMu.Lock()
	defer e.procsMu.Unlock()
	return e.procs[name]
}

// startLimit bounds how many instances Start brings up at once: two per
// CPU (a starting instance mostly waits out its settle window; its
// runtime's start-up burst is a fraction of a second), at most 8, so that
// starting runtimes do not starve a 2-core node that serves meanwhile.
func startLimit() int { return min(2*max(runtime.NumCPU(), 1), 8) }

// parallel runs jobs, at most limit at a time. The first to fail cancels
// the others (their context) and is the error returned, once all ended.
func parallel(ctx context.Context, limit int, jobs []func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	sem := make(chan struct{}, limit)
	for _, job := range jobs {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := job(ctx); err != nil {
				mu.Lock()
				if first == nil {
					first = err
					cancel()
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return first
}
