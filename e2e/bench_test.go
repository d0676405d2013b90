//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/e2e/lab"
)

var (
	idleFor   = flag.Duration("idle", 10*time.Minute, "BenchmarkIdleAgent: how long to watch idle agents")
	handovers = flag.String("handovers", "restart,overlap", "BenchmarkRollout: the rollout.handover values measured, in this order, in one lab")
)

// BenchmarkRollout pushes worker changes to the 3-node lab under the load
// of 300 clients and measures, per rollout: push (webhook) → last node
// converged; per node, the drained window (leaving the LB → back in it)
// against its floor, the parts drover waits on and cannot shorten: the LB's
// detection of the drain, each worker instance's restart until healthy,
// the release's health checks and soak, and the LB's detection of the
// node's return; and the requests served and failed. It does so once per
// rollout.handover value of -handovers (restart, then overlap), in one lab:
// a sub-benchmark first commits the spec with that handover (not timed),
// so before and after are measured on the same machine in the same run.
// With overlap, each node's "ahead" (the new instances started beside
// the live ones, healthy and soaked) is outside the window, and said to be
// before the node's turn when it was started while the node waited for the
// lock; both ranges' resident memory during the overlap is reported.
func BenchmarkRollout(b *testing.B) {
	l := startConverged(b)
	for _, h := range strings.Split(*handovers, ",") {
		b.Run(h, func(b *testing.B) { benchRollouts(b, l, h) })
	}
}

// withHandover returns the lab's drover.yaml with rollout.handover set to
// h, or without it (auto, the default) when h is "".
func withHandover(t testing.TB, spec, h string) string { return withRollout(t, spec, "handover", h) }

// withRollout returns spec with rollout.key set to value ("" removes it).
func withRollout(t testing.TB, spec, key, value string) string {
	t.Helper()
	out, err := lab.SetRollout(spec, key, value)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func benchRollouts(b *testing.B, l *lab.Lab, handover string) {
	ctx := context.Background()
	// The lab seeds restart: a spec that already names this handover is
	// not committed again (git refuses an empty commit).
	if spec := read(b, l, "drover.yaml"); withHandover(b, spec, handover) != spec {
		rev := commit(b, l, "rollout.handover: "+handover, map[string]string{"drover.yaml": withHandover(b, spec, handover)})
		waitConverged(b, l, rev, 5*time.Minute)
	}
	const rollouts = 3
	var windows, floors, converge, aheads []time.Duration
	var requests, failed int64
	var liveMiB, newMiB float64
	load := l.StartLoad(ctx, clients, think, lab.DefaultTargets)
	b.ResetTimer()
	for i := range rollouts {
		src := read(b, l, "workers/feedback-api/server.js")
		pushed := time.Now()
		rev := commit(b, l, fmt.Sprintf("feedback-api v%d", 10+i), map[string]string{
			"workers/feedback-api/server.js": setVersion(b, src, strconv.Itoa(10+i)),
		})
		waitConverged(b, l, rev, 5*time.Minute)
		took := time.Since(pushed)
		converge = append(converge, took)
		for _, n := range l.Nodes() {
			if !n.Running() {
				continue
			}
			w, err := drainedWindow(n, rev)
			if err != nil {
				b.Fatal(err)
			}
			b.Logf("rollout %d %s: %s", i+1, n.Name(), w)
			windows = append(windows, w.window)
			floors = append(floors, w.floor())
			if w.ahead > 0 {
				aheads = append(aheads, w.ahead)
			}
			liveMiB, newMiB = max(liveMiB, w.liveMiB), max(newMiB, w.newMiB)
		}
		b.Logf("rollout %d: push → 3 nodes converged in %s", i+1, took.Round(time.Millisecond))
	}
	b.StopTimer()
	res := load.Stop()
	requests, failed = res.Requests, res.Failed
	b.Logf("load over the %d rollouts: %s", rollouts, res)
	win, flo := sum(windows), sum(floors)
	b.ReportMetric(mean(converge).Seconds(), "s/converge")
	b.ReportMetric(mean(windows).Seconds(), "s/window")
	b.ReportMetric(mean(floors).Seconds(), "s/floor")
	b.ReportMetric(100*(win-flo).Seconds()/win.Seconds(), "%overhead")
	b.ReportMetric(float64(requests), "requests")
	b.ReportMetric(float64(failed), "failed")
	if len(aheads) > 0 {
		b.ReportMetric(mean(aheads).Seconds(), "s/ahead")
		b.ReportMetric(liveMiB, "MiB-live-range")
		b.ReportMetric(newMiB, "MiB-new-range")
	}
}

func sum(ds []time.Duration) (t time.Duration) {
	for _, d := range ds {
		t += d
	}
	return t
}

func mean(ds []time.Duration) time.Duration { return sum(ds) / time.Duration(max(len(ds), 1)) }

// window is one node's drained window for one revision, from its agent's
// log (journald keeps each line's own timestamp in time=).
type window struct {
	window  time.Duration // draining → the revision live (undrained, lock released)
	drain   time.Duration // draining → switching: waiting for the LB to see the drain
	workers time.Duration // sum of the worker instances' restart-until-healthy
	verify  time.Duration // verifying → undraining: health checks and soak
	undrain time.Duration // undraining → idle: waiting for the LB to see it back
	// With the overlap handover: the new instances' start until healthy
	// and soaked beside the live ones (outside the window), whether that
	// was before the node's turn, and both ranges' resident memory then,
	// in MiB.
	ahead           time.Duration
	beforeTurn      bool
	liveMiB, newMiB float64
}

func (w window) floor() time.Duration { return w.drain + w.workers + w.verify + w.undrain }

func (w window) String() string {
	s := fmt.Sprintf("window %s = drain %s + workers %s + verify %s + undrain %s + drover %s",
		w.window.Round(time.Millisecond), w.drain.Round(time.Millisecond), w.workers.Round(time.Millisecond),
		w.verify.Round(time.Millisecond), w.undrain.Round(time.Millisecond), (w.window - w.floor()).Round(time.Millisecond))
	if w.ahead > 0 {
		when := "in the node's turn"
		if w.beforeTurn {
			when = "before the node's turn"
		}
		s += fmt.Sprintf("; ahead of it %s, %s (overlap: live range %.0f MiB, new range %.0f MiB)", w.ahead.Round(time.Millisecond), when, w.liveMiB, w.newMiB)
	}
	return s
}

func drainedWindow(n *lab.Node, rev string) (window, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := n.Run(ctx, "journalctl", "-u", "drover", "-o", "cat", "--no-pager", "-n", "400")
	if err != nil {
		return window{}, err
	}
	steps := map[string]time.Time{}
	var w window
	short := rev[:12]
	var switching, verifying bool
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := logfmt(sc.Text())
		at, err := time.Parse(time.RFC3339Nano, f["time"])
		if err != nil {
			continue
		}
		switch {
		case f["msg"] == "step" && f["rev"] == short:
			steps[f["step"]] = at
			switching = f["step"] == "switching"
			verifying = f["step"] == "verifying"
		case f["msg"] == "revision live" && f["rev"] == short:
			steps["idle"] = at // the idle step is logged without a revision
		case f["msg"] == "new release's workers healthy beside the live ones" && f["rev"] == short:
			w.ahead, _ = time.ParseDuration(f["took"])
		case f["msg"] == "new release's workers started ahead of the node's turn" && f["rev"] == short:
			w.beforeTurn = true
		case f["msg"] == "overlap memory" && f["rev"] == short:
			w.liveMiB, _ = strconv.ParseFloat(f["liveMiB"], 64)
			w.newMiB, _ = strconv.ParseFloat(f["newMiB"], 64)
		case f["msg"] == "worker instance restarted and healthy" && switching && !verifying:
			d, err := time.ParseDuration(f["took"])
			if err == nil {
				w.workers += d
			}
		}
	}
	for _, s := range []string{"draining", "switching", "verifying", "undraining", "idle"} {
		if steps[s].IsZero() {
			return w, fmt.Errorf("%s: no %s step for %s in the agent's log", n.Name(), s, short)
		}
	}
	w.window = steps["idle"].Sub(steps["draining"])
	w.drain = steps["switching"].Sub(steps["draining"])
	w.verify = steps["undraining"].Sub(steps["verifying"])
	w.undrain = steps["idle"].Sub(steps["undraining"])
	return w, nil
}

// logfmt splits a slog text line into its keys' values.
func logfmt(line string) map[string]string {
	out := map[string]string{}
	for len(line) > 0 {
		line = strings.TrimLeft(line, " ")
		eq := strings.IndexByte(line, '=')
		if eq < 0 {
			break
		}
		key, rest := line[:eq], line[eq+1:]
		var val string
		if strings.HasPrefix(rest, `"`) {
			if v, err := strconv.QuotedPrefix(rest); err == nil {
				val, _ = strconv.Unquote(v)
				rest = rest[len(v):]
			}
		} else if sp := strings.IndexByte(rest, ' '); sp >= 0 {
			val, rest = rest[:sp], rest[sp:]
		} else {
			val, rest = rest, ""
		}
		out[key] = val
		line = rest
	}
	return out
}

// BenchmarkIdleAgent watches the agents of a converged lab for -idle
// (default 10 minutes, the agents polling every 10 s): each agent's RSS at
// the end, and its CPU use over the period, from /proc of its process.
func BenchmarkIdleAgent(b *testing.B) {
	l := startConverged(b)
	type sample struct {
		pid  int
		cpu  time.Duration
		at   time.Time
		name string
	}
	var start []sample
	for _, n := range l.Nodes() {
		if !n.Running() {
			continue
		}
		pid, err := agentPID(n)
		if err != nil {
			b.Fatal(err)
		}
		start = append(start, sample{pid: pid, cpu: cpuTime(b, pid), at: time.Now(), name: n.Name()})
	}
	b.ResetTimer()
	time.Sleep(*idleFor)
	b.StopTimer()
	var rssSum, cpuSum float64
	for _, s := range start {
		rss, anon, file, shmem := rssOf(b, s.pid)
		cpu := cpuTime(b, s.pid) - s.cpu
		pct := 100 * cpu.Seconds() / time.Since(s.at).Seconds()
		// The node's disk is a tmpfs: the binary's pages count as shmem.
		b.Logf("%s agent after %s idle: RSS %.1f MB (anon %.1f, file %.1f, shmem %.1f), CPU %.3f%% of a core", s.name, *idleFor, rss, anon, file, shmem, pct)
		rssSum += rss
		cpuSum += pct
	}
	b.ReportMetric(rssSum/float64(len(start)), "MB-RSS")
	b.ReportMetric(cpuSum/float64(len(start)), "%CPU")
}

// agentPID is the host PID of a node's drover agent: systemd's MainPID is
// in the node's PID namespace, so look it up among the node's processes.
func agentPID(n *lab.Node) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := n.Run(ctx, "systemctl", "show", "-p", "MainPID", "--value", "drover.service")
	if err != nil {
		return 0, err
	}
	inner, _ := strconv.Atoi(strings.TrimSpace(out))
	procs, err := os.ReadFile(n.Sys().Cgroup() + "/system.slice/drover.service/cgroup.procs")
	if err != nil {
		return 0, err
	}
	for _, f := range strings.Fields(string(procs)) {
		pid, _ := strconv.Atoi(f)
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(status), "\n") {
			if rest, ok := strings.CutPrefix(line, "NSpid:"); ok {
				ids := strings.Fields(rest)
				if ids[len(ids)-1] == strconv.Itoa(inner) {
					return pid, nil
				}
			}
		}
	}
	return 0, fmt.Errorf("%s: agent (MainPID %d) not found among %q", n.Name(), inner, procs)
}

func cpuTime(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)        // utime, field 14
	st, _ := strconv.ParseInt(f[12], 10, 64)        // stime, field 15
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

func rssOf(tb testing.TB, pid int) (rss, anon, file, shmem float64) {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb / 1024
		case "RssAnon:":
			anon = kb / 1024
		case "RssFile:":
			file = kb / 1024
		case "RssShmem:":
			shmem = kb / 1024
		}
	}
	return rss, anon, file, shmem
}
