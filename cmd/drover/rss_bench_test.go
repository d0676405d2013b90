//go:build e2e

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/drover-dev/drover/internal/binpages"
	"github.com/drover-dev/drover/internal/testsvc"
)

// BenchmarkAgentIdle runs the real agent (the helpers' node: a blog site and
// a Node.js worker with 2 instances, nginx started by the agent) on a
// revision already live, and reads its memory and CPU after every
// DROVER_BENCH_POLLS unchanged polls (default 100; one iteration), at a poll
// interval of DROVER_BENCH_INTERVAL (default 1s, the minimum node.yaml takes).
// make bench's -benchtime 1x is the goal's 100 polls (about 100 s);
// scripts/bench.sh also runs 60 polls at 10s, the 10 minutes of issue 7. Each
// node's repo is served over HTTP by the real git-http-backend, which counts
// the polls: one GET of info/refs each, and no fetch (POST git-upload-pack)
// at all while the branch does not move.
//
// Measured side by side in the same run, each on its own node, server and
// copy of its binary (written and fsynced, as an install leaves it):
//   - drover: the agent as shipped, built as make build does;
//   - keep: the same with DROVER_KEEP_BINARY_PAGES=1, which turns off the
//     release of the binary's pages (internal/binpages);
//   - cold, keep-cold: the same two, with the binary dropped from the page
//     cache before the agent starts, as after a reboot;
//   - gitpoller (testdata/gitpoller), the reference: a minimal go-git program
//     that does an ls-remote of the branch at the same interval and nothing
//     else, built the same way.
//
// Reported for each (drover's without a prefix, the others prefixed with
// their name; MB = 10^6 bytes): MB-rss and MB-hwm (VmRSS and VmHWM of that
// process alone, not of nginx or the workers: the RSS of ps and top),
// MB-anon and MB-file (RssAnon: heap, stacks, written data; RssFile: pages
// of the binary and of libc mapped by the process), MB-pss (Pss of
// /proc/PID/smaps_rollup: pages shared with other processes divided among
// them, libc's mostly), MB-cached (how much of the process's binary is in
// the page cache, mapped or not). For drover also cpu-% (utime + stime over
// the idle period, % of one core) and agent-cpu-ms/poll, and as a reference
// on the same server, git-cli-ms/poll and git-cli-cpu-ms/poll: `git
// ls-remote` of the branch, wall time and CPU. Then each agent in turn gets a
// new commit and SIGUSR1: rollout-s is the time from the signal until it is
// live, and MB-rss-rollout its VmRSS right after. They show what the release
// costs: after it, a rollout reads its code back from the file.
//
// DROVER_BENCH_BIN=path measures that drover binary instead of the one this
// benchmark builds. DROVER_BENCH_VARIANTS replaces the drover variants with
// space-separated name[:cold][:KEY=VALUE...], e.g. "drover gogc40:GOGC=40";
// the first is reported without a prefix.
func BenchmarkAgentIdle(b *testing.B) {
	polls, interval := benchIdleSettings(b)
	dir := b.TempDir()
	bin := os.Getenv("DROVER_BENCH_BIN")
	if bin == "" {
		bin = filepath.Join(dir, "drover")
		buildStripped(b, bin, ".")
	}
	poller := filepath.Join(dir, "gitpoller")
	buildStripped(b, poller, "./testdata/gitpoller")

	var procs []*idleProc
	for _, v := range benchVariants(b) {
		procs = append(procs, startIdleAgent(b, bin, v, interval))
	}
	first := procs[0]
	procs = append(procs, startIdlePoller(b, poller, interval))

	start := time.Now()
	for _, p := range procs {
		p.cpu0, p.polls0, p.fetches0 = cpuTicks(b, p.pid), p.srv.polls.Load(), p.srv.fetches.Load()
	}
	want := int64(0)
	for b.Loop() {
		want += int64(polls)
		deadline := time.Now().Add(3*time.Duration(polls)*interval + time.Minute)
		for _, p := range procs {
			for p.polls() < want {
				select {
				case <-p.done:
					b.Fatalf("%s exited after %d idle polls", p.name, p.polls())
				case <-time.After(50 * time.Millisecond):
				}
				if time.Now().After(deadline) {
					b.Fatalf("%s: %d idle polls in %s, want %d", p.name, p.polls(), time.Since(start).Round(time.Second), want)
				}
			}
		}
		for _, p := range procs {
			m := procMemory(b, p.pid)
			b.Logf("%-9s after %d polls (%s): VmRSS %.1f MB (RssAnon %.1f, RssFile %.1f), Pss %.1f MB (anon %.1f, file %.1f), VmHWM %.1f MB, binary in page cache %.1f MB, cpu %.3f%%",
				p.name, p.polls(), time.Since(start).Round(time.Second), m["VmRSS"], m["RssAnon"], m["RssFile"],
				m["Pss"], m["Pss_Anon"], m["Pss_File"], m["VmHWM"], pageCached(b, p.bin), cpuPercent(cpuTicks(b, p.pid)-p.cpu0, time.Since(start)))
		}
	}
	elapsed := time.Since(start)
	for _, p := range procs {
		m := procMemory(b, p.pid)
		if f := p.srv.fetches.Load() - p.fetches0; f != 0 {
			b.Errorf("%s: %d fetches while the branch did not move, want 0", p.name, f)
		}
		prefix := p.name + "-"
		if p == first {
			prefix = ""
			ticks := cpuTicks(b, p.pid) - p.cpu0
			b.ReportMetric(cpuPercent(ticks, elapsed), "cpu-%")
			b.ReportMetric(float64(ticks)*10/float64(p.polls()), "agent-cpu-ms/poll")
			b.ReportMetric(float64(p.polls()), "polls")
		} else if p.node != nil {
			// Every agent's CPU: noguard-cpu-% beside cpu-% is the guard's.
			b.ReportMetric(cpuPercent(cpuTicks(b, p.pid)-p.cpu0, elapsed), prefix+"cpu-%")
		}
		for _, k := range []struct{ key, unit string }{
			{"VmRSS", "MB-rss"}, {"VmHWM", "MB-hwm"}, {"RssAnon", "MB-anon"}, {"RssFile", "MB-file"}, {"Pss", "MB-pss"},
		} {
			b.ReportMetric(m[k.key], prefix+k.unit)
		}
		b.ReportMetric(pageCached(b, p.bin), prefix+"MB-cached")
	}
	gitWall, gitCPU := gitLsRemote(b, first.url, first.rev, 20)
	b.ReportMetric(gitWall.Seconds()*1e3, "git-cli-ms/poll")
	b.ReportMetric(gitCPU.Seconds()*1e3, "git-cli-cpu-ms/poll")
	// The cost of the release: a rollout now runs code that is no longer
	// in memory (with the release it is read back page by page). One at a
	// time, woken by SIGUSR1 rather than the next poll.
	for _, p := range procs {
		if p.node == nil {
			continue
		}
		prefix := p.name + "-"
		if p == first {
			prefix = ""
		}
		rev := p.node.commit("blog B", "api B")
		start := time.Now()
		if err := syscall.Kill(p.pid, syscall.SIGUSR1); err != nil {
			b.Fatal(err)
		}
		p.node.waitLive(rev)
		took := time.Since(start)
		m := procMemory(b, p.pid)
		b.Logf("%-9s rollout after the idle period: live in %.2f s, then VmRSS %.1f MB (RssAnon %.1f, RssFile %.1f)",
			p.name, took.Seconds(), m["VmRSS"], m["RssAnon"], m["RssFile"])
		b.ReportMetric(took.Seconds(), prefix+"rollout-s")
		b.ReportMetric(m["VmRSS"], prefix+"MB-rss-rollout")
	}
}

// idleProc is one process BenchmarkAgentIdle measures, with the server
// that counts its polls.
type idleProc struct {
	name     string
	pid      int
	done     <-chan struct{}
	srv      *gitHTTP
	url, rev string
	cpu0     int64
	polls0   int64
	fetches0 int64
	bin      string    // the binary it runs
	node     *testNode // an agent's node; nil for gitpoller
}

func (p *idleProc) polls() int64 { return p.srv.polls.Load() - p.polls0 }

// benchIdleSettings reads DROVER_BENCH_POLLS and DROVER_BENCH_INTERVAL.
func benchIdleSettings(b *testing.B) (polls int, interval time.Duration) {
	polls, interval = 100, time.Second
	if s := os.Getenv("DROVER_BENCH_POLLS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("DROVER_BENCH_POLLS=%q: want a count", s)
		}
		polls = n
	}
	if s := os.Getenv("DROVER_BENCH_INTERVAL"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < time.Second {
			b.Fatalf("DROVER_BENCH_INTERVAL=%q: want a duration of at least 1s", s)
		}
		interval = d
	}
	return polls, interval
}

type benchVariant struct {
	name string
	cold bool // the binary starts out of the page cache, as after a reboot
	// noGuard turns the steady-state guard off (node.yaml guard.disabled),
	// to measure what the guard costs.
	noGuard bool
	env     []string
}

// benchVariants is drover as shipped and with the binary's pages kept, each
// with the binary in the page cache as installed and as after a reboot; or
// DROVER_BENCH_VARIANTS.
func benchVariants(b *testing.B) []benchVariant {
	s := os.Getenv("DROVER_BENCH_VARIANTS")
	if s == "" {
		keep := []string{binpages.KeepEnv + "=1"}
		return []benchVariant{
			{name: "drover"}, {name: "keep", env: keep},
			{name: "cold", cold: true}, {name: "keep-cold", cold: true, env: keep},
			{name: "noguard", noGuard: true},
		}
	}
	var vs []benchVariant
	for _, f := range strings.Fields(s) {
		parts := strings.Split(f, ":")
		v := benchVariant{name: parts[0]}
		for _, p := range parts[1:] {
			switch {
			case p == "cold":
				v.cold = true
			case p == "noguard":
				v.noGuard = true
			default:
				v.env = append(v.env, p)
			}
		}
		vs = append(vs, v)
	}
	return vs
}

// buildStripped builds pkg as make build does (-trimpath, no symbol table
// or DWARF), the binary a node runs.
func buildStripped(b *testing.B, out, pkg string) {
	b.Helper()
	if o, err := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, pkg).CombinedOutput(); err != nil {
		b.Fatalf("build %s: %v\n%s", pkg, err, o)
	}
}

// startIdleAgent starts an agent of bin as v says on a node of its own
// whose repo, served over HTTP, is live, and returns once it is idle.
func startIdleAgent(b *testing.B, bin string, v benchVariant, interval time.Duration) *idleProc {
	b.Helper()
	n := newTestNode(b)
	srv := serveGit(b, n.dir)
	url := srv.URL + "/repo"
	cfg, err := os.ReadFile(n.config)
	if err != nil {
		b.Fatal(err)
	}
	served := strings.Replace(string(cfg), "url: ./repo, pollInterval: 1s}", fmt.Sprintf("url: %s, pollInterval: %s}", url, interval), 1)
	if served == string(cfg) {
		b.Fatalf("node.yaml has no %q to point at the HTTP server:\n%s", "url: ./repo, pollInterval: 1s}", cfg)
	}
	if v.noGuard {
		served += "\nguard: {disabled: true}\n"
	}
	n.write("node.yaml", served)
	rev := n.commit("blog A", "api A")
	// A copy of its own, as on a node: no page of the binary is shared with
	// the other agents measured.
	own := filepath.Join(n.dir, "drover")
	copySynced(b, bin, own, v.cold)
	n.agentLog = &testsvc.LogBuffer{}
	n.allLogs = append(n.allLogs, n.agentLog)
	cmd := exec.Command(own, "agent", "--config", n.config)
	cmd.Env = append(os.Environ(), v.env...)
	cmd.Stdout, cmd.Stderr = n.agentLog, n.agentLog
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	n.agent, n.agentDone = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(n.agentDone) }()
	n.waitLive(rev)
	return &idleProc{name: v.name, pid: cmd.Process.Pid, done: n.agentDone, srv: srv, url: url, rev: rev, bin: own, node: n}
}

// copySynced copies the executable src to dst and syncs it, as installing
// it would (the kernel cannot drop dirty pages from the page cache). cold
// then drops it from the page cache, as a reboot would.
func copySynced(b *testing.B, src, dst string, cold bool) {
	b.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		b.Fatal(err)
	}
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		b.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	if cold {
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			b.Fatal(err)
		}
		if c := pageCached(b, dst); c > 0.1 {
			b.Fatalf("%s: %.1f MB still in the page cache after POSIX_FADV_DONTNEED", dst, c)
		}
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}

// startIdlePoller starts the reference gitpoller on a repo of its own.
func startIdlePoller(b *testing.B, bin string, interval time.Duration) *idleProc {
	b.Helper()
	n := newTestNode(b)
	srv := serveGit(b, n.dir)
	url := srv.URL + "/repo"
	rev := n.commit("blog A", "api A")
	own := filepath.Join(n.dir, "gitpoller")
	copySynced(b, bin, own, false)
	cmd := exec.Command(own, url, "main", interval.String())
	out := &testsvc.LogBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	b.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	for !strings.Contains(out.String(), rev) {
		select {
		case <-done:
			b.Fatalf("gitpoller exited: %s", out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return &idleProc{name: "gitpoller", pid: cmd.Process.Pid, done: done, srv: srv, url: url, rev: rev, bin: own}
}

// procMemory reads the memory lines of /proc/PID/status (VmRSS, RssAnon,
// ...) and /proc/PID/smaps_rollup (Pss, Pss_Anon, Pss_File), in MB.
func procMemory(t testing.TB, pid int) map[string]float64 {
	t.Helper()
	m := map[string]float64{}
	for _, file := range []string{"status", "smaps_rollup"} {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			k, v, ok := strings.Cut(line, ":")
			f := strings.Fields(v)
			if ok && len(f) == 2 && f[1] == "kB" {
				kb, _ := strconv.ParseFloat(f[0], 64)
				m[k] = kb * 1024 / 1e6
			}
		}
	}
	for _, k := range []string{"VmRSS", "VmHWM", "RssAnon", "RssFile", "Pss", "Pss_Anon", "Pss_File"} {
		if _, ok := m[k]; !ok {
			t.Fatalf("/proc/%d has no %s", pid, k)
		}
	}
	return m
}

// pageCached is how much of the file at path is in the page cache, in MB
// (mincore of a mapping that is never touched, so nothing is read in).
func pageCached(t testing.TB, path string) float64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	pg := os.Getpagesize()
	vec := make([]byte, (len(m)+pg-1)/pg)
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatalf("mincore %s: %v", path, errno)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return float64(n*pg) / 1e6
}

// cpuTicks is the process's utime + stime from /proc/PID/stat, in clock
// ticks (USER_HZ, 100 a second on Linux).
func cpuTicks(t testing.TB, pid int) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime 14, stime 15.
	i := strings.LastIndexByte(string(data), ')')
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		t.Fatalf("/proc/%d/stat: %q", pid, data)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("/proc/%d/stat: %q", pid, data)
	}
	return utime + stime
}

func cpuPercent(ticks int64, d time.Duration) float64 {
	return float64(ticks) / 100 / d.Seconds() * 100
}

// gitLsRemote runs `git ls-remote url refs/heads/main` n times and returns
// the median wall time and the mean CPU (user + system, git and its
// git-remote-http child) of one run.
func gitLsRemote(t testing.TB, url, rev string, n int) (wall, cpu time.Duration) {
	t.Helper()
	env := append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_NOSYSTEM=1", "HOME="+t.TempDir())
	walls := make([]time.Duration, n)
	for i := range walls {
		cmd := exec.Command("git", "ls-remote", url, "refs/heads/main")
		cmd.Env = env
		start := time.Now()
		out, err := cmd.Output()
		walls[i] = time.Since(start)
		if err != nil || !strings.HasPrefix(string(out), rev) {
			t.Fatalf("git ls-remote %s = %q, %v", url, out, err)
		}
		cpu += cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	sort.Slice(walls, func(i, j int) bool { return walls[i] < walls[j] })
	return walls[n/2], cpu / time.Duration(n)
}
