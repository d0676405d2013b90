package units

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/testsvc"
	"github.com/drover-dev/drover/spec"
)

// world is where a contract test runs a supervisor: the host (exec) or a
// systemd node.
type world struct {
	sup  Supervisor
	root string // host path of the supervisor's "/" ("" on the host)
	base string // release store as the supervisor sees it
	// gone reports whether nothing of worker is left (units, processes).
	gone func(t *testing.T, worker string)
}

func (w *world) live() string               { return filepath.Join(w.base, "current") }
func (w *world) host(p string) string       { return filepath.Join(w.root, p) }
func (w *world) releaseDir(r string) string { return filepath.Join(w.base, "releases", r) }

// bundle writes worker's bundle of release r: the test server, its VERSION,
// and the marker files named in marks (CRASH, UNHEALTHY).
func (w *world) bundle(t *testing.T, r, worker, version string, marks ...string) {
	t.Helper()
	dir := w.host(filepath.Join(w.releaseDir(r), "workers", worker))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("testdata/worker/server.py")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{"server.py": string(src), "VERSION": version + "\n"}
	for _, m := range marks {
		files[m] = "on purpose\n"
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// linkBundle makes worker's bundle of release to from the one of release
// from the way the release store shares unchanged files: every file a hard
// link, directories made anew.
func (w *world) linkBundle(t *testing.T, from, to, worker string) {
	t.Helper()
	src := w.host(filepath.Join(w.releaseDir(from), "workers", worker))
	dst := w.host(filepath.Join(w.releaseDir(to), "workers", worker))
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		return os.Link(p, filepath.Join(dst, rel))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// replaceFile gives a file of worker's bundle of release r new content in a
// new file, as a release that changed it has.
func (w *world) replaceFile(t *testing.T, r, worker, name, content string) {
	t.Helper()
	p := w.host(filepath.Join(w.releaseDir(r), "workers", worker, name))
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// runsIn reports whether the instance that answered in runs in worker's
// bundle of release r: its working directory is that very directory (by
// device and inode, since under systemd the sandbox binds the bundle at
// the live path).
func (w *world) runsIn(t *testing.T, in info, r, worker string) bool {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(w.host(filepath.Join(w.releaseDir(r), "workers", worker)), &st); err != nil {
		t.Fatal(err)
	}
	return in.CwdID == fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// inUse checks the supervisor's ReleasesInUse against releases.
func (w *world) inUse(t *testing.T, releases ...string) {
	t.Helper()
	var want []string
	for _, r := range releases {
		want = append(want, w.host(w.releaseDir(r)))
	}
	slices.Sort(want)
	if got := w.sup.ReleasesInUse(); !slices.Equal(got, want) {
		t.Errorf("ReleasesInUse() = %q, want %q", got, want)
	}
}

// switchTo points current at release r, atomically, with a relative link
// (the host and a node see it alike).
func (w *world) switchTo(t *testing.T, r string) {
	t.Helper()
	link := w.host(w.live())
	tmp := link + ".tmp"
	_ = os.Remove(tmp)
	if err := os.Symlink(filepath.Join("releases", r), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, link); err != nil {
		t.Fatal(err)
	}
}

func (w *world) apply(t *testing.T, workers ...spec.Worker) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	err := w.sup.Apply(ctx, workers, w.live())
	t.Logf("Apply took %s", time.Since(start).Round(time.Millisecond))
	return err
}

func (w *world) mustApply(t *testing.T, workers ...spec.Worker) {
	t.Helper()
	if err := w.apply(t, workers...); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

// testWorker is a worker running the test server from its bundle, with fast
// health checks.
func testWorker(name string, port, instances int, args ...string) spec.Worker {
	return spec.Worker{
		Name:      name,
		Exec:      append([]string{"./server.py"}, args...),
		Instances: instances,
		Port:      port,
		Env:       map[string]string{"APP_MODE": "test"},
		Health: spec.Health{Path: "/healthz", Status: 200, Successes: 2,
			Interval: spec.Duration(100 * time.Millisecond), Timeout: spec.Duration(time.Second)},
	}
}

// testConfig is the shared supervisor configuration of the tests.
func testConfig(t *testing.T) Config {
	return Config{Log: testLogger(t), Settle: 400 * time.Millisecond, InstanceTimeout: 20 * time.Second}
}

type info struct {
	Version string            `json:"version"`
	Cwd     string            `json:"cwd"`
	CwdID   string            `json:"cwdID"` // device:inode of the cwd
	Argv    []string          `json:"argv"`
	Env     map[string]string `json:"env"`
	PID     int               `json:"pid"`
	Port    int               `json:"port"`
}

var client = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func getInfo(port int) (info, error) {
	var in info
	resp, err := client.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/info")
	if err != nil {
		return in, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return in, fmt.Errorf("status %d", resp.StatusCode)
	}
	return in, json.NewDecoder(resp.Body).Decode(&in)
}

// mustBeHealthy checks that the instance on port answers its health route.
func mustBeHealthy(t *testing.T, port int) {
	t.Helper()
	resp, err := client.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/healthz")
	if err != nil {
		t.Fatalf("health of port %d: %v", port, err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("health of port %d: status %d", port, resp.StatusCode)
	}
}

func mustInfo(t *testing.T, port int) info {
	t.Helper()
	in, err := getInfo(port)
	if err != nil {
		t.Fatalf("port %d: %v", port, err)
	}
	return in
}

// freePorts finds n consecutive free ports on 127.0.0.1, below the
// ephemeral range: a port from it, closed for the instance to take, could
// go to another test's outgoing connection first (TestSystemdOverlap
// failed so in make test: "Address already in use").
func freePorts(t *testing.T, n int) int { return testsvc.FreePorts(t, n) }

// contract runs the behaviours every supervisor must have.
func contract(t *testing.T, newWorld func(t *testing.T) *world) {
	t.Run("NewReleaseIsServedAndUnchangedIsLeftAlone", func(t *testing.T) {
		w := newWorld(t)
		port := freePorts(t, 1)
		w.bundle(t, "r1", "api", "v1")
		w.bundle(t, "r2", "api", "v2")
		w.switchTo(t, "r1")
		api := testWorker("api", port, 1)
		w.mustApply(t, api)
		in := mustInfo(t, port)
		if in.Version != "v1" || !w.runsIn(t, in, "r1", "api") {
			t.Fatalf("after the first Apply: version %q cwd %q", in.Version, in.Cwd)
		}
		if in.Env["PORT"] != strconv.Itoa(port) || in.Env["APP_MODE"] != "test" {
			t.Fatalf("env: PORT=%q APP_MODE=%q", in.Env["PORT"], in.Env["APP_MODE"])
		}
		w.mustApply(t, api)
		if again := mustInfo(t, port); again.PID != in.PID {
			t.Fatalf("an Apply with nothing changed restarted the instance (pid %d -> %d)", in.PID, again.PID)
		}
		w.switchTo(t, "r2")
		w.mustApply(t, api)
		in = mustInfo(t, port)
		if in.Version != "v2" || !w.runsIn(t, in, "r2", "api") {
			t.Fatalf("after switching to r2: version %q cwd %q", in.Version, in.Cwd)
		}
	})

	// A release restarts only the workers whose unit, environment file or
	// bundle changed; the others keep running from the release they
	// started in, which ReleasesInUse names until they leave it.
	t.Run("OnlyChangedWorkersRestart", func(t *testing.T) {
		w := newWorld(t)
		port := freePorts(t, 3)
		a, b := testWorker("a", port, 2), testWorker("b", port+2, 1)
		b.EnvironmentFile = filepath.Join(w.base, "b.env")
		ports := []int{port, port + 1, port + 2}
		isA := func(p int) bool { return p < port+2 }
		w.bundle(t, "r1", "a", "v1")
		w.bundle(t, "r1", "b", "v1")
		setEnv := func(greeting string) {
			t.Helper()
			if err := os.WriteFile(w.host(b.EnvironmentFile), []byte("GREETING="+greeting+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		setEnv("one")
		w.switchTo(t, "r1")
		w.mustApply(t, a, b)
		w.inUse(t, "r1")
		snapshot := func() map[int]info {
			t.Helper()
			m := map[int]info{}
			for _, p := range ports {
				mustBeHealthy(t, p)
				m[p] = mustInfo(t, p)
			}
			return m
		}
		// check compares two snapshots: the instances restarted (a's or
		// b's) have new processes in release r, the others kept theirs.
		check := func(before, after map[int]info, restartA bool, r, rOther string) {
			t.Helper()
			for _, p := range ports {
				restarted, wk, rel := isA(p) == restartA, "b", rOther
				if isA(p) {
					wk = "a"
				}
				if restarted {
					rel = r
				}
				if got := after[p].PID != before[p].PID; got != restarted {
					t.Errorf("worker %s on port %d: restarted %v (pid %d -> %d), want %v", wk, p, got, before[p].PID, after[p].PID, restarted)
				}
				if !w.runsIn(t, after[p], rel, wk) {
					t.Errorf("worker %s on port %d runs in %s, want release %s", wk, p, after[p].Cwd, rel)
				}
			}
		}
		s1 := snapshot()

		// r2: one file of a replaced; everything else linked from r1.
		w.linkBundle(t, "r1", "r2", "a")
		w.linkBundle(t, "r1", "r2", "b")
		w.replaceFile(t, "r2", "a", "VERSION", "v2\n")
		w.switchTo(t, "r2")
		w.mustApply(t, a, b)
		s2 := snapshot()
		check(s1, s2, true, "r2", "r1")
		if s2[port].Version != "v2" || s2[port+1].Version != "v2" {
			t.Errorf("a serves %q and %q after r2, want v2", s2[port].Version, s2[port+1].Version)
		}
		w.inUse(t, "r1", "r2")

		// r3: every file linked; only b's environment file changed.
		w.linkBundle(t, "r2", "r3", "a")
		w.linkBundle(t, "r2", "r3", "b")
		setEnv("two")
		w.switchTo(t, "r3")
		w.mustApply(t, a, b)
		s3 := snapshot()
		check(s2, s3, false, "r3", "r2")
		if g := s3[port+2].Env["GREETING"]; g != "two" {
			t.Errorf("b's GREETING=%q after its environment file changed, want two", g)
		}
		w.inUse(t, "r2", "r3")

		// r4: every file linked; only b's env in the spec changed.
		w.linkBundle(t, "r3", "r4", "a")
		w.linkBundle(t, "r3", "r4", "b")
		b.Env = map[string]string{"APP_MODE": "test", "EXTRA": "x"}
		w.switchTo(t, "r4")
		w.mustApply(t, a, b)
		s4 := snapshot()
		check(s3, s4, false, "r4", "r2")
		if g := s4[port+2].Env["EXTRA"]; g != "x" {
			t.Errorf("b's EXTRA=%q after its env changed, want x", g)
		}
		w.inUse(t, "r2", "r4")

		// The release a started in is deleted behind the supervisor's
		// back: a's instances have lost their working directory and are
		// started again in the live release.
		if err := os.RemoveAll(w.host(w.releaseDir("r2"))); err != nil {
			t.Fatal(err)
		}
		w.mustApply(t, a, b)
		s5 := snapshot()
		check(s4, s5, true, "r4", "r4")
		w.inUse(t, "r4")
	})

	t.Run("CrashAtStartIsCaughtAndRollbackServesOld", func(t *testing.T) {
		w := newWorld(t)
		port := freePorts(t, 1)
		w.bundle(t, "r1", "api", "v1")
		w.bundle(t, "r2", "api", "v2", "CRASH")
		w.switchTo(t, "r1")
		api := testWorker("api", port, 1)
		w.mustApply(t, api)
		w.switchTo(t, "r2")
		start := time.Now()
		err := w.apply(t, api)
		if err == nil {
			t.Fatal("Apply of a release whose worker crashes at start succeeded")
		}
		t.Logf("error (after %s): %v", time.Since(start).Round(time.Millisecond), err)
		for _, want := range []string{"worker api", "port " + strconv.Itoa(port)} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error does not name %q", want)
			}
		}
		if time.Since(start) > 10*time.Second {
			t.Errorf("crash caught after %s, want within the settle window and a few health intervals", time.Since(start))
		}
		w.switchTo(t, "r1")
		w.mustApply(t, api)
		if in := mustInfo(t, port); in.Version != "v1" {
			t.Fatalf("after rollback: version %q, want v1", in.Version)
		}
	})

	t.Run("UnhealthyIsCaught", func(t *testing.T) {
		w := newWorld(t)
		port := freePorts(t, 1)
		w.bundle(t, "r1", "api", "v1", "UNHEALTHY")
		w.switchTo(t, "r1")
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		err := w.sup.Apply(ctx, []spec.Worker{testWorker("api", port, 1)}, w.live())
		if err == nil || !strings.Contains(err.Error(), "503") {
			t.Fatalf("Apply of a running but unhealthy worker: %v, want the 503 named", err)
		}
		t.Logf("error: %v", err)
	})

	t.Run("TwoInstancesKeepServingThroughRestart", func(t *testing.T) {
		w := newWorld(t)
		port := freePorts(t, 2)
		w.bundle(t, "r1", "api", "v1")
		w.bundle(t, "r2", "api", "v2")
		w.switchTo(t, "r1")
		api := testWorker("api", port, 2)
		w.mustApply(t, api)
		before := [2]int{mustInfo(t, port).PID, mustInfo(t, port+1).PID}

		var rounds, failed, downSeen atomic.Int64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ok := false
				for _, p := range []int{port, port + 1} {
					if _, err := getInfo(p); err == nil {
						ok = true
					} else {
						downSeen.Add(1)
					}
				}
				rounds.Add(1)
				if !ok {
					failed.Add(1)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
		w.switchTo(t, "r2")
		err := w.apply(t, api)
		close(stop)
		wg.Wait()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%d rounds, %d with no instance answering, %d single-instance misses", rounds.Load(), failed.Load(), downSeen.Load())
		if failed.Load() != 0 {
			t.Fatalf("%d of %d rounds found no instance answering", failed.Load(), rounds.Load())
		}
		if downSeen.Load() == 0 {
			t.Error("no instance was ever seen down: did the restart happen?")
		}
		for i, p := range []int{port, port + 1} {
			in := mustInfo(t, p)
			if in.Version != "v2" || in.PID == before[i] {
				t.Errorf("instance on port %d: version %q pid %d (was %d)", p, in.Version, in.PID, before[i])
			}
		}
	})

	t.Run("ArgvAndEnvReachTheProcessExactly", func(t *testing.T) {
		w := newWorld(t)
		port := freePorts(t, 1)
		w.bundle(t, "r1", "odd", "v1")
		w.switchTo(t, "r1")
		args := []string{`a"b`, `back\slash`, `trailing\`, "100%", "%i %n %%", "$HOME ${PORT} $$ $", ";", `\;`,
			"'single'", "with  spaces ", "-x", "@y", "é ü", "`id`", "$(id)", "#hash", "a=b"}
		odd := testWorker("odd", port, 1, args...)
		odd.Env = map[string]string{"QUOTE": `say "hi"`, "PCT": "%i%%%n", "DOLLAR": "$PATH ${X} $$", "BS": `C:\dir\`,
			"SPACE": " lead and trail ", "SEMI": "a;b", "EMPTY": "", "EQ": "k=v=w", "HASH": "#not a comment"}
		w.mustApply(t, odd)
		in := mustInfo(t, port)
		if strings.Join(in.Argv, "\x00") != strings.Join(args, "\x00") {
			t.Errorf("argv:\n got %q\nwant %q", in.Argv, args)
		}
		for k, v := range odd.Env {
			if got, ok := in.Env[k]; !ok || got != v {
				t.Errorf("env %s = %q (set: %v), want %q", k, got, ok, v)
			}
		}
	})

	t.Run("RemovedWorkerAndInstancesAreStopped", func(t *testing.T) {
		w := newWorld(t)
		pa, pb := freePorts(t, 2), freePorts(t, 1)
		w.bundle(t, "r1", "a", "va")
		w.bundle(t, "r1", "b", "vb")
		w.switchTo(t, "r1")
		a, b := testWorker("a", pa, 2), testWorker("b", pb, 1)
		w.mustApply(t, a, b)
		mustInfo(t, pa+1)
		mustInfo(t, pb)
		a.Instances = 1
		w.mustApply(t, a)
		if _, err := getInfo(pb); err == nil {
			t.Error("removed worker b still answers")
		}
		if _, err := getInfo(pa + 1); err == nil {
			t.Error("a's dropped second instance still answers")
		}
		mustInfo(t, pa)
		w.gone(t, "b")
	})
}

// testLogger writes the supervisor's log to the test's log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

var _ io.Writer = tWriter{}
