package units

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// maxExposure is the highest `systemd-analyze security` exposure a rendered
// worker unit may have (issue 19: 8.3 "EXPOSED" before the sandbox).
const maxExposure = 4.5

var exposureRE = regexp.MustCompile(`Overall exposure level for \S+: ([0-9]+\.[0-9]) `)

// TestGoldenUnitsExposure runs systemd's own assessment of every rendered
// worker unit in testdata (offline: the files as they are) and requires each
// at or below maxExposure.
func TestGoldenUnitsExposure(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze is not installed: run scripts/setup.sh (Debian package systemd)")
	}
	goldens, err := filepath.Glob("testdata/*.service")
	if err != nil || len(goldens) == 0 {
		t.Fatalf("no golden units: %v", err)
	}
	dir := t.TempDir()
	for _, g := range goldens {
		name := strings.TrimSuffix(filepath.Base(g), ".service")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(g)
			if err != nil {
				t.Fatal(err)
			}
			// systemd-analyze takes a template by its instance-less name.
			unit := filepath.Join(dir, "drover-"+name+"@.service")
			if err := os.WriteFile(unit, data, 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(analyze, "security", "--offline=yes", "--no-pager", unit).CombinedOutput()
			if err != nil {
				t.Fatalf("systemd-analyze security: %v\n%s", err, out)
			}
			m := exposureRE.FindSubmatch(out)
			if m == nil {
				t.Fatalf("no overall exposure in:\n%s", out)
			}
			got, _ := strconv.ParseFloat(string(m[1]), 64)
			t.Logf("%s: exposure %.1f", name, got)
			if got > maxExposure {
				t.Errorf("%s: exposure %.1f > %.1f:\n%s", name, got, maxExposure, out)
			}
		})
	}
}
