// Package sysnode boots a real systemd as PID 1 of private PID, mount, UTS,
// IPC and cgroup namespaces (and optionally a network namespace), on a
// copy-on-write root: one "server" of a cluster simulated on one machine. The
// tests of units and cmd/drover use it through internal/systemdtest; the
// end-to-end lab (e2e/lab) boots its three nodes with it.
//
// The contract:
//   - Root() is the node's / as seen from the host: an overlay whose lower
//     layer is the host's root file system (so /usr and its programs are
//     shared) and whose upper layer lives on a per-node tmpfs under Dir (so
//     /etc, /var, /srv and /usr/local are private to the node). /run and /tmp
//     are tmpfs inside the node and not visible under Root().
//   - Socket() is the node's /run/systemd/private, proxied to the host by a
//     socket-activated systemd-socket-proxyd inside the node: systemd refuses
//     private connections from a PID it cannot see.
//   - Units the host has enabled (nginx, PostgreSQL, timers, gettys) do not
//     start in a node; only Options.Enable and what callers start do.
//   - The node runs in a cgroup of its own (the root of its cgroup
//     namespace), which is also the list of every process it holds: Destroy
//     kills by that list, never by name.
//   - Kill is "server lost" (SIGKILL of the node's PID 1 ends every process in
//     it); Poweroff is a clean shutdown; Start boots it again on the same disk.
//   - With Options.Persist the node outlives the process that started it, and
//     Attach finds it again from another process (the lab's CLI does up, then
//     exits; a later command kills or stops it). Without it, the node dies
//     with its starter (a test binary that crashes leaves no node running).
//
// Needs root, util-linux (unshare, nsenter) and a cgroup2 hierarchy.
package sysnode

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Options configures a node.
type Options struct {
	// Name is the node's host name; default "node".
	Name string
	// NetNS is the path of a network namespace to run the node in (for
	// example /run/netns/n1, or /proc/PID/ns/net of another node).
	NetNS string
	// PrivateNetwork gives the node a fresh network namespace holding only
	// its loopback. Ignored when NetNS is set. Without either, the node
	// shares the host's network.
	PrivateNetwork bool
	// Enable lists units started at boot (wanted by multi-user.target),
	// looked up under the node's /etc/systemd/system first, then
	// /lib/systemd/system.
	Enable []string
	// Hosts is appended to the node's /etc/hosts.
	Hosts string
	// TmpfsSize is the size of the tmpfs holding the node's writable layer;
	// default "512m".
	TmpfsSize string
	// Persist lets the node outlive the process that started it.
	Persist bool
}

// Node is one node: prepared (its file system mounted), running, or stopped.
type Node struct {
	opts Options
	dir  string // per-node tmpfs: upper, work, root, sock, console.log
	cg   string // the node's cgroup (v2), root of its cgroup namespace

	mu     sync.Mutex
	done   chan struct{} // closed when the launcher exited; nil when not started here
	leader int           // the node's PID 1, as seen from the host
}

// New describes a node whose files live in dir (an empty or missing
// directory with a short path: Socket() must fit in a sockaddr_un) and whose
// cgroup is named after dir under cgroupGroup, a directory of the cgroup2
// hierarchy shared by a harness's nodes. Nothing is mounted or started.
func New(dir, cgroupGroup string, opts Options) (*Node, error) {
	if err := CanRun(); err != nil {
		return nil, err
	}
	if opts.Name == "" {
		opts.Name = "node"
	}
	if opts.TmpfsSize == "" {
		opts.TmpfsSize = "512m"
	}
	cg2, err := Cgroup2Root()
	if err != nil {
		return nil, err
	}
	if len(filepath.Join(dir, "sock", "systemd-private")) > 100 {
		return nil, fmt.Errorf("node dir %s: path too long for a unix socket under it", dir)
	}
	return &Node{opts: opts, dir: dir, cg: filepath.Join(cg2, cgroupGroup, filepath.Base(dir))}, nil
}

// CanRun says why this machine cannot boot a node, or nil.
func CanRun() error {
	if os.Geteuid() != 0 {
		return errors.New("booting a systemd node needs root (mounts, namespaces, cgroups)")
	}
	for _, bin := range []string{"unshare", "nsenter", "mount", "umount"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%s not found (util-linux): cannot boot a systemd node", bin)
		}
	}
	if _, err := os.Stat("/lib/systemd/systemd"); err != nil {
		return errors.New("/lib/systemd/systemd is missing: run `make setup`")
	}
	_, err := Cgroup2Root()
	return err
}

// Name is the node's host name.
func (n *Node) Name() string { return n.opts.Name }

// Dir is the node's own directory on the host.
func (n *Node) Dir() string { return n.dir }

// Cgroup is the node's cgroup directory on the host.
func (n *Node) Cgroup() string { return n.cg }

// Root is the node's / as seen from the host.
func (n *Node) Root() string { return filepath.Join(n.dir, "root") }

// Path is p inside the node, as seen from the host.
func (n *Node) Path(p string) string { return filepath.Join(n.Root(), p) }

// Socket is the host path of the node's proxied /run/systemd/private.
func (n *Node) Socket() string { return filepath.Join(n.dir, "sock", "systemd-private") }

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
	done, leader := n.done, n.leader
	n.mu.Unlock()
	if done != nil {
		select {
		case <-done:
			return false
		default:
			return true
		}
	}
	return leader > 0 && alive(leader)
}

// Attach finds the PID 1 of a node started by another process (Persist),
// from its cgroup. It returns false when the node is not running.
func (n *Node) Attach() bool {
	pid := findLeader(n.cg)
	n.mu.Lock()
	n.leader = pid
	n.mu.Unlock()
	return pid > 0
}

// Prepared reports whether the node's file system is mounted and set up.
func (n *Node) Prepared() bool {
	_, err := os.Stat(filepath.Join(n.dir, ".prepared"))
	return err == nil && slices.Contains(MountsUnder(n.dir), n.Root())
}

// Prepare mounts the node's tmpfs and overlay root and writes the files that
// make the host's root a node: host name, machine id, no host units, the
// proxy that exposes /run/systemd/private. A prepared node is left as is (a
// node booted again keeps its disk).
func (n *Node) Prepare() error {
	if n.Prepared() {
		return nil
	}
	if err := os.MkdirAll(n.dir, 0o755); err != nil {
		return err
	}
	if err := mount("tmpfs", n.dir, "tmpfs", "size="+n.opts.TmpfsSize+",mode=0755"); err != nil {
		return err
	}
	for _, d := range []string{"upper", "work", "root", "sock"} {
		if err := os.Mkdir(filepath.Join(n.dir, d), 0o755); err != nil {
			return err
		}
	}
	opts := fmt.Sprintf("lowerdir=/,upperdir=%s/upper,workdir=%s/work", n.dir, n.dir)
	if err := mount("overlay", n.Root(), "overlay", opts); err != nil {
		return err
	}
	S := n.Path("/etc/systemd/system")
	// Units the host enabled must not start in the node: whiteout its .wants.
	for _, w := range []string{"multi-user.target.wants", "timers.target.wants", "getty.target.wants",
		"sysinit.target.wants", "sockets.target.wants"} {
		if err := os.RemoveAll(filepath.Join(S, w)); err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(S, w), 0o755); err != nil {
			return err
		}
	}
	files := map[string]string{
		"/etc/hostname":   n.opts.Name + "\n",
		"/etc/machine-id": randomID() + "\n",
		"/etc/hosts":      fmt.Sprintf("127.0.0.1\tlocalhost\n127.0.1.1\t%s\n%s", n.opts.Name, n.opts.Hosts),
		"/etc/systemd/system/drover-test-sdproxy.socket": `[Unit]
Description=sysnode: systemd's private bus for the host
DefaultDependencies=no
Before=sockets.target
[Socket]
ListenStream=/run/systemdtest/systemd-private
SocketMode=0600
`,
		"/etc/systemd/system/drover-test-sdproxy.service": `[Unit]
Description=sysnode: proxy to /run/systemd/private
DefaultDependencies=no
[Service]
ExecStart=/lib/systemd/systemd-socket-proxyd --exit-idle-time=infinity /run/systemd/private
`,
	}
	for p, content := range files {
		if err := os.WriteFile(n.Path(p), []byte(content), 0o644); err != nil {
			return err
		}
	}
	links := map[string]string{
		"getty.target":   "/dev/null",
		"default.target": "/lib/systemd/system/multi-user.target",
		"sockets.target.wants/drover-test-sdproxy.socket": "../drover-test-sdproxy.socket",
	}
	for _, u := range n.opts.Enable {
		target := "/lib/systemd/system/" + u
		if _, err := os.Lstat(filepath.Join(S, u)); err == nil {
			target = "../" + u
		}
		links["multi-user.target.wants/"+u] = target
	}
	for name, target := range links {
		p := filepath.Join(S, name)
		_ = os.Remove(p)
		if err := os.Symlink(target, p); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(n.dir, ".prepared"), nil, 0o644)
}

// Enable makes unit start at every boot from now on (the node's
// multi-user.target wants it).
func (n *Node) Enable(unit string) error {
	p := n.Path("/etc/systemd/system/multi-user.target.wants/" + unit)
	_ = os.Remove(p)
	return os.Symlink("../"+unit, p)
}

// initScript runs as PID 1 of the node's fresh namespaces: it makes a
// container-like environment on the node's root and execs systemd.
// $1 = node root, $2 = host directory that becomes /run/systemdtest.
const initScript = `set -e
R=$1 HS=$2
mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
mount --bind "$R/proc/sys" "$R/proc/sys"; mount -o remount,bind,ro "$R/proc/sys"
mount --bind "$R/proc/sys/net" "$R/proc/sys/net"; mount -o remount,bind,rw "$R/proc/sys/net"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$R/sys/fs/cgroup"
mount -t tmpfs -o mode=755,nosuid,size=16m dev "$R/dev"
for d in null zero full random urandom tty; do touch "$R/dev/$d"; mount --bind "/dev/$d" "$R/dev/$d"; done
touch "$R/dev/console"; mount --bind /dev/null "$R/dev/console"
mkdir -p "$R/dev/pts" "$R/dev/shm" "$R/dev/mqueue"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev shm "$R/dev/shm"
ln -s /proc/self/fd "$R/dev/fd"; ln -s /proc/self/fd/0 "$R/dev/stdin"
ln -s /proc/self/fd/1 "$R/dev/stdout"; ln -s /proc/self/fd/2 "$R/dev/stderr"
mount -t tmpfs -o mode=755,nosuid,nodev,size=256m run "$R/run"
mount -t tmpfs -o mode=1777,nosuid,nodev tmp "$R/tmp"
mkdir -p "$R/run/systemdtest"; mount --bind "$HS" "$R/run/systemdtest"
cd "$R"
mount --move . /
exec chroot . /usr/bin/setpriv --bounding-set -sys_module,-sys_time,-sys_rawio,-mac_admin,-mac_override,-syslog \
  /usr/bin/env -i container=drover-sysnode TERM=dumb /lib/systemd/systemd --system
`

// Start boots the prepared node and waits until its systemd reports running
// or degraded (which it returns) and the proxied socket answers. On failure
// the node is killed and the error carries the tail of its console.
func (n *Node) Start(ctx context.Context) (state string, err error) {
	if n.Running() {
		return "", fmt.Errorf("node %s is already running", n.opts.Name)
	}
	if err := os.MkdirAll(n.cg, 0o755); err != nil {
		return "", fmt.Errorf("make cgroup: %w", err)
	}
	cgfd, err := syscall.Open(n.cg, syscall.O_DIRECTORY|syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open cgroup: %w", err)
	}
	defer syscall.Close(cgfd)
	_ = os.Remove(n.Socket())

	var argv []string
	if n.opts.NetNS != "" {
		argv = append(argv, "nsenter", "--net="+n.opts.NetNS, "--")
	}
	argv = append(argv, "unshare", "--pid", "--fork", "--kill-child", "--mount", "--uts", "--ipc", "--cgroup")
	if n.opts.PrivateNetwork && n.opts.NetNS == "" {
		argv = append(argv, "--net") // systemd brings lo up
	}
	argv = append(argv, "--propagation", "private", "/bin/sh", "-c", initScript, "init", n.Root(), filepath.Join(n.dir, "sock"))
	console, err := os.OpenFile(filepath.Join(n.dir, "console.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return "", err
	}
	defer console.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = console, console
	// The launcher starts inside the node's own cgroup, so the cgroup
	// namespace unshare makes is rooted there and the node's systemd owns
	// that subtree only. Without Persist, Pdeathsig (and unshare's
	// --kill-child) end the node if its starter dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, UseCgroupFD: true, CgroupFD: cgfd}
	if !n.opts.Persist {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start unshare: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	n.mu.Lock()
	n.done, n.leader = done, 0
	n.mu.Unlock()

	fail := func(err error) (string, error) {
		n.Kill()
		return "", fmt.Errorf("%w\nconsole:\n%s", err, n.ConsoleTail())
	}
	for {
		pid := findLeader(n.cg)
		if pid > 0 {
			n.mu.Lock()
			n.leader = pid
			n.mu.Unlock()
			break
		}
		select {
		case <-done:
			return fail(errors.New("launcher exited before the node's PID 1 appeared"))
		case <-ctx.Done():
			return fail(fmt.Errorf("no PID 1 in the node's cgroup: %w", ctx.Err()))
		case <-time.After(20 * time.Millisecond):
		}
	}
	state, err = n.waitRunning(ctx)
	if err != nil {
		return fail(err)
	}
	return state, nil
}

// waitRunning polls the node's SystemState over the proxied socket.
func (n *Node) waitRunning(ctx context.Context) (string, error) {
	var last string
	for {
		if !n.Running() {
			return "", errors.New("the node's systemd exited during boot")
		}
		if _, err := os.Stat(n.Socket()); err == nil {
			state, err := n.SystemState(ctx)
			switch {
			case err != nil:
				last = err.Error()
			case state == "running", state == "degraded":
				return state, nil
			default:
				last = "system state " + state
			}
		} else {
			last = "no proxied socket yet"
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("node not running (%s): %w", last, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Kill ends the node at once, as a lost server: SIGKILL of its PID 1 ends
// every process of its PID namespace. It waits until the node is gone and
// removes what is left in its cgroup.
func (n *Node) Kill() {
	if leader := n.PID(); leader > 0 {
		_ = syscall.Kill(leader, syscall.SIGKILL)
	}
	if !n.waitGone(5 * time.Second) {
		// No PID 1 found yet (or it ignored us): end everything in the
		// node's cgroup, the launcher included, whose --kill-child takes
		// the node with it.
		_ = RemoveCgroup(n.cg)
		n.waitGone(5 * time.Second)
	}
	n.stopped()
}

// Poweroff shuts the node down cleanly (SIGRTMIN+4 to its systemd) and
// waits; when ctx ends first, it kills the node and returns ctx's error.
func (n *Node) Poweroff(ctx context.Context) error {
	leader := n.PID()
	if leader == 0 {
		n.stopped()
		return nil
	}
	_ = syscall.Kill(leader, syscall.Signal(34+4)) // SIGRTMIN+4: poweroff
	for n.Running() {
		select {
		case <-ctx.Done():
			n.Kill()
			return fmt.Errorf("poweroff node %s: %w", n.opts.Name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	n.stopped()
	return nil
}

// waitGone waits up to d for the node's launcher (or, for an attached node,
// its PID 1) to exit.
func (n *Node) waitGone(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for n.Running() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// stopped forgets the node's processes and removes what its systemd left in
// its cgroup, so that Start can boot it again.
func (n *Node) stopped() {
	n.mu.Lock()
	n.done, n.leader = nil, 0
	n.mu.Unlock()
	_ = RemoveCgroup(n.cg)
}

// ConsoleTail is the end of the node's console output (systemd's boot log).
func (n *Node) ConsoleTail() string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "console.log"))
	s := string(b)
	if len(s) > 3000 {
		s = s[len(s)-3000:]
	}
	return s
}

// Destroy stops the node and removes its mounts, cgroup and directory; the
// error lists whatever could not be removed.
func (n *Node) Destroy() error {
	leader := n.PID()
	n.Kill()
	var errs []error
	for _, m := range []string{n.Root(), n.dir} {
		if err := unmount(m); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(n.dir); err != nil {
		errs = append(errs, err)
	}
	if err := RemoveCgroup(n.cg); err != nil {
		errs = append(errs, err)
	}
	_ = syscall.Rmdir(filepath.Dir(n.cg)) // the shared group; fails while other nodes run
	for _, left := range n.Leftovers(leader) {
		errs = append(errs, fmt.Errorf("node %s left behind: %s", n.opts.Name, left))
	}
	return errors.Join(errs...)
}

// Leftovers lists what a destroyed node still holds on the host; leader is
// the PID 1 it had.
func (n *Node) Leftovers(leader int) []string {
	var left []string
	if leader > 0 && alive(leader) {
		left = append(left, fmt.Sprintf("process %d (the node's PID 1)", leader))
	}
	if n.cg != "" {
		if _, err := os.Stat(n.cg); err == nil {
			left = append(left, "cgroup "+n.cg)
		}
	}
	for _, m := range MountsUnder(n.dir) {
		left = append(left, "mount "+m)
	}
	if _, err := os.Stat(n.dir); err == nil {
		left = append(left, "directory "+n.dir)
	}
	return left
}

// Command makes a command that runs argv inside the node (all of its
// namespaces, via nsenter).
func (n *Node) Command(ctx context.Context, argv ...string) *exec.Cmd {
	args := append([]string{"-t", strconv.Itoa(n.PID()), "-a", "--"}, argv...)
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
	return []string{"nsenter", "-t", strconv.Itoa(n.PID()), "-a", "--", "journalctl"}
}

// Journal returns the last lines of unit's journal, or the error text.
func (n *Node) Journal(unit string, lines int) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := n.Run(ctx, "journalctl", "--no-pager", "-o", "short-precise", "-n", strconv.Itoa(lines), "-u", unit)
	if err != nil {
		return err.Error()
	}
	return out
}

// WriteFile writes data to path inside the node, creating parent
// directories.
func (n *Node) WriteFile(path string, data []byte, mode os.FileMode) error {
	p := n.Path(path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		return err
	}
	return os.Chmod(p, mode)
}

// Cgroup2Root finds the cgroup v2 hierarchy (pure v2, or hybrid's unified).
func Cgroup2Root() (string, error) {
	for _, p := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var st syscall.Statfs_t
		if err := syscall.Statfs(p, &st); err == nil && st.Type == 0x63677270 { // CGROUP2_SUPER_MAGIC
			return p, nil
		}
	}
	return "", errors.New("no cgroup2 hierarchy mounted (looked at /sys/fs/cgroup and /sys/fs/cgroup/unified)")
}

// alive reports whether pid is a live (not zombie) process.
func alive(pid int) bool {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && !strings.Contains(string(st), ") Z ")
}

func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// findLeader returns the PID of the process in cgroup tree cg that is PID 1
// of its own PID namespace.
func findLeader(cg string) int {
	var found int
	_ = filepath.WalkDir(cg, func(p string, d fs.DirEntry, err error) error {
		if err != nil || found > 0 || d.Name() != "cgroup.procs" {
			return nil
		}
		b, _ := os.ReadFile(p)
		for _, f := range strings.Fields(string(b)) {
			pid, _ := strconv.Atoi(f)
			if pid > 0 && nsPID(pid) == 1 {
				found = pid
				return filepath.SkipAll
			}
		}
		return nil
	})
	return found
}

// nsPID is pid's number in its innermost PID namespace.
func nsPID(pid int) int {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "NSpid:"); ok {
			fs := strings.Fields(rest)
			v, _ := strconv.Atoi(fs[len(fs)-1])
			return v
		}
	}
	return 0
}

// RemoveCgroup kills what is left in the cgroup tree cg (by PID: only
// processes of this node's tree) and removes its directories, deepest first.
func RemoveCgroup(cg string) error {
	if _, err := os.Stat(cg); err != nil {
		return nil
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var dirs []string
		_ = filepath.WalkDir(cg, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for _, d := range dirs {
			b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
			for _, f := range strings.Fields(string(b)) {
				if pid, _ := strconv.Atoi(f); pid > 0 {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		slices.Reverse(dirs) // WalkDir lists parents first
		var last error
		for _, d := range dirs {
			if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
				last = err
			}
		}
		if last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("remove cgroup %s: %w", cg, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func mount(source, target, fstype, data string) error {
	if err := syscall.Mount(source, target, fstype, 0, data); err != nil {
		return fmt.Errorf("mount %s on %s (%s): %w", fstype, target, data, err)
	}
	return nil
}

// unmount unmounts target if it is a mount point, retrying while busy (a
// node's mount namespace may take a moment to go away).
func unmount(target string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		if !slices.Contains(MountsUnder(target), target) {
			return nil
		}
		err := syscall.Unmount(target, 0)
		if err == nil {
			continue // stacked mounts: unmount the next one
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("unmount %s: %w", target, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// MountsUnder lists the host's mount points at or below dir.
func MountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
