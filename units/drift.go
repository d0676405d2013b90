package units

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"

	sddbus "github.com/coreos/go-systemd/v22/dbus"

	"github.com/drover-dev/drover/spec"
)

// Drift says, without changing anything, how the node's workers differ from
// what Apply(workers, liveDir) made: a unit file edited or removed by hand, a
// wanted instance that is not running (stopped by hand, or failed for good).
// An instance systemd is restarting on its own (activating) is not drift.
// Apply puts each of them back.
func (s *Systemd) Drift(ctx context.Context, workers []spec.Worker, liveDir string) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	files := map[string][]byte{}
	var instances []string
	instancesOf := map[string][]string{} // template -> its wanted instances
	for _, w := range workers {
		f, err := Render(w, liveDir)
		if err != nil {
			return nil, err
		}
		maps.Copy(files, f)
		for _, p := range w.InstancePorts() {
			instances = append(instances, InstanceName(w.Name, p))
			instancesOf[TemplateName(w.Name)] = append(instancesOf[TemplateName(w.Name)], InstanceName(w.Name, p))
		}
	}
	var drift []string
	dir := filepath.Join(s.cfg.Root, s.cfg.UnitsDir)
	// After an overlap, until the settle's Apply, the template is still
	// the old range's and each wanted instance runs from its own file
	// (besideLive): that is no drift when every one of them holds the
	// wanted unit.
	ownFiles := func(tmpl string) bool {
		for _, inst := range instancesOf[tmpl] {
			if cur, err := os.ReadFile(filepath.Join(dir, inst)); err != nil || !bytes.Equal(cur, files[tmpl]) {
				return false
			}
		}
		return len(instancesOf[tmpl]) > 0
	}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		cur, err := os.ReadFile(filepath.Join(dir, name))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			drift = append(drift, "unit file "+name+" is missing")
		case err != nil:
			return drift, err
		case !bytes.Equal(cur, files[name]) && !ownFiles(name):
			drift = append(drift, "unit file "+name+" was changed")
		}
	}
	var states []sddbus.UnitStatus
	err := s.call(func(c *sddbus.Conn) (err error) {
		states, err = c.ListUnitsByNamesContext(ctx, instances)
		return err
	})
	if err != nil {
		return drift, fmt.Errorf("list worker instances: %w", err)
	}
	for _, u := range states {
		switch u.ActiveState {
		case "active", "activating", "reloading":
		default:
			drift = append(drift, fmt.Sprintf("%s is %s", u.Name, u.ActiveState))
		}
	}
	return drift, nil
}

// Drift says which wanted instances are not running (see Systemd.Drift).
func (e *Exec) Drift(_ context.Context, workers []spec.Worker, _ string) ([]string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var drift []string
	for _, w := range workers {
		for _, p := range w.InstancePorts() {
			name := InstanceName(w.Name, p)
			if pr := e.procs[name]; pr == nil {
				drift = append(drift, name+" is not running")
			}
		}
	}
	return drift, nil
}
