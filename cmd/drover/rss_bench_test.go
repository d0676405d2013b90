package main

import (
	"fmt"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// idlePolls is how many polls one iteration of BenchmarkAgentIdle waits for.
const idlePolls = 100

// BenchmarkAgentIdle runs the real agent (the helpers' node: a blog site and
// a Node.js worker with 2 instances, nginx started by the agent) on a
// revision already live, with a 1 s poll interval, and reads the agent's
// memory and CPU after every 100 unchanged polls (one iteration; make bench's
// -benchtime 1x is 100 polls, about 100 s; -benchtime 6x is about 10 min, when
// the Go runtime has settled). The repo is served over HTTP by the real
// git-http-backend, which counts the polls: one GET of info/refs each, and no
// fetch (POST git-upload-pack) at all while the branch does not move.
//
// Reported: MB-rss and MB-hwm (VmRSS and VmHWM of the agent alone, not of
// nginx or the workers; MB = 10^6 bytes), MB-anon and MB-file (RssAnon, the
// heap and stacks, and RssFile, the binary's pages), cpu-% (utime +
// stime over the idle period, % of one core), agent-cpu-ms/poll, and as the
// reference measured in the same run on the same server, git-cli-ms/poll and
// git-cli-cpu-ms/poll: `git ls-remote` of the branch, wall time and CPU.
//
// DROVER_BENCH_BIN=path measures that drover binary instead of the test's
// own build (go build without make build's -trimpath -ldflags '-s -w').
func BenchmarkAgentIdle(b *testing.B) {
	if bin := os.Getenv("DROVER_BENCH_BIN"); bin != "" {
		defer func(old string) { droverBin = old }(droverBin)
		droverBin = bin
	}
	t := testing.TB(b)
	{
		n := newTestNode(t)
		srv := serveGit(t, n.dir)
		url := srv.URL + "/repo"
		cfg, err := os.ReadFile(n.config)
		if err != nil {
			t.Fatal(err)
		}
		served := strings.Replace(string(cfg), "url: ./repo,", "url: "+url+",", 1)
		if served == string(cfg) {
			t.Fatalf("node.yaml has no %q to point at the HTTP server:\n%s", "url: ./repo,", cfg)
		}
		n.write("node.yaml", served)
		rev := n.commit("blog A", "api A")
		n.startAgent()
		n.waitLive(rev)
		pid := n.agent.Process.Pid

		start, cpu0 := time.Now(), cpuTicks(t, pid)
		polls0, fetches0 := srv.polls.Load(), srv.fetches.Load()
		polls := int64(0)
		for b.Loop() {
			want := polls + idlePolls
			deadline := time.Now().Add(3*idlePolls*time.Second + time.Minute)
			for polls < want {
				select {
				case <-n.agentDone:
					t.Fatalf("agent exited after %d idle polls", polls)
				case <-time.After(50 * time.Millisecond):
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d idle polls in %s, want %d", polls, time.Since(start).Round(time.Second), want)
				}
				polls = srv.polls.Load() - polls0
			}
			m := procStatus(t, pid)
			t.Logf("after %d polls (%s): VmRSS %.1f MB (RssAnon %.1f, RssFile %.1f), VmHWM %.1f MB, cpu %.3f%%",
				polls, time.Since(start).Round(time.Second), m["VmRSS"], m["RssAnon"], m["RssFile"], m["VmHWM"],
				cpuPercent(cpuTicks(t, pid)-cpu0, time.Since(start)))
		}
		elapsed, ticks := time.Since(start), cpuTicks(t, pid)-cpu0
		m := procStatus(t, pid)
		if f := srv.fetches.Load() - fetches0; f != 0 {
			t.Errorf("%d fetches while the branch did not move, want 0", f)
		}
		gitWall, gitCPU := gitLsRemote(t, url, rev, 20)

		b.ReportMetric(m["VmRSS"], "MB-rss")
		b.ReportMetric(m["VmHWM"], "MB-hwm")
		b.ReportMetric(m["RssAnon"], "MB-anon")
		b.ReportMetric(m["RssFile"], "MB-file")
		b.ReportMetric(cpuPercent(ticks, elapsed), "cpu-%")
		b.ReportMetric(float64(ticks)*10/float64(polls), "agent-cpu-ms/poll")
		b.ReportMetric(float64(polls), "polls")
		b.ReportMetric(gitWall.Seconds()*1e3, "git-cli-ms/poll")
		b.ReportMetric(gitCPU.Seconds()*1e3, "git-cli-cpu-ms/poll")
	}
}

// gitHTTP serves the repositories under a directory with the real
// git-http-backend and counts ref advertisements (polls) and fetches.
type gitHTTP struct {
	*httptest.Server
	polls, fetches atomic.Int64
}

func serveGit(t testing.TB, root string) *gitHTTP {
	t.Helper()
	execPath, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Fatalf("git --exec-path: %v", err)
	}
	backend := &cgi.Handler{
		Path: filepath.Join(strings.TrimSpace(string(execPath)), "git-http-backend"),
		Env:  []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"},
	}
	s := &gitHTTP{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch {
		case req.Method == "GET" && strings.HasSuffix(req.URL.Path, "/info/refs"):
			s.polls.Add(1)
		case req.Method == "POST" && strings.HasSuffix(req.URL.Path, "/git-upload-pack"):
			s.fetches.Add(1)
		}
		backend.ServeHTTP(w, req)
	}))
	t.Cleanup(s.Close)
	return s
}

// procStatus reads the memory lines of /proc/PID/status, in MB.
func procStatus(t testing.TB, pid int) map[string]float64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]float64{}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, ":")
		f := strings.Fields(v)
		if ok && len(f) == 2 && f[1] == "kB" {
			kb, _ := strconv.ParseFloat(f[0], 64)
			m[k] = kb * 1024 / 1e6
		}
	}
	for _, k := range []string{"VmRSS", "VmHWM", "RssAnon", "RssFile"} {
		if _, ok := m[k]; !ok {
			t.Fatalf("/proc/%d/status has no %s", pid, k)
		}
	}
	return m
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
