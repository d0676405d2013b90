package doctor

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"github.com/drover-dev/drover/internal/command"
	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/internal/sdbus"
	"github.com/drover-dev/drover/spec"
	"github.com/drover-dev/drover/units"
)

func systemdRunning() bool { return units.Detect() == units.KindSystemd }

var nginxVersionRE = regexp.MustCompile(`nginx/(\S+)`)

func (d *doctor) nginx(ctx context.Context) []Result {
	return []Result{d.bounded(ctx, 1, func(ctx context.Context) Result {
		bin := d.n.Nginx.Binary
		out, err := command.Run(ctx, command.Cmd{Argv: []string{bin, "-v"}})
		if err != nil {
			if errors.Is(err, exec.ErrNotFound) {
				return fail("nginx", "apt-get install nginx (or set nginx.binary)", "%s is not installed: %v", bin, err)
			}
			return fail("nginx", "apt-get install --reinstall nginx (or set nginx.binary)", "%s -v: %v", bin, err)
		}
		m := nginxVersionRE.FindSubmatch(out)
		if m == nil {
			return warn("nginx", "check nginx.binary names nginx", "%s -v printed no version: %q", bin, strings.TrimSpace(string(out)))
		}
		return pass("nginx", "nginx %s (%s)", m[1], bin)
	})}
}

func (d *doctor) systemd(ctx context.Context) []Result {
	kind := d.n.Supervisor
	if kind == "" {
		if !d.cfg.SystemdRunning() {
			return []Result{warn("systemd", "on a server, boot with systemd; on a laptop set supervisor: exec to say so",
				"systemd is not running: the workers would run as the agent's children (supervisor exec)")}
		}
		kind = units.KindSystemd
	}
	if kind == units.KindExec {
		return []Result{pass("systemd", "not needed: supervisor exec runs the workers as the agent's children")}
	}
	return []Result{d.bounded(ctx, 1, func(ctx context.Context) Result {
		sock := d.n.Systemd.Socket
		type answer struct {
			version, state string
			err            error
		}
		ch := make(chan answer, 1)
		// go-systemd's calls take no ctx: the dial and the two property
		// reads run aside, and the check gives up at its deadline.
		go func() {
			c, err := sdbus.Dial(sock)
			if err != nil {
				ch <- answer{err: err}
				return
			}
			defer c.Close()
			var a answer
			if a.version, a.err = c.GetManagerProperty("Version"); a.err == nil {
				a.state, a.err = c.GetManagerProperty("SystemState")
			}
			ch <- a
		}()
		select {
		case <-ctx.Done():
			return fail("systemd", "check systemd.socket; the agent runs as root", "no answer from %s: %v", sock, ctx.Err())
		case a := <-ch:
			if a.err != nil {
				return fail("systemd", "run doctor as root (the private bus is root's), or check systemd.socket", "systemd's private bus %s: %v", sock, a.err)
			}
			v, s := strings.Trim(a.version, `"`), strings.Trim(a.state, `"`)
			if s != "running" {
				return warn("systemd", "systemctl --failed lists what failed", "systemd %s reachable at %s; the system is %s", v, sock, s)
			}
			return pass("systemd", "systemd %s reachable at %s (%s)", v, sock, s)
		}
	})}
}

// disk checks the free space of the state dir's file system against
// keepReleases releases of the size the live release has (or, before the
// first one, the size of the revision's sources).
func (d *doctor) disk(releaseBytes int64, from string) Result {
	dir := d.n.StateDir
	for {
		if _, err := os.Stat(dir); err == nil || filepath.Dir(dir) == dir {
			break
		}
		dir = filepath.Dir(dir)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return fail("disk", "check stateDir", "statfs %s: %v", dir, err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if live := layout.New(d.n.StateDir).Current(); exists(live) {
		if n, err := dirSize(live + "/"); err == nil {
			releaseBytes, from = n, "the live release"
		}
	}
	if releaseBytes == 0 {
		return pass("disk", "%s free on %s (a release's size is %s)", human(free), dir, from)
	}
	need := int64(d.n.KeepReleases) * releaseBytes
	msg := fmt.Sprintf("%s free on %s; %d releases of %s (%s) need %s", human(free), dir, d.n.KeepReleases, human(releaseBytes), from, human(need))
	switch {
	case free < need:
		return fail("disk", "free space on "+dir+", or lower keepReleases (at least 2)", "%s", msg)
	case free < 2*need:
		return warn("disk", "free space on "+dir+": worker installs and the git store need room too", "%s", msg)
	}
	return pass("disk", "%s", msg)
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// dirSize adds up the sizes of the regular files under dir, each inode once
// (releases share unchanged files as hardlinks).
func dirSize(dir string) (int64, error) {
	seen := map[uint64]bool{}
	var total int64
	err := filepath.WalkDir(dir, func(_ string, e os.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			if seen[st.Ino] {
				return nil
			}
			seen[st.Ino] = true
		}
		total += fi.Size()
		return nil
	})
	return total, err
}

func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// port is one address the node will listen on, and who listens there.
type port struct {
	addr, what string
	// nginx says nginx will bind it (drover's config, on a reload).
	nginx bool
	// worker is the worker's name for a worker instance's port.
	worker string
}

// ports lists what nginx, the workers and the agent will bind, with sp's
// ports (nil: drover.yaml's defaults) and node.yaml's overrides.
func (d *doctor) ports(sp *spec.Spec) []port {
	ng := d.n.Nginx
	https, health := 443, 80
	if sp != nil {
		https, health = sp.Nginx.HTTPSPort, sp.Nginx.HealthPort
	}
	if ng.HTTPSPort != 0 {
		https = ng.HTTPSPort
	}
	if ng.HealthPort != 0 {
		health = ng.HealthPort
	}
	host := ng.Listen
	ps := []port{
		{addr: net.JoinHostPort(host, strconv.Itoa(https)), what: "nginx's HTTPS port", nginx: true},
		{addr: net.JoinHostPort(host, strconv.Itoa(health)), what: "nginx's health port", nginx: true},
	}
	if ng.StatusListen != "" {
		ps = append(ps, port{addr: ng.StatusListen, what: "nginx's stub_status (nginx.statusListen)", nginx: true})
	}
	if w := d.n.Webhook; w != nil {
		ps = append(ps, port{addr: w.Listen, what: "the webhook receiver (webhook.listen)"})
	}
	if sp != nil {
		for _, w := range sp.Workers {
			for i, p := range w.InstancePorts() {
				ps = append(ps, port{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), what: fmt.Sprintf("worker %s instance %d", w.Name, i), worker: w.Name})
			}
			if sp.Rollout.Handover == spec.HandoverOverlap {
				// The overlap handover's second range (workers[].altPort).
				for i, p := range w.AltPorts() {
					ps = append(ps, port{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), what: fmt.Sprintf("worker %s instance %d, second range", w.Name, i), worker: w.Name})
				}
			}
		}
	}
	return ps
}

// checkPorts tries to bind each port. A port held by nginx, by drover or by
// one of drover's workers is fine: they are what will hold it.
func (d *doctor) checkPorts(ps []port) Result {
	var bad, unknown []string
	free, ours := 0, 0
	for _, p := range ps {
		l, err := net.Listen("tcp", p.addr)
		if err == nil {
			l.Close()
			free++
			continue
		}
		switch {
		case errors.Is(err, syscall.EACCES):
			unknown = append(unknown, fmt.Sprintf("%s (%s): needs root to test", p.addr, p.what))
			continue
		case !errors.Is(err, syscall.EADDRINUSE):
			bad = append(bad, fmt.Sprintf("%s (%s): %v", p.addr, p.what, err))
			continue
		}
		host, portStr, _ := net.SplitHostPort(p.addr)
		n, _ := strconv.Atoi(portStr)
		owner, ok := listener(n)
		switch {
		case !ok:
			unknown = append(unknown, fmt.Sprintf("%s (%s) is in use by a process this user cannot see", p.addr, p.what))
		case owner.comm == "nginx" && p.nginx:
			if held, clash := reloadClash(owner.addrs, host); clash {
				bad = append(bad, fmt.Sprintf("%s (%s) is held by nginx on %s, which a reload cannot trade for drover's %s: make nginx's current config listen on %s (Debian's default listens on every address) and reload it",
					p.addr, p.what, held, orWildcard(host), orWildcard(host)))
				continue
			}
			ours++
		case owner.ours(p.worker):
			ours++
		default:
			bad = append(bad, fmt.Sprintf("%s (%s) is held by %s (pid %d)", p.addr, p.what, owner.comm, owner.pid))
		}
	}
	switch {
	case len(bad) > 0:
		return fail("ports", "stop and disable what holds them (systemctl disable --now UNIT), or move the port (nginx.httpsPort, nginx.healthPort, webhook.listen in node.yaml; workers' port in drover.yaml)",
			"%s", strings.Join(bad, "; "))
	case len(unknown) > 0:
		return warn("ports", "run drover doctor as root", "%s", strings.Join(unknown, "; "))
	}
	return pass("ports", "%d free, %d held by nginx or drover's own processes", free, ours)
}

func orWildcard(host string) string {
	if host == "" {
		return "0.0.0.0 (every address)"
	}
	return host
}

// reloadClash says whether nginx, holding a port on the IPv4 addresses
// held, could not bind drover's address host ("" for every address) on a
// reload: the kernel refuses a wildcard beside a specific address of the
// same port, and nginx takes over only the sockets whose address is
// unchanged. So the first rollout's reload would fail.
func reloadClash(held []netip.Addr, host string) (string, bool) {
	want := netip.IPv4Unspecified()
	if host != "" {
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is4() {
			return "", false
		}
		want = a
	}
	for _, a := range held {
		if a.Is4() && a != want && (a.IsUnspecified() || want.IsUnspecified()) {
			return a.String(), true
		}
	}
	return "", false
}

// proc is a process that listens on a port, and the addresses it listens
// on there.
type proc struct {
	pid          int
	comm, cgroup string
	addrs        []netip.Addr
}

// ours says whether p is nginx, the agent, or (for a worker's port) one of
// drover's worker units (drover-NAME@PORT.service) or a child of the agent.
func (p proc) ours(worker string) bool {
	if p.comm == "nginx" || p.comm == "drover" {
		return true
	}
	return worker != "" && (strings.Contains(p.cgroup, "/drover-"+worker+"@") || strings.Contains(p.cgroup, "/drover.service"))
}

// listener finds the process holding a TCP listening socket on port, from
// /proc/net/tcp{,6} (the socket's inode) and /proc/PID/fd (who has it).
func listener(port int) (proc, bool) {
	inodes := map[string]netip.Addr{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			// local_address is HEXIP:HEXPORT; st 0A is LISTEN.
			if len(fs) < 10 || fs[3] != "0A" {
				continue
			}
			ha, hp, _ := strings.Cut(fs[1], ":")
			if p, err := strconv.ParseInt(hp, 16, 32); err == nil && int(p) == port {
				inodes["socket:["+fs[9]+"]"] = procAddr(ha)
			}
		}
	}
	if len(inodes) == 0 {
		return proc{}, false
	}
	pids, _ := filepath.Glob("/proc/[0-9]*")
	for _, dir := range pids {
		fds, err := os.ReadDir(filepath.Join(dir, "fd"))
		if err != nil {
			continue
		}
		var addrs []netip.Addr
		for _, e := range fds {
			t, err := os.Readlink(filepath.Join(dir, "fd", e.Name()))
			if a, ok := inodes[t]; err == nil && ok {
				addrs = append(addrs, a)
			}
		}
		if len(addrs) == 0 {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(dir))
		comm, _ := os.ReadFile(filepath.Join(dir, "comm"))
		cg, _ := os.ReadFile(filepath.Join(dir, "cgroup"))
		return proc{pid: pid, comm: strings.TrimSpace(string(comm)), cgroup: string(cg), addrs: addrs}, true
	}
	return proc{}, false
}

// procAddr decodes an address of /proc/net/tcp{,6}: the bytes of each
// 32-bit word in host (little-endian) order.
func procAddr(h string) netip.Addr {
	b, err := hex.DecodeString(h)
	if err != nil || (len(b) != 4 && len(b) != 16) {
		return netip.Addr{}
	}
	for i := 0; i < len(b); i += 4 {
		binary.BigEndian.PutUint32(b[i:], binary.LittleEndian.Uint32(b[i:]))
	}
	a, _ := netip.AddrFromSlice(b)
	return a.Unmap()
}
