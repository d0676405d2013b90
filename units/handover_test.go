package units

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/spec"
)

// starter is what the overlap handover asks of a supervisor (handover.go).
type starter interface {
	Start(ctx context.Context, workers []spec.Worker, dir string) error
	Memory(ctx context.Context, workers []spec.Worker) (uint64, error)
}

var (
	_ starter = (*Systemd)(nil)
	_ starter = (*Exec)(nil)
)

// overlapContract is the overlap handover as a supervisor sees it: a new
// release started from its own directory on the worker's second range while
// the old instances keep serving, the old ones stopped by the Apply that
// follows, and a new release that never gets healthy failing Start without
// touching what serves.
func overlapContract(t *testing.T, newWorld func(t *testing.T) *world) {
	w := newWorld(t)
	sup := w.sup.(starter)
	port := freePorts(t, 4)
	api := testWorker("api", port, 2)
	api.AltPort = port + 2
	alt := api.OnAlt()
	w.bundle(t, "r1", "api", "v1")
	w.bundle(t, "r2", "api", "v2")
	w.bundle(t, "r3", "api", "v3", "UNHEALTHY")
	w.switchTo(t, "r1")
	w.mustApply(t, api)
	old := map[int]info{port: mustInfo(t, port), port + 1: mustInfo(t, port+1)}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// r2 starts on the second range from its release directory; current
	// still names r1 and the first range keeps its processes.
	if err := sup.Start(ctx, []spec.Worker{alt}, w.releaseDir("r2")); err != nil {
		t.Fatalf("Start r2 on the second range: %v", err)
	}
	for p, was := range old {
		if in := mustInfo(t, p); in.PID != was.PID || in.Version != "v1" {
			t.Fatalf("port %d: Start touched the live range (pid %d -> %d, %s)", p, was.PID, in.PID, in.Version)
		}
	}
	fresh := map[int]info{}
	for _, p := range alt.InstancePorts() {
		in := mustInfo(t, p)
		if in.Version != "v2" || !w.runsIn(t, in, "r2", "api") || in.Env["PORT"] != itoa(p) {
			t.Fatalf("second range port %d: version %q cwd %q PORT %q", p, in.Version, in.Cwd, in.Env["PORT"])
		}
		fresh[p] = in
	}
	w.inUse(t, "r1", "r2")
	for _, ws := range [][]spec.Worker{{api}, {alt}} {
		m, err := sup.Memory(ctx, ws)
		if err != nil || m < 1<<20 {
			t.Fatalf("Memory(%d…) = %d, %v; want the instances' resident memory", ws[0].Port, m, err)
		}
		t.Logf("memory of the range from %d: %.1f MiB", ws[0].Port, float64(m)/(1<<20))
	}

	// The Apply after the flip stops the first range, keeps the second.
	if err := w.sup.Apply(ctx, []spec.Worker{alt}, w.releaseDir("r2")); err != nil {
		t.Fatalf("Apply on the second range: %v", err)
	}
	for p := range old {
		if _, err := getInfo(p); err == nil {
			t.Fatalf("port %d of the old range still answers after Apply", p)
		}
	}
	for p, was := range fresh {
		if in := mustInfo(t, p); in.PID != was.PID {
			t.Fatalf("port %d: Apply restarted the started instance (pid %d -> %d)", p, was.PID, in.PID)
		}
	}
	w.inUse(t, "r2")

	// r3 never gets healthy: Start fails, what serves is untouched, and
	// the Apply that puts the node back cleans the failed range up.
	sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
	defer scancel()
	if err := sup.Start(sctx, []spec.Worker{api}, w.releaseDir("r3")); err == nil {
		t.Fatal("Start of a release whose instances answer 503 succeeded")
	} else {
		t.Logf("Start of r3: %v", err)
	}
	for p, was := range fresh {
		if in := mustInfo(t, p); in.PID != was.PID || in.Version != "v2" {
			t.Fatalf("port %d: a failed Start touched the live range", p)
		}
	}
	if err := w.sup.Apply(ctx, []spec.Worker{alt}, w.releaseDir("r2")); err != nil {
		t.Fatalf("Apply back on r2: %v", err)
	}
	for _, p := range api.InstancePorts() {
		if _, err := getInfo(p); err == nil {
			t.Fatalf("port %d of the failed release still answers", p)
		}
	}
	w.inUse(t, "r2")
}

func itoa(p int) string { return strconv.Itoa(p) }

// TestSandboxOfReleaseDir: instances started from a release directory see
// no more of the state dir than those started through current.
func TestSandboxOfReleaseDir(t *testing.T) {
	w := testWorker("api", 3000, 1)
	if got := stateDirOf("/srv/releases/current"); got != "/srv/releases" {
		t.Errorf("state dir of /srv/releases/current: %s", got)
	}
	for _, dir := range []string{"/var/lib/drover/current", "/var/lib/drover/releases/0123abcd"} {
		files, err := Render(w, dir)
		if err != nil {
			t.Fatal(err)
		}
		unit := string(files[TemplateName("api")])
		for _, want := range []string{`TemporaryFileSystem="/var/lib/drover":ro`, `BindReadOnlyPaths="` + dir + `/workers/api"`, "WorkingDirectory=" + dir + "/workers/api"} {
			if !strings.Contains(unit, want) {
				t.Errorf("unit for %s lacks %s:\n%s", dir, want, unit)
			}
		}
	}
}

// TestBesideLive: the unit files Start writes. The template stays the live
// instances' and each new instance gets the new unit as its own file; live
// instances that already run from their own file (an earlier overlap that
// never settled) keep it; a new worker, or one whose unit did not change,
// just gets its template.
func TestBesideLive(t *testing.T) {
	root := t.TempDir()
	s := NewSystemd(SystemdConfig{Config: testConfig(t), Root: root})
	units := filepath.Join(root, DefaultUnitsDir)
	if err := os.MkdirAll(units, 0o755); err != nil {
		t.Fatal(err)
	}
	api, same := testWorker("api", 4000, 2), testWorker("same", 5000, 1)
	render := func(w spec.Worker, dir string) []byte {
		f, err := Render(w, dir)
		if err != nil {
			t.Fatal(err)
		}
		return f[TemplateName(w.Name)]
	}
	older, live, next := render(api, "/srv/drover/releases/r1"), render(api, "/srv/drover/releases/r2"), render(api, "/srv/drover/releases/r3")
	for name, data := range map[string][]byte{
		TemplateName("api"):       older,                                // r1's template, never rewritten (settle failed)
		InstanceName("api", 4002): live,                                 // r2 live on the second range, from its own files
		InstanceName("api", 4003): live,                                 //
		InstanceName("api", 4009): []byte("# an operator's own unit\n"), // not drover's: not kept, not touched
		TemplateName("same"):      render(same, "/srv/drover/current"),
	} {
		if err := os.WriteFile(filepath.Join(units, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rendered := map[string][]byte{TemplateName("api"): next, TemplateName("same"): render(same, "/srv/drover/current"),
		TemplateName("new"): render(testWorker("new", 6000, 1), "/srv/drover/current")}
	files, err := s.besideLive([]spec.Worker{api, same, testWorker("new", 6000, 1)}, rendered)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{
		TemplateName("api"):       older,
		InstanceName("api", 4002): live,
		InstanceName("api", 4003): live,
		InstanceName("api", 4000): next,
		InstanceName("api", 4001): next,
		TemplateName("same"):      rendered[TemplateName("same")],
		TemplateName("new"):       rendered[TemplateName("new")],
	}
	for name, data := range want {
		if !bytes.Equal(files[name], data) {
			t.Errorf("%s: got\n%s\nwant\n%s", name, files[name], data)
		}
	}
	for name := range files {
		if want[name] == nil {
			t.Errorf("besideLive writes %s, which it should leave alone", name)
		}
	}
}
