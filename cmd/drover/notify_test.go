//go:build e2e

package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/drover-dev/drover/internal/systemdtest"
	"github.com/drover-dev/drover/reconcile"
)

var (
	revA = strings.Repeat("a", 40)
	revB = strings.Repeat("b", 40)
)

func TestStatusText(t *testing.T) {
	for _, c := range []struct {
		st   reconcile.Status
		want string
	}{
		{reconcile.Status{Step: reconcile.StepIdle}, "idle, no release yet"},
		{reconcile.Status{Step: reconcile.StepIdle, Error: "poll repo: no such branch"}, "idle, no release yet: poll repo: no such branch"},
		{reconcile.Status{Step: reconcile.StepIdle, Rev: revA}, "idle on aaaaaaaaaaaa"},
		{reconcile.Status{Step: reconcile.StepPreparing, Rev: revA, Target: revB}, "preparing bbbbbbbbbbbb (live aaaaaaaaaaaa)"},
		{reconcile.Status{Step: reconcile.StepSwitching, Target: revB}, "switching bbbbbbbbbbbb (live (none))"},
		{reconcile.Status{Step: reconcile.StepWaiting, Rev: revA, Target: revB, Error: "waiting for capacity: n2 drained"},
			"waiting bbbbbbbbbbbb (live aaaaaaaaaaaa): waiting for capacity: n2 drained"},
		{reconcile.Status{Step: reconcile.StepFailed, Rev: revA, Target: revA, Error: "nginx: exit 1"}, "failed aaaaaaaaaaaa: nginx: exit 1"},
		// The guard's verdict.
		{reconcile.Status{Step: reconcile.StepIdle, Rev: revA, Health: reconcile.HealthOK}, "idle on aaaaaaaaaaaa; healthy"},
		{reconcile.Status{Step: reconcile.StepIdle, Rev: revA, Health: reconcile.HealthOut, HealthWhy: "worker api instance 0: status 500"},
			"idle on aaaaaaaaaaaa; out (guard: worker api instance 0: status 500)"},
		{reconcile.Status{Step: reconcile.StepIdle, Rev: revA, Health: reconcile.HealthDegraded, HealthWhy: "check database: refused; 2 of 3 nodes are out or failing too"},
			"idle on aaaaaaaaaaaa; degraded (check database: refused; 2 of 3 nodes are out or failing too)"},
		// An error text cannot add an assignment of its own.
		{reconcile.Status{Step: reconcile.StepIdle, Rev: revA, Error: "git said\nREADY=1\r\nWATCHDOG=1"}, "idle on aaaaaaaaaaaa: git said READY=1 WATCHDOG=1"},
	} {
		if got := statusText(c.st); got != c.want {
			t.Errorf("statusText(%+v)\n got %q\nwant %q", c.st, got, c.want)
		}
	}
	long := statusText(reconcile.Status{Step: reconcile.StepIdle, Rev: revA, Error: strings.Repeat("é", 300)})
	if len(long) > 200 || !strings.HasSuffix(long, "...") || !strings.HasPrefix(long, "idle on") {
		t.Errorf("a long error is not cut to one short line: %d bytes %q", len(long), long)
	}
}

// fakeLoop is the reconcile node as the notifier sees it, moved by the test.
type fakeLoop struct {
	mu sync.Mutex
	st reconcile.Status
}

func (l *fakeLoop) Status() reconcile.Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st
}

func (l *fakeLoop) set(f func(*reconcile.Status)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f(&l.st)
}

type sent struct {
	at    time.Time
	state string
}

type recorder struct {
	mu   sync.Mutex
	msgs []sent
}

func (r *recorder) send(state string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, sent{time.Now(), state})
	return nil
}

// count counts messages equal to state sent in (from, to].
func (r *recorder) count(state string, from, to time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.msgs {
		if m.state == state && m.at.After(from) && !m.at.After(to) {
			n++
		}
	}
	return n
}

func (r *recorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, m := range r.msgs {
		out = append(out, m.state)
	}
	return out
}

// TestNotifierFeedsTheWatchdogWhileTheLoopMoves drives the notifier through
// an idle loop, a step that takes most of an hour, a loop that stopped
// moving, and the agent's stop, on synctest's clock.
func TestNotifierFeedsTheWatchdogWhileTheLoopMoves(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const watchdog, stallAfter = 2 * time.Second, time.Hour
		start := time.Now()
		loop := &fakeLoop{st: reconcile.Status{Step: reconcile.StepIdle, Rev: revA, Since: start}}
		rec := &recorder{}
		s := newNotifier(rec.send, loop.Status, slog.New(slog.NewTextHandler(t.Output(), nil)), watchdog, stallAfter)
		ctx, cancel := context.WithCancel(t.Context())
		s.start(ctx)
		s.Ready()

		// An idle loop polls every 10 s: one ping per second for 2 min.
		for range 12 {
			time.Sleep(10 * time.Second)
			loop.set(func(st *reconcile.Status) { st.Seen = time.Now() })
		}
		if got := rec.count("WATCHDOG=1", start, time.Now()); got < 119 || got > 121 {
			t.Errorf("idle loop: %d pings in 2 min, want one a second (120)", got)
		}

		// A step that takes 55 minutes without a poll (a long install)
		// is not a stall: the pings go on to its end.
		loop.set(func(st *reconcile.Status) {
			st.Step, st.Target, st.Since = reconcile.StepPreparing, revB, time.Now()
		})
		stepStart := time.Now()
		time.Sleep(55 * time.Minute)
		if got := rec.count("WATCHDOG=1", time.Now().Add(-time.Minute), time.Now()); got < 59 {
			t.Errorf("55 minutes into a step: %d pings in the last minute, want 60", got)
		}

		// Nothing moved for longer than stallAfter: the pings stop.
		time.Sleep(10 * time.Minute)
		if got := rec.count("WATCHDOG=1", stepStart.Add(stallAfter+time.Second), time.Now()); got != 0 {
			t.Errorf("a loop stuck for %s still fed the watchdog %d times", time.Since(stepStart), got)
		}

		// The step ends: the loop moves, the pings resume.
		loop.set(func(st *reconcile.Status) { st.Step, st.Since = reconcile.StepSwitching, time.Now() })
		resumed := time.Now()
		time.Sleep(5 * time.Second)
		if got := rec.count("WATCHDOG=1", resumed, time.Now()); got < 4 {
			t.Errorf("after the loop moved again: %d pings in 5 s, want 5", got)
		}

		cancel() // SIGTERM
		synctest.Wait()
		select {
		case <-s.done:
		default:
			t.Fatal("the notifier's goroutine outlived the agent's context")
		}
		s.Stop() // the agent's deferred Stop after its context ended

		msgs := rec.all()
		if msgs[len(msgs)-1] != "STOPPING=1\nSTATUS=stopping" || strings.Count(strings.Join(msgs, "\n"), "STOPPING=1") != 1 {
			t.Errorf("want STOPPING=1 once, as the last message; got the last %q", msgs[max(0, len(msgs)-3):])
		}
		var statuses []string
		for _, m := range msgs {
			if v, ok := strings.CutPrefix(m, "STATUS="); ok {
				statuses = append(statuses, v)
			}
		}
		want := []string{"idle on aaaaaaaaaaaa", "preparing bbbbbbbbbbbb (live aaaaaaaaaaaa)", "switching bbbbbbbbbbbb (live aaaaaaaaaaaa)"}
		if strings.Join(statuses, "|") != strings.Join(want, "|") {
			t.Errorf("STATUS lines: %q, want each change once: %q", statuses, want)
		}
		if ready := rec.count("READY=1\nSTATUS=idle on aaaaaaaaaaaa", start.Add(-1), start); ready != 1 {
			t.Errorf("READY=1 with the status sent %d times at start, want once", ready)
		}
	})
}

// TestNotifierSpeaksSdNotify reads what the notifier sends on a real
// NOTIFY_SOCKET, the way systemd gets it.
func TestNotifierSpeaksSdNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "100000")
	t.Setenv("WATCHDOG_PID", fmt.Sprint(os.Getpid()))

	loop := &fakeLoop{st: reconcile.Status{Step: reconcile.StepIdle, Rev: revA, Since: time.Now()}}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	s := startNotifier(ctx, slog.New(slog.NewTextHandler(t.Output(), nil)), loop.Status, time.Second)
	defer s.Stop()
	s.Ready()

	read := func(want string) {
		t.Helper()
		buf := make([]byte, 4096)
		var got []string
		for {
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, err := conn.Read(buf)
			if err != nil {
				t.Fatalf("waiting for %q: %v; got %q", want, err, got)
			}
			got = append(got, string(buf[:n]))
			if strings.Contains(string(buf[:n]), want) {
				return
			}
		}
	}
	read("READY=1\nSTATUS=idle on aaaaaaaaaaaa")
	read("WATCHDOG=1")
	read("WATCHDOG=1")
	loop.set(func(st *reconcile.Status) { st.Step, st.Target, st.Since = reconcile.StepVerifying, revB, time.Now() })
	read("STATUS=verifying bbbbbbbbbbbb (live aaaaaaaaaaaa)")
	cancel()
	read("STOPPING=1")
}

func TestNotifierIsSilentWithoutSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	s := startNotifier(t.Context(), slog.New(slog.DiscardHandler), func() reconcile.Status {
		t.Fatal("a notifier without NOTIFY_SOCKET read the status")
		return reconcile.Status{}
	}, time.Second)
	s.Ready()
	s.Stop()
	if s.done != nil {
		t.Fatal("a notifier without NOTIFY_SOCKET started a goroutine")
	}
}

// TestAgentUnderSystemd runs the real agent under a real systemd with the
// unit of examples/systemd (its hardening included), a WatchdogSec of 2 s,
// nginx as a service of its own, and the systemd supervisor: READY makes the
// unit active, the watchdog pings keep it alive, STATUS says what the agent
// does, and a stop is clean. Two controls prove that the test can fail: a
// Type=notify unit that never says READY never becomes active, and the same
// agent unit with its watchdog pings cut off is killed by the watchdog.
func TestAgentUnderSystemd(t *testing.T) {
	const wd = 2 * time.Second
	node := systemdtest.Boot(t, systemdtest.Options{Name: "agent", PrivateNetwork: true})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	// The config repo: one revision, no sites, no workers; the node:
	// drover's defaults, on the node's own loopback (see agentNode).
	rev := agentNode(t, node, "agent", map[string]string{"drover.yaml": "version: 1\nrollout: {soak: 0s}\n"})
	node.WriteFile(t, "/etc/nginx/nginx.conf", []byte(`pid /run/nginx.pid;
events {}
http { server { listen 127.0.0.1:8080; return 200 "nginx before drover\n"; } }
`), 0o644)
	dropIn := "/etc/systemd/system/drover.service.d/test.conf"
	node.WriteFile(t, dropIn, []byte(fmt.Sprintf("[Service]\nWatchdogSec=%s\nTimeoutStartSec=60s\n", wd)), 0o644)
	node.WriteFile(t, "/etc/systemd/system/never-ready.service", []byte(`[Service]
Type=notify
NotifyAccess=main
ExecStart=/bin/sleep 1000
TimeoutStartSec=3s
`), 0o644)
	if err := node.DaemonReload(ctx); err != nil {
		t.Fatal(err)
	}
	if err := node.StartUnit(ctx, "nginx.service"); err != nil {
		t.Fatalf("%v\n%s", err, node.Journal("nginx.service", 20))
	}
	state := func(unit string) systemdtest.UnitState {
		t.Helper()
		st, err := node.UnitState(ctx, unit)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	show := func(prop string) string {
		out, _ := node.Systemctl(ctx, "show", "-p", prop, "--value", "drover.service")
		return out
	}
	defer func() {
		if t.Failed() {
			t.Logf("journal of drover.service:\n%s", node.Journal("drover.service", 60))
		}
	}()

	t.Run("control: no READY, never active", func(t *testing.T) {
		began := time.Now()
		err := node.StartUnit(ctx, "never-ready.service")
		st := state("never-ready.service")
		if err == nil || st.ActiveState == "active" || st.Result != "timeout" {
			t.Fatalf("a Type=notify unit that never says READY: start %v after %s, state %s; want a start timeout",
				err, time.Since(began).Round(time.Millisecond), st)
		}
	})

	t.Run("agent", func(t *testing.T) {
		// Type=notify: the start job finishes when READY=1 arrives (it
		// fails after TimeoutStartSec without it).
		began := time.Now()
		if err := node.StartUnit(ctx, "drover.service"); err != nil {
			t.Fatal(err)
		}
		st := state("drover.service")
		if st.ActiveState != "active" || st.SubState != "running" {
			t.Fatalf("after READY: %s, want active/running", st)
		}
		t.Logf("READY %s after start", time.Since(began).Round(time.Millisecond))
		pid := st.MainPID

		// Alive for more than 3×WatchdogSec, on the same process, while
		// STATUS reaches the revision it rolled out.
		want := "idle on " + rev[:12]
		// (followed by the node's health, "; healthy", since the guard)
		for deadline := time.Now().Add(4 * wd); time.Now().Before(deadline) || !strings.HasPrefix(show("StatusText"), want); {
			if st := state("drover.service"); st.ActiveState != "active" || st.SubState != "running" || st.NRestarts != 0 || st.MainPID != pid {
				t.Fatalf("%s after start: %s (first pid %d)", time.Since(began).Round(time.Millisecond), st, pid)
			}
			if time.Since(began) > time.Minute {
				t.Fatalf("StatusText is %q a minute after start, want %q", show("StatusText"), want)
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("StatusText %q, WatchdogTimestamp %s", show("StatusText"), show("WatchdogTimestamp"))

		// The release went live through the hardening: nginx's config in
		// /etc/nginx rewritten, nginx.service reloaded, the worker units
		// listed over /run/systemd/private.
		if conf, err := os.ReadFile(node.Path("/etc/nginx/nginx.conf")); err != nil || !strings.Contains(string(conf), `location = "/healthz"`) {
			t.Errorf("/etc/nginx/nginx.conf is not drover's: %v\n%s", err, conf)
		}
		if out, err := node.Run(ctx, "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:8080/healthz"); err != nil || out != "200" {
			t.Errorf("LB health endpoint after the rollout: %q %v", out, err)
		}
		// Structured records reach the journal, one per line.
		if j := node.Journal("drover.service", 200); !strings.Contains(j, `msg="agent started"`) || !strings.Contains(j, "node=agent") {
			t.Errorf("the journal lacks the agent's structured records:\n%s", j)
		}

		if err := node.StopUnit(ctx, "drover.service"); err != nil {
			t.Fatal(err)
		}
		if st := state("drover.service"); st.ActiveState != "inactive" || st.Result != "success" {
			t.Fatalf("after systemctl stop: %s, want inactive, result success", st)
		}
	})

	t.Run("control: no watchdog pings, killed", func(t *testing.T) {
		// The same unit and binary, but WATCHDOG_PID names another
		// process, so the agent (rightly) does not ping.
		node.WriteFile(t, dropIn, []byte(fmt.Sprintf(`[Service]
WatchdogSec=%s
TimeoutStartSec=60s
ExecStart=
ExecStart=/usr/bin/env WATCHDOG_PID=1 /usr/local/bin/drover agent --config /etc/drover/node.yaml
`, wd)), 0o644)
		if err := node.DaemonReload(ctx); err != nil {
			t.Fatal(err)
		}
		began := time.Now()
		if err := node.StartUnit(ctx, "drover.service"); err != nil {
			t.Fatal(err)
		}
		for state("drover.service").NRestarts == 0 {
			if time.Since(began) > 10*wd {
				t.Fatalf("an agent that does not ping is still running %s after start: %s", time.Since(began), state("drover.service"))
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("restarted %s after start", time.Since(began).Round(time.Millisecond))
		// The watchdog's SIGABRT makes the agent dump every goroutine
		// (GOTRACEBACK=all, hundreds of lines) after systemd's own line:
		// read far enough back to find it.
		if j := node.Journal("drover.service", 20000); !strings.Contains(j, "Watchdog timeout") {
			t.Errorf("the agent was restarted, but not by the watchdog:\n%s", lastLines(j, 60))
		}
		if err := node.StopUnit(ctx, "drover.service"); err != nil {
			t.Fatal(err)
		}
	})
}

// lastLines is the end of s, n lines at most.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
