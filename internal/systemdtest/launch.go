package systemdtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// prepareFS mounts the node's tmpfs and overlay root and writes the files
// that make the host's root a node: host name, machine id, no host units,
// the proxy that exposes /run/systemd/private.
func (n *Node) prepareFS() error {
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
		"/etc/hosts":      fmt.Sprintf("127.0.0.1\tlocalhost\n127.0.1.1\t%s\n", n.opts.Name),
		"/etc/systemd/system/drover-test-sdproxy.socket": `[Unit]
Description=systemdtest: systemd's private bus for the host
DefaultDependencies=no
Before=sockets.target
[Socket]
ListenStream=/run/systemdtest/systemd-private
SocketMode=0600
`,
		"/etc/systemd/system/drover-test-sdproxy.service": `[Unit]
Description=systemdtest: proxy to /run/systemd/private
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
	return nil
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
  /usr/bin/env -i container=drover-systemdtest TERM=dumb /lib/systemd/systemd --system
`

// Start boots the node and waits until its systemd reports running (or
// degraded, after logging the failed units) and the proxied socket answers.
func (n *Node) Start(ctx context.Context) error {
	if n.Running() {
		return fmt.Errorf("node %s is already running", n.opts.Name)
	}
	if err := os.MkdirAll(n.cg, 0o755); err != nil {
		return fmt.Errorf("make cgroup: %w", err)
	}
	cgfd, err := syscall.Open(n.cg, syscall.O_DIRECTORY|syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open cgroup: %w", err)
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
		return err
	}
	defer console.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = console, console
	// The launcher starts inside the node's own cgroup, so the cgroup
	// namespace unshare makes is rooted there and the node's systemd owns
	// that subtree only. Pdeathsig (and unshare's --kill-child) end the node
	// if the test binary dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL, UseCgroupFD: true, CgroupFD: cgfd}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start unshare: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	n.mu.Lock()
	n.cmd, n.done, n.leader = cmd, done, 0
	n.mu.Unlock()

	fail := func(err error) error {
		n.Kill()
		return fmt.Errorf("%w\nconsole:\n%s", err, n.consoleTail())
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
	if err := n.waitRunning(ctx); err != nil {
		return fail(err)
	}
	return nil
}

// waitRunning polls the node's SystemState over the proxied socket.
func (n *Node) waitRunning(ctx context.Context) error {
	var last string
	for {
		if !n.Running() {
			return errors.New("the node's systemd exited during boot")
		}
		if _, err := os.Stat(n.Socket()); err == nil {
			state, err := n.systemState()
			switch {
			case err != nil:
				last = err.Error()
			case state == "running":
				return nil
			case state == "degraded":
				out, _ := n.Systemctl(ctx, "--failed", "--plain", "--no-legend")
				n.t.Logf("node %s is degraded; failed units:\n%s", n.opts.Name, out)
				return nil
			default:
				last = "system state " + state
			}
		} else {
			last = "no proxied socket yet"
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node not running (%s): %w", last, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (n *Node) systemState() (string, error) {
	c, err := dial(n.Socket())
	if err != nil {
		return "", err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	p, err := c.SystemStateContext(ctx)
	if err != nil {
		return "", err
	}
	s, _ := p.Value.Value().(string)
	return s, nil
}

// Kill ends the node at once, as a lost server: SIGKILL of its PID 1 ends
// every process of its PID namespace. It waits for the launcher to exit.
func (n *Node) Kill() {
	n.mu.Lock()
	cmd, done, leader := n.cmd, n.done, n.leader
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	if leader > 0 {
		_ = syscall.Kill(leader, syscall.SIGKILL)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		// No PID 1 found yet (or it ignored us): end the launcher, whose
		// --kill-child takes the node with it.
		_ = cmd.Process.Kill()
		<-done
	}
	n.stopped()
}

// Poweroff shuts the node down cleanly (SIGRTMIN+4 to its systemd) and
// waits; when ctx ends first, it kills the node and returns ctx's error.
func (n *Node) Poweroff(ctx context.Context) error {
	n.mu.Lock()
	cmd, done, leader := n.cmd, n.done, n.leader
	n.mu.Unlock()
	if cmd == nil {
		return nil
	}
	if leader > 0 {
		_ = syscall.Kill(leader, syscall.Signal(34+4)) // SIGRTMIN+4: poweroff
	}
	select {
	case <-done:
		n.stopped()
		return nil
	case <-ctx.Done():
		n.Kill()
		return fmt.Errorf("poweroff node %s: %w", n.opts.Name, ctx.Err())
	}
}

// stopped forgets the launcher and removes what the node's systemd left in
// its cgroup, so that Start can boot it again.
func (n *Node) stopped() {
	n.mu.Lock()
	conns := n.conns
	n.cmd, n.leader, n.conns = nil, 0, nil
	n.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	if err := removeCgroup(n.cg); err != nil {
		n.t.Errorf("node %s: %v", n.opts.Name, err)
	}
}

func (n *Node) consoleTail() string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "console.log"))
	s := string(b)
	if len(s) > 3000 {
		s = s[len(s)-3000:]
	}
	return s
}

// cleanup stops the node, removes its mounts, cgroup and directory, and
// checks that none of them is left.
func (n *Node) cleanup() {
	leader := n.PID()
	n.Kill()
	for _, m := range []string{n.Root(), n.dir} {
		if err := unmount(m); err != nil {
			n.t.Errorf("node %s: %v", n.opts.Name, err)
		}
	}
	if err := os.RemoveAll(n.dir); err != nil {
		n.t.Errorf("node %s: remove %s: %v", n.opts.Name, n.dir, err)
	}
	if n.cg != "" {
		_ = removeCgroup(n.cg)
		_ = syscall.Rmdir(filepath.Dir(n.cg)) // shared parent; fails while other nodes run
	}
	for _, left := range n.leftovers(leader) {
		n.t.Errorf("node %s left behind: %s", n.opts.Name, left)
	}
}

// leftovers lists what a cleaned-up node still holds on the host.
func (n *Node) leftovers(leader int) []string {
	var left []string
	if leader > 0 {
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", leader)); err == nil && !strings.Contains(string(st), ") Z ") {
			left = append(left, fmt.Sprintf("process %d (the node's PID 1)", leader))
		}
	}
	if n.cg != "" {
		if _, err := os.Stat(n.cg); err == nil {
			left = append(left, "cgroup "+n.cg)
		}
	}
	for _, m := range mountsUnder(n.dir) {
		left = append(left, "mount "+m)
	}
	if _, err := os.Stat(n.dir); err == nil {
		left = append(left, "directory "+n.dir)
	}
	return left
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

// removeCgroup kills what is left in the cgroup tree cg (by PID: only
// processes of this node's tree) and removes its directories, deepest first.
func removeCgroup(cg string) error {
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
		if !slices.Contains(mountsUnder(target), target) {
			return nil
		}
		err := syscall.Unmount(target, 0)
		if err == nil || errors.Is(err, syscall.EINVAL) {
			continue
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("unmount %s: %w", target, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// mountsUnder lists the host's mount points at or below dir.
func mountsUnder(dir string) []string {
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
