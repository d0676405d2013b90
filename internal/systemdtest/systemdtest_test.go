package systemdtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/sysnode"
)

// TestNodeLifecycle boots a node, drives a unit in it, kills it, boots it
// again on the same disk, powers it off, and checks that the cleanup leaves
// no process, mount, cgroup or directory behind.
func TestNodeLifecycle(t *testing.T) {
	var sn *sysnode.Node
	var pids []int
	t.Run("node", func(t *testing.T) {
		start := time.Now()
		n := Boot(t, Options{Name: "n1"})
		t.Logf("boot took %s", time.Since(start).Round(time.Millisecond))
		sn = n.Node
		pids = append(pids, n.PID())
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()

		mustRun := func(want string, argv ...string) {
			t.Helper()
			out, err := n.Run(ctx, argv...)
			if err != nil {
				t.Fatal(err)
			}
			if strings.TrimSpace(out) != want {
				t.Fatalf("%v: got %q, want %q", argv, strings.TrimSpace(out), want)
			}
		}
		mustRun("n1", "hostname")
		mustRun("running", "systemctl", "is-system-running")
		mustRun("0::/init.scope", "sh", "-c", "grep '^0::' /proc/1/cgroup")
		if out, _ := n.Systemctl(ctx, "is-active", "nginx.service"); out != "inactive" {
			t.Errorf("the host's nginx.service is %q in the node, want inactive", out)
		}

		// A unit written from the host, started over the proxied socket.
		n.WriteFile(t, "/etc/systemd/system/hello.service", []byte(`[Service]
ExecStart=/bin/sh -c 'echo hello-from-unit; exec sleep 1000'
Restart=on-failure
RestartSec=100ms
`), 0o644)
		if err := n.DaemonReload(ctx); err != nil {
			t.Fatal(err)
		}
		if err := n.StartUnit(ctx, "hello.service"); err != nil {
			t.Fatal(err)
		}
		st, err := n.UnitState(ctx, "hello.service")
		if err != nil {
			t.Fatal(err)
		}
		if st.ActiveState != "active" || st.SubState != "running" || st.MainPID == 0 {
			t.Fatalf("hello.service: %s", st)
		}
		if _, err := n.Run(ctx, "kill", "-9", fmt.Sprint(st.MainPID)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "hello.service restarted", func() bool {
			st, err := n.UnitState(ctx, "hello.service")
			return err == nil && st.NRestarts == 1 && st.ActiveState == "active"
		})
		if j := n.Journal("hello.service", 20); !strings.Contains(j, "hello-from-unit") {
			t.Errorf("journal of hello.service lacks its output:\n%s", j)
		}
		if _, err := os.Stat("/etc/systemd/system/hello.service"); err == nil {
			t.Fatal("a unit written in the node appeared on the host")
		}
		c := n.Dial(t)
		if units, err := c.ListUnitsByNamesContext(ctx, []string{"hello.service"}); err != nil || len(units) != 1 {
			t.Fatalf("ListUnitsByNames over Dial: %v %v", units, err)
		}

		// Server lost, then booted again: /etc survives, the unit is gone
		// (not enabled) until started again.
		n.Kill()
		if n.Running() {
			t.Fatal("node still running after Kill")
		}
		if err := n.Start(ctx); err != nil {
			t.Fatal(err)
		}
		pids = append(pids, n.PID())
		mustRun("inactive", "sh", "-c", "systemctl is-active hello.service || true")
		mustRun("yes", "sh", "-c", "test -f /etc/systemd/system/hello.service && echo yes")

		start = time.Now()
		if err := n.Poweroff(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("poweroff took %s", time.Since(start).Round(time.Millisecond))
		if err := n.Start(ctx); err != nil {
			t.Fatal(err)
		}
		pids = append(pids, n.PID())
	})
	// The subtest's cleanup has run: nothing of the node may be left.
	for _, pid := range pids {
		for _, left := range sn.Leftovers(pid) {
			t.Errorf("left behind: %s", left)
		}
	}
}

// TestNodesAreSeparate boots two nodes at once: each has its own cgroup tree,
// host name and /etc.
func TestNodesAreSeparate(t *testing.T) {
	var nodes [2]*Node
	var wg sync.WaitGroup
	for i, name := range []string{"a", "b"} {
		nodes[i] = Prepare(t, Options{Name: name})
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if err := nodes[i].Start(ctx); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	nodes[0].WriteFile(t, "/etc/only-a", []byte("a"), 0o644)
	for i, want := range []string{"a", "b"} {
		out, err := nodes[i].Run(ctx, "sh", "-c", "hostname; test -e /etc/only-a && echo has-only-a; cat /proc/self/cgroup")
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if lines[0] != want {
			t.Errorf("node %s: hostname %q", want, lines[0])
		}
		if (want == "a") != strings.Contains(out, "has-only-a") {
			t.Errorf("node %s: /etc/only-a visibility wrong:\n%s", want, out)
		}
	}
	if nodes[0].Cgroup() == nodes[1].Cgroup() {
		t.Fatal("two nodes share a cgroup")
	}
	for _, n := range nodes {
		if _, err := os.Stat(n.Cgroup() + "/init.scope"); err != nil {
			t.Errorf("node %s: its systemd did not make init.scope in its own cgroup: %v", n.Name(), err)
		}
	}
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestNodeNetworks boots a node with a private network and a second node
// that joins it: they share a loopback the host cannot reach.
func TestNodeNetworks(t *testing.T) {
	a := Boot(t, Options{Name: "a", PrivateNetwork: true})
	b := Boot(t, Options{Name: "b", NetNS: fmt.Sprintf("/proc/%d/ns/net", a.PID())})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	links, err := a.Run(ctx, "sh", "-c", "ls /sys/class/net")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Fields(links)[0] != "lo" || len(strings.Fields(links)) != 1 {
		t.Errorf("a private network has interfaces %q, want only lo", links)
	}
	// A listener on a's loopback (a socket-activated echo, started by a's
	// systemd) answers b, not the host.
	a.WriteFile(t, "/etc/systemd/system/hello.socket", []byte("[Socket]\nListenStream=127.0.0.1:7777\nAccept=yes\n"), 0o644)
	a.WriteFile(t, "/etc/systemd/system/hello@.service", []byte("[Service]\nExecStart=/bin/echo hello-from-a\nStandardOutput=socket\n"), 0o644)
	if err := a.DaemonReload(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.StartUnit(ctx, "hello.socket"); err != nil {
		t.Fatal(err)
	}
	out, err := b.Run(ctx, "/usr/bin/python3", "-c", "import socket; s=socket.create_connection(('127.0.0.1',7777)); print(s.recv(100).decode().strip())")
	if err != nil || strings.TrimSpace(out) != "hello-from-a" {
		t.Errorf("b reaching a's loopback: %q, %v", out, err)
	}
	if hostOut, err := exec.CommandContext(ctx, "/usr/bin/python3", "-c", "import socket; socket.create_connection(('127.0.0.1',7777), timeout=1)").CombinedOutput(); err == nil {
		t.Errorf("the host reached the node's private loopback: %s", hostOut)
	}
}
