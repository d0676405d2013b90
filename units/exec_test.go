package units

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

var _ Supervisor = (*Exec)(nil)

func execWorld(t *testing.T, cfg ExecConfig) (*world, *Exec) {
	if cfg.Config.Log == nil {
		cfg.Config = testConfig(t)
	}
	sup := NewExec(cfg)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := sup.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	w := &world{sup: sup, base: t.TempDir()}
	w.gone = func(t *testing.T, worker string) {
		t.Helper()
		sup.mu.Lock()
		defer sup.mu.Unlock()
		for name := range sup.procs {
			if strings.HasPrefix(name, "drover-"+worker+"@") {
				t.Errorf("instance %s of a removed worker is still supervised", name)
			}
		}
	}
	return w, sup
}

func TestExecContract(t *testing.T) {
	contract(t, func(t *testing.T) *world {
		w, _ := execWorld(t, ExecConfig{})
		return w
	})
}

// TestExecRestartsWithBackoff kills an instance and then makes every start
// crash: the instance is started again, with growing delays in between.
func TestExecRestartsWithBackoff(t *testing.T) {
	w, sup := execWorld(t, ExecConfig{Config: testConfig(t), BackoffMin: 50 * time.Millisecond, BackoffMax: 400 * time.Millisecond})
	port := freePorts(t, 1)
	w.bundle(t, "r1", "api", "v1")
	w.switchTo(t, "r1")
	api := testWorker("api", port, 1)
	// The shell fails fast when CRASH exists, so the starts counted below
	// measure the backoff, not the interpreter's start-up time.
	api.Exec = []string{"/bin/sh", "-c", "test -e CRASH && exit 3; exec ./server.py"}
	w.mustApply(t, api)
	first := mustInfo(t, port)

	// A crash of a healthy instance: it comes back on its own.
	if err := syscall.Kill(first.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if in, err := getInfo(port); err == nil && in.PID != first.PID {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the killed instance was not restarted")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Now every start crashes: count the starts over 1.5s.
	crash := filepath.Join(w.host(w.releaseDir("r1")), "workers", "api", "CRASH")
	if err := os.WriteFile(crash, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	p := sup.procs[InstanceName("api", port)]
	if err := syscall.Kill(mustInfo(t, port).PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	before := p.starts
	p.mu.Unlock()
	time.Sleep(1500 * time.Millisecond)
	p.mu.Lock()
	starts := p.starts - before
	last := p.lastExit
	p.mu.Unlock()
	// The delays before each start grow 50, 100, 200, 400, 400, ... ms
	// (the first kill already doubled it once): 4-7 starts in 1.5s; with no
	// backoff a crash loop would start hundreds of times.
	t.Logf("%d starts in 1.5s, last exit: %s", starts, last)
	if starts < 3 || starts > 8 {
		t.Errorf("%d starts in 1.5s, want 3-8 (backoff 50ms doubling to 400ms)", starts)
	}
	if last != "exit status 3" {
		t.Errorf("last exit %q, want exit status 3", last)
	}
	// Healing the bundle heals the instance.
	if err := os.Remove(crash); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		if _, err := getInfo(port); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the instance did not come back after the crash cause went away")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestExecCloseStopsEverythingAndLeaksNothing: after Close no instance
// process is alive and no goroutine of the supervisor is left.
func TestExecCloseStopsEverythingAndLeaksNothing(t *testing.T) {
	baseline := runtime.NumGoroutine()
	w := &world{base: t.TempDir()}
	sup := NewExec(ExecConfig{Config: testConfig(t), StopTimeout: 500 * time.Millisecond})
	w.sup = sup
	port := freePorts(t, 2)
	w.bundle(t, "r1", "api", "v1")
	w.bundle(t, "r1", "stubborn", "v1")
	w.switchTo(t, "r1")
	api := testWorker("api", port, 1)
	// A worker that ignores SIGTERM must still be gone (SIGKILL after StopTimeout).
	stubborn := testWorker("stubborn", port+1, 1)
	stubborn.Exec = []string{"/bin/sh", "-c", "trap '' TERM; exec ./server.py"}
	w.mustApply(t, api, stubborn)
	pids := []int{mustInfo(t, port).PID, mustInfo(t, port+1).PID}
	// Crash one: a restart loop must stop with Close too.
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := sup.Close(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("Close took %s", time.Since(start).Round(time.Millisecond))
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("process %d is alive after Close", pid)
		}
	}
	if err := w.apply(t, api); err == nil {
		t.Error("Apply after Close succeeded")
	}
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > baseline {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), baseline, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestExecEnvironmentFile: the worker's environment file is read, a missing
// one is no error, and a changed one restarts the instance.
func TestExecEnvironmentFile(t *testing.T) {
	w, _ := execWorld(t, ExecConfig{})
	port := freePorts(t, 1)
	w.bundle(t, "r1", "api", "v1")
	w.switchTo(t, "r1")
	api := testWorker("api", port, 1)
	api.EnvironmentFile = filepath.Join(t.TempDir(), "api.env")
	w.mustApply(t, api)
	if in := mustInfo(t, port); in.Env["SECRET"] != "" {
		t.Fatalf("SECRET=%q without an environment file", in.Env["SECRET"])
	}
	if err := os.WriteFile(api.EnvironmentFile, []byte("# secrets\nSECRET=\"s3cret value\"\n\nOTHER=x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w.mustApply(t, api)
	in := mustInfo(t, port)
	if in.Env["SECRET"] != "s3cret value" || in.Env["OTHER"] != "x" || in.Env["PORT"] != strconv.Itoa(port) {
		t.Fatalf("env after adding the file: SECRET=%q OTHER=%q PORT=%q", in.Env["SECRET"], in.Env["OTHER"], in.Env["PORT"])
	}
}

func TestExecOverlap(t *testing.T) {
	overlapContract(t, func(t *testing.T) *world {
		w, _ := execWorld(t, ExecConfig{})
		return w
	})
}
