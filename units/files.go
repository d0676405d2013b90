package units

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/drover-dev/drover/internal/atomicfile"
)

// syncFiles makes the units directory hold exactly the drover files in want,
// each target enabled for boot (a multi-user.target.wants symlink, as
// `systemctl enable` makes), and reports whether anything changed. Files are
// written atomically and only when their content differs; only files that
// carry drover's header are ever removed.
func (s *Systemd) syncFiles(want map[string][]byte) (changed bool, err error) {
	dir := filepath.Join(s.cfg.Root, s.cfg.UnitsDir)
	wantsDir := filepath.Join(dir, "multi-user.target.wants")
	if err := os.MkdirAll(wantsDir, 0o755); err != nil {
		return false, err
	}
	for name, data := range want {
		p := filepath.Join(dir, name)
		if cur, err := os.ReadFile(p); err == nil && bytes.Equal(cur, data) {
			continue
		}
		if err := atomicfile.WriteFile(p, data, 0o644); err != nil {
			return changed, fmt.Errorf("write unit %s: %w", name, err)
		}
		s.cfg.Log.Info("unit file written", "unit", name)
		changed = true
	}
	for name := range want {
		if !strings.HasSuffix(name, ".target") {
			continue
		}
		link, target := filepath.Join(wantsDir, name), "../"+name
		if cur, err := os.Readlink(link); err == nil && cur == target {
			continue
		}
		if err := symlinkAtomic(target, link); err != nil {
			return changed, fmt.Errorf("enable %s: %w", name, err)
		}
		changed = true
	}

	entries, err := os.ReadDir(dir)
	if err != nil {
		return changed, err
	}
	for _, e := range entries {
		name := e.Name()
		if want[name] != nil || !ours(name) || !e.Type().IsRegular() || !managed(filepath.Join(dir, name)) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			return changed, fmt.Errorf("remove unit %s: %w", name, err)
		}
		s.cfg.Log.Info("unit file removed", "unit", name)
		changed = true
	}
	links, err := os.ReadDir(wantsDir)
	if err != nil {
		return changed, err
	}
	for _, e := range links {
		name := e.Name()
		if want[name] != nil || !ours(name) {
			continue
		}
		if cur, err := os.Readlink(filepath.Join(wantsDir, name)); err != nil || cur != "../"+name {
			continue
		}
		if err := os.Remove(filepath.Join(wantsDir, name)); err != nil {
			return changed, err
		}
		changed = true
	}
	if changed {
		_ = atomicfile.SyncDir(dir)
	}
	return changed, nil
}

// ours matches the names drover gives worker units: templates, targets,
// and the instance units Start writes beside a live template
// (drover-<worker>@<port>.service).
func ours(name string) bool {
	return strings.HasPrefix(name, "drover-") &&
		(strings.HasSuffix(name, ".service") && strings.Contains(name, "@") || strings.HasSuffix(name, ".target"))
}

// managed reports whether the file starts with drover's header.
func managed(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	line, _ := bufio.NewReader(f).ReadString('\n')
	return line == managedHeader
}

func symlinkAtomic(target, link string) error {
	tmp := filepath.Join(filepath.Dir(link), "."+filepath.Base(link)+".tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, link); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
