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
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
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

// Node is one booted (or prepared) systemd node.
type Node struct {
	t    testing.TB
	opts Options
	dir  string // per-node tmpfs: upper, work, root, sock, console.log
	cg   string // the node's cgroup (v2), root of its cgroup namespace

	mu     sync.Mutex
	cmd    *exec.Cmd     // the launcher (unshare), nil when stopped
	done   chan struct{} // closed when the launcher exited
	leader int           // the node's PID 1, as seen from the host
	conns  []*sddbus.Conn
}

// Boot prepares a node and starts it; it fails the test when the node does
// not reach the running (or degraded) state.
func Boot(t testing.TB, opts Options) *Node {
	t.Helper()
	n := Prepare(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), n.opts.BootTimeout)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatalf("boot node %s: %v", n.opts.Name, err)
	}
	return n
}

// Prepare makes a node's file system without booting it, so a test can put
// units and files in place (under Root) before Start.
func Prepare(t testing.TB, opts Options) *Node {
	t.Helper()
	canRun(t)
	if opts.Name == "" {
		opts.Name = "node"
	}
	if opts.BootTimeout <= 0 {
		opts.BootTimeout = 60 * time.Second
	}
	if opts.TmpfsSize == "" {
		opts.TmpfsSize = "512m"
	}
	// A short path: Socket() must fit in a sockaddr_un (108 bytes).
	dir, err := os.MkdirTemp("", "drover-node-")
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{t: t, opts: opts, dir: dir}
	t.Cleanup(n.cleanup)
	if err := n.prepareFS(); err != nil {
		t.Fatalf("prepare node %s: %v", opts.Name, err)
	}
	cg2, err := cgroup2Root()
	if err != nil {
		t.Fatal(err)
	}
	n.cg = filepath.Join(cg2, "drover-systemdtest", filepath.Base(dir))
	return n
}

// Root is the node's / as seen from the host.
func (n *Node) Root() string { return filepath.Join(n.dir, "root") }

// Path is p inside the node, as seen from the host.
func (n *Node) Path(p string) string { return filepath.Join(n.Root(), p) }

// Socket is the host path of the node's proxied /run/systemd/private.
func (n *Node) Socket() string { return filepath.Join(n.dir, "sock", "systemd-private") }

// Name is the node's host name.
func (n *Node) Name() string { return n.opts.Name }

// PID is the node's PID 1 as seen from the host (for nsenter -t), or 0 when
// the node is not running.
func (n *Node) PID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.leader
}

// Running reports whether the node's systemd is alive.
func (n *Node) Running() bool {
	n.mu.Lock()
	done := n.done
	n.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// WriteFile writes data to path inside the node, creating parent
// directories.
func (n *Node) WriteFile(t testing.TB, path string, data []byte, mode os.FileMode) {
	t.Helper()
	p := n.Path(path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
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

// Command makes a command that runs argv inside the node (all of its
// namespaces, via nsenter).
func (n *Node) Command(ctx context.Context, argv ...string) *exec.Cmd {
	pid := n.PID()
	args := append([]string{"-t", fmt.Sprint(pid), "-a", "--"}, argv...)
	return exec.CommandContext(ctx, "nsenter", args...)
}

// Run runs argv inside the node and returns its standard output; the error
// carries the command line and its standard error.
func (n *Node) Run(ctx context.Context, argv ...string) (string, error) {
	if !n.Running() {
		return "", fmt.Errorf("node %s is not running", n.opts.Name)
	}
	cmd := n.Command(ctx, argv...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s (in node %s): %w: %s", strings.Join(argv, " "), n.opts.Name, err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// Systemctl runs systemctl inside the node and returns its trimmed output.
func (n *Node) Systemctl(ctx context.Context, args ...string) (string, error) {
	out, err := n.Run(ctx, append([]string{"systemctl", "--no-pager"}, args...)...)
	return strings.TrimSpace(out), err
}

// JournalCommand is the argv prefix that runs journalctl inside the node, for
// code that reads a unit's journal lines by running journalctl.
func (n *Node) JournalCommand() []string {
	return []string{"nsenter", "-t", fmt.Sprint(n.PID()), "-a", "--", "journalctl"}
}

// Journal returns the last lines of unit's journal, or the error text.
func (n *Node) Journal(unit string, lines int) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := n.Run(ctx, "journalctl", "--no-pager", "-o", "short-precise", "-n", fmt.Sprint(lines), "-u", unit)
	if err != nil {
		return err.Error()
	}
	return out
}

func canRun(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("systemdtest: booting a systemd node needs root (mounts, namespaces, cgroups)")
	}
	for _, bin := range []string{"unshare", "nsenter", "mount", "umount"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("systemdtest: %s not found (util-linux); cannot boot a systemd node", bin)
		}
	}
	if _, err := os.Stat("/lib/systemd/systemd"); err != nil {
		t.Fatalf("systemdtest: /lib/systemd/systemd is missing: run `make setup`")
	}
	if _, err := cgroup2Root(); err != nil {
		t.Skipf("systemdtest: %v", err)
	}
}

// cgroup2Root finds the cgroup v2 hierarchy (pure v2, or hybrid's unified).
func cgroup2Root() (string, error) {
	for _, p := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var st syscall.Statfs_t
		if err := syscall.Statfs(p, &st); err == nil && st.Type == 0x63677270 { // CGROUP2_SUPER_MAGIC
			return p, nil
		}
	}
	return "", errors.New("no cgroup2 hierarchy mounted (looked at /sys/fs/cgroup and /sys/fs/cgroup/unified)")
}

func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
