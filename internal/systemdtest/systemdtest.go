// Package systemdtest boots a real systemd for tests: each Node is a systemd
// running as PID 1 of private PID, mount, UTS, IPC and cgroup namespaces (and
// optionally a network namespace), on a copy-on-write root, so a test can
// write unit files, start services and read their state the way drover does on
// a server, and throw the whole "server" away afterwards.
//
// The contract:
//   - Root() is the node's / as seen from the host: an overlay whose lower
//     layer is the host's root file system (so /usr, and the programs in it,
//     are shared) and whose upper layer lives on a per-node tmpfs (so /etc,
//     /var, /srv and /usr/local are private to the node). /run and /tmp are
//     tmpfs inside the node and not visible under Root(). Copy binaries a
//     test needs into Root()+"/usr/local/bin".
//   - Socket() is the node's /run/systemd/private, proxied to the host by a
//     socket-activated systemd-socket-proxyd inside the node: systemd refuses
//     private connections from a PID it cannot see. Dial it with Dial, or pass
//     it to drover's systemd client as its socket path.
//   - Units the host has enabled (nginx, PostgreSQL, timers, gettys) do not
//     start in a node; only Options.Enable and what tests start do.
//   - By default the node shares the host's network namespace: a service
//     listening on 127.0.0.1:P in the node is reachable from the test on
//     127.0.0.1:P (use testsvc.FreePort). Options.PrivateNetwork gives it a
//     namespace of its own; Options.NetNS joins an existing one (made by the
//     caller, e.g. `ip netns add` + veth, for a cluster of nodes).
//   - Kill is "server lost" (SIGKILL of the node's PID 1 ends every process
//     in it); Poweroff is a clean shutdown; Start boots the node again on the
//     same disk (files written under Root() survive, /run and /tmp do not).
//   - When the test ends the node is killed and its mounts, cgroup and temp
//     directory are removed; Cleanup checks that nothing is left and fails
//     the test otherwise.
//
// Boot skips the test only where the machine cannot run a node at all (not
// root, no unshare, no cgroup2 hierarchy); anything else that goes wrong
// fails it.
package systemdtest

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"

	"github.com/drover-dev/drover/internal/sysnode"
)

// Options configures a node.
type Options struct {
	// Name is the node's host name; default "node".
	Name string
	// NetNS is the path of a network namespace to run the node in (for
	// example /run/netns/n1, or /proc/PID/ns/net of another node).
	NetNS string
	// PrivateNetwork gives the node a fresh network namespace holding only
	// its loopback (up); connect it with a veth moved into the namespace of
	// PID() (`ip link set X netns PID`). Ignored when NetNS is set. Without
	// either, the node shares the host's network.
	PrivateNetwork bool
	// Enable lists units started at boot (wanted by multi-user.target).
	// A unit is looked up under the node's /etc/systemd/system first, then
	// /lib/systemd/system.
	Enable []string
	// BootTimeout bounds Start; default 60s.
	BootTimeout time.Duration
	// TmpfsSize is the size of the tmpfs holding the node's writable layer;
	// default "512m".
	TmpfsSize string
}

// Node is one booted (or prepared) systemd node: a sysnode.Node bound to a
// test.
type Node struct {
	*sysnode.Node
	t           testing.TB
	bootTimeout time.Duration

	mu    sync.Mutex
	conns []*sddbus.Conn
}

// Boot prepares a node and starts it; it fails the test when the node does
// not reach the running (or degraded) state.
func Boot(t testing.TB, opts Options) *Node {
	t.Helper()
	n := Prepare(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), n.bootTimeout)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatalf("boot node %s: %v", n.Name(), err)
	}
	return n
}

// Prepare makes a node's file system without booting it, so a test can put
// units and files in place (under Root) before Start.
func Prepare(t testing.TB, opts Options) *Node {
	t.Helper()
	if err := sysnode.CanRun(); err != nil {
		// Skip only where the machine cannot run a node at all; a root
		// test without systemd means `make setup` was not run.
		if _, statErr := os.Stat("/lib/systemd/systemd"); statErr != nil && os.Geteuid() == 0 {
			t.Fatalf("systemdtest: %v", err)
		}
		t.Skipf("systemdtest: %v", err)
	}
	if opts.BootTimeout <= 0 {
		opts.BootTimeout = 60 * time.Second
	}
	// A short path: Socket() must fit in a sockaddr_un (108 bytes).
	dir, err := os.MkdirTemp("", "drover-node-")
	if err != nil {
		t.Fatal(err)
	}
	sn, err := sysnode.New(dir, "drover-systemdtest", sysnode.Options{
		Name: opts.Name, NetNS: opts.NetNS, PrivateNetwork: opts.PrivateNetwork,
		Enable: opts.Enable, TmpfsSize: opts.TmpfsSize,
	})
	if err != nil {
		os.Remove(dir)
		t.Fatal(err)
	}
	n := &Node{Node: sn, t: t, bootTimeout: opts.BootTimeout}
	t.Cleanup(n.cleanup)
	if err := sn.Prepare(); err != nil {
		t.Fatalf("prepare node %s: %v", sn.Name(), err)
	}
	return n
}

// Start boots the node and waits until its systemd reports running (or
// degraded, after logging the failed units) and the proxied socket answers.
func (n *Node) Start(ctx context.Context) error {
	state, err := n.Node.Start(ctx)
	if err != nil {
		return err
	}
	if state == "degraded" {
		out, _ := n.Systemctl(ctx, "--failed", "--plain", "--no-legend")
		n.t.Logf("node %s is degraded; failed units:\n%s", n.Name(), out)
	}
	return nil
}

// Kill ends the node at once, as a lost server (see sysnode.Node.Kill).
func (n *Node) Kill() {
	n.Node.Kill()
	n.closeConns()
}

// Poweroff shuts the node down cleanly (see sysnode.Node.Poweroff).
func (n *Node) Poweroff(ctx context.Context) error {
	err := n.Node.Poweroff(ctx)
	n.closeConns()
	return err
}

// Dial returns a go-systemd connection to the node's systemd, closed when
// the node stops or the test ends.
func (n *Node) Dial(t testing.TB) *sddbus.Conn {
	t.Helper()
	c, err := sysnode.Dial(n.Socket())
	if err != nil {
		t.Fatalf("dial node %s systemd: %v", n.Name(), err)
	}
	n.mu.Lock()
	n.conns = append(n.conns, c)
	n.mu.Unlock()
	return c
}

func (n *Node) closeConns() {
	n.mu.Lock()
	conns := n.conns
	n.conns = nil
	n.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// UnitState is what systemd says about a unit.
type UnitState = sysnode.UnitState

// WriteFile writes data to path inside the node, creating parent
// directories.
func (n *Node) WriteFile(t testing.TB, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := n.Node.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
}

// CopyFile copies the host file src to dst inside the node.
func (n *Node) CopyFile(t testing.TB, src, dst string, mode os.FileMode) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	n.WriteFile(t, dst, data, mode)
}

// cleanup stops the node, removes its mounts, cgroup and directory, and
// fails the test if any of them is left.
func (n *Node) cleanup() {
	n.closeConns()
	if err := n.Destroy(); err != nil {
		n.t.Errorf("node %s: %v", n.Name(), err)
	}
}
