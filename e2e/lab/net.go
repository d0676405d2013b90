package lab

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// The lab's network: a bridge on the host holding NET.1, and for the infra
// and every node a network namespace whose eth0 is one end of a veth pair
// whose other end is on the bridge.

func (l *Lab) bridge() string           { return l.cfg.Prefix + "-br" }
func (l *Lab) netns(name string) string { return l.cfg.Prefix + "-" + name }

func (l *Lab) netnsNames() []string {
	out := []string{l.netns("infra")}
	for _, n := range l.cfg.all() {
		out = append(out, l.netns(n))
	}
	return out
}

func (l *Lab) linkNames() []string { return append([]string{l.bridge()}, l.netnsNames()...) }

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (l *Lab) netUp() error {
	steps := [][]string{
		{"link", "add", l.bridge(), "type", "bridge"},
		{"addr", "add", l.ip(1) + "/24", "dev", l.bridge()},
		{"link", "set", l.bridge(), "up"},
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return err
		}
	}
	if err := l.netnsUp("infra", 2); err != nil {
		return err
	}
	for i, n := range l.cfg.all() {
		if err := l.netnsUp(n, 11+i); err != nil {
			return err
		}
	}
	return nil
}

// netnsUp makes namespace prefix-name with eth0 at NET.host, its peer
// (named like the namespace) on the bridge, and a default route to the host.
func (l *Lab) netnsUp(name string, host int) error {
	ns := l.netns(name)
	steps := [][]string{
		{"netns", "add", ns},
		{"link", "add", ns, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"link", "set", ns, "master", l.bridge(), "up"},
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", ns, "addr", "add", l.ip(host) + "/24", "dev", "eth0"},
		{"-n", ns, "link", "set", "eth0", "up"},
		{"-n", ns, "route", "add", "default", "via", l.ip(1)},
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return err
		}
	}
	return nil
}

// netDown deletes the namespaces (their veth ends go with them) and the
// bridge. Missing pieces are fine: Down also cleans half-made labs.
func (l *Lab) netDown() error {
	var last error
	for _, ns := range l.netnsNames() {
		if _, err := os.Stat("/run/netns/" + ns); err == nil {
			if err := ip("netns", "del", ns); err != nil {
				last = err
			}
		}
	}
	// A namespace's veth pair goes with it, but the host's end may take a
	// moment to disappear: wait for it before deleting it by hand.
	deadline := time.Now().Add(3 * time.Second)
	for _, link := range l.linkNames() {
		for link != l.bridge() && exists(link) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if exists(link) {
			if err := ip("link", "del", link); err != nil && exists(link) {
				last = err
			}
		}
	}
	return last
}

func exists(link string) bool {
	_, err := os.Stat("/sys/class/net/" + link)
	return err == nil
}
