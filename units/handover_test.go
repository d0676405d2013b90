package units

import (
	"context"
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
