//go:build e2e

package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/systemdtest"
)

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
