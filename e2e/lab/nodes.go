package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/drover-dev/drover/internal/sysnode"
)

// Node is one server of the lab: a systemd in its own namespaces whose
// nginx.service and drover.service start at boot.
type Node struct {
	lab  *Lab
	name string
	addr string
	sys  *sysnode.Node
	// bare: booted without drover (Config.Bare).
	bare bool
}

func (l *Lab) newNode(name string, i int) (*Node, error) {
	n := &Node{lab: l, name: name, addr: l.ip(11 + i), bare: slices.Contains(l.cfg.Bare, name)}
	enable := []string{"nginx.service", "drover.service"}
	if n.bare {
		enable = enable[:1]
	}
	sys, err := sysnode.New(filepath.Join(l.cfg.Dir, "nodes", name), l.cgroupGroup(), sysnode.Options{
		Name:      name,
		NetNS:     "/run/netns/" + l.netns(name),
		Enable:    enable,
		Hosts:     fmt.Sprintf("%s\tinfra\n", l.InfraIP()),
		TmpfsSize: "1g",
		Persist:   true,
	})
	if err != nil {
		return nil, err
	}
	n.sys = sys
	return n, nil
}

// Name is the node's name (its host name and drover's node name).
func (n *Node) Name() string { return n.name }

// IP is the node's address.
func (n *Node) IP() string { return n.addr }

// Sys is the node's systemd, for what this type does not wrap.
func (n *Node) Sys() *sysnode.Node { return n.sys }

// Running reports whether the node's systemd runs.
func (n *Node) Running() bool { return n.sys.Running() }

// prepare mounts the node's disk and installs drover on it: the binary, its
// node.yaml and secrets, and the agent's unit from examples/systemd.
func (n *Node) prepare() error {
	if err := n.sys.Prepare(); err != nil {
		return fmt.Errorf("node %s: %w", n.name, err)
	}
	if n.bare {
		return nil // a new server: whoever boots it installs drover
	}
	bin, err := os.ReadFile(n.lab.cfg.Drover)
	if err != nil {
		return err
	}
	unit, err := os.ReadFile(filepath.Join(n.lab.cfg.Source, "examples", "systemd", "drover.service"))
	if err != nil {
		return err
	}
	files := []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{"/usr/local/bin/drover", bin, 0o755},
		{"/etc/drover/node.yaml", []byte(n.nodeYAML()), 0o644},
		{"/etc/drover/webhook.secret", []byte(n.lab.cfg.Secret + "\n"), 0o600},
		{"/etc/drover/db.dsn", []byte(n.lab.PostgresDSN() + "\n"), 0o600},
		{"/etc/systemd/system/drover.service", unit, 0o644},
	}
	for _, f := range files {
		if err := n.sys.WriteFile(f.path, f.data, f.mode); err != nil {
			return fmt.Errorf("node %s: %w", n.name, err)
		}
	}
	return nil
}

// InitCommand is the shell command that makes this node's node.yaml with
// `drover init`, from the lab's settings as an operator would type them (the
// webhook secret on stdin), for a bare node that installed the package.
func (n *Node) InitCommand() string {
	l := n.lab
	args := []string{"drover", "init", "--name", n.name, "--repo", l.RepoURL(), "--branch", "main",
		"--cluster-name", "lab", "--sentinel", strings.Join(l.SentinelAddrs(), ","), "--master-name", masterName,
		"--lb-driver", "healthcheck", "--lb-check-interval", checkInterval.String(),
		"--lb-unhealthy-threshold", strconv.Itoa(checkFall), "--lb-healthy-threshold", strconv.Itoa(checkRise),
		"--webhook-secret", "-", "--webhook-server-name", webhookHost, "--webhook-provider", "gitea",
		"--dsn", l.PostgresDSN()}
	for i, a := range args {
		args[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return fmt.Sprintf("printf '%%s\\n' '%s' | %s", l.cfg.Secret, strings.Join(args, " "))
}

// nodeYAML is the node's /etc/drover/node.yaml: a server's, with the lab's
// addresses.
func (n *Node) nodeYAML() string {
	l := n.lab
	return fmt.Sprintf(`# drover-lab node %[1]s: a server of the lab cluster.
name: %[1]s
keepReleases: 3
repo:
  url: %[2]s
  branch: main
  pollInterval: %[3]s
nginx:
  tls: {selfSigned: true}   # the lab has no real certificates
  revisionHeader: true      # every answer names its revision and node (the scenarios check them)
supervisor: systemd
cluster:
  name: lab
  sentinels: [%[4]s]
  masterName: %[5]s
  lockExpiry: %[6]s
webhook:
  listen: 127.0.0.1:9095
  path: %[7]s
  serverName: %[8]s
  secretFile: /etc/drover/webhook.secret
  provider: gitea
lb:
  driver: healthcheck        # HAProxy checks the health port, like a cloud LB
  healthcheck: {interval: %[9]s, unhealthyThreshold: %[10]d, healthyThreshold: %[11]d}
database:
  dsnFile: /etc/drover/db.dsn
metrics:
  listen: %[12]s            # the lab's private network: the host scrapes it
notify:
  webhooks: [{url: "%[13]s"}]   # the lab's receiver (drover-lab status shows what it got)
  timeout: 2s
log: {level: info, format: text}
`, n.name, l.RepoURL(), l.cfg.PollInterval, strings.Join(l.SentinelAddrs(), ", "), masterName, l.cfg.LockExpiry,
		webhookPath, webhookHost, checkInterval, checkFall, checkRise, n.MetricsAddr(), l.NotifyURL())
}

// Partition cuts the node off from the lab's Redis, Sentinels and forge
// (a policy-routing blackhole for their ports in its namespace), while the
// load balancer still reaches it and it still reaches PostgreSQL: the
// network fault a node can survive while serving. Heal undoes it.
func (n *Node) Partition() error {
	for _, port := range partitionPorts {
		if err := ip("-n", n.lab.netns(n.name), "rule", "add", "priority", "100", "ipproto", "tcp", "dport", port, "blackhole"); err != nil {
			return err
		}
	}
	return nil
}

// CanReachRedis reports whether the node can open a TCP connection to the
// lab's Redis master port (false while partitioned).
func (n *Node) CanReachRedis(ctx context.Context) bool {
	_, err := n.Run(ctx, "timeout", "3", "bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/%s/%d", n.lab.InfraIP(), portRedis))
	return err == nil
}

// Heal ends a Partition.
func (n *Node) Heal() error {
	var last error
	for _, port := range partitionPorts {
		if err := ip("-n", n.lab.netns(n.name), "rule", "del", "priority", "100", "ipproto", "tcp", "dport", port, "blackhole"); err != nil {
			last = err
		}
	}
	return last
}

var partitionPorts = []string{
	strconv.Itoa(portRedis), strconv.Itoa(portReplica),
	strconv.Itoa(portSentinel), strconv.Itoa(portSentinel + 1), strconv.Itoa(portSentinel + 2),
	strconv.Itoa(portForge),
}

// JournalEntry is the node's rollout journal (STATE/journal.json), read from its
// disk: the change in flight, or ok false when none is.
func (n *Node) JournalEntry() (to, step string, ok bool) {
	b, err := os.ReadFile(n.sys.Path("/var/lib/drover/journal.json"))
	if err != nil {
		return "", "", false
	}
	var e struct{ To, Step string }
	if json.Unmarshal(b, &e) != nil {
		return "", "", false
	}
	return e.To, e.Step, true
}

// KillAgent SIGKILLs the node's drover agent (systemd restarts it).
func (n *Node) KillAgent(ctx context.Context) error {
	out, err := n.Run(ctx, "systemctl", "kill", "--signal=SIGKILL", "drover.service")
	if err != nil {
		return fmt.Errorf("kill the agent on %s: %w: %s", n.name, err, out)
	}
	return nil
}

// MetricsAddr is host:port of the node's Prometheus endpoint.
func (n *Node) MetricsAddr() string { return fmt.Sprintf("%s:%d", n.addr, portMetrics) }

// Start boots the node (again: its disk survives Kill).
func (n *Node) Start(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if err := n.prepare(); err != nil {
		return err
	}
	state, err := n.sys.Start(ctx)
	if err != nil {
		return fmt.Errorf("boot node %s: %w", n.name, err)
	}
	if state == "degraded" {
		out, _ := n.sys.Systemctl(ctx, "--failed", "--plain", "--no-legend")
		n.lab.logf("node %s is degraded; failed units: %s", n.name, out)
	}
	n.lab.logf("node %s up at %s (PID 1 is %d on the host)", n.name, n.addr, n.sys.PID())
	return nil
}

// Kill ends the node at once: a lost server.
func (n *Node) Kill() { n.sys.Kill() }

// Poweroff shuts the node down cleanly.
func (n *Node) Poweroff(ctx context.Context) error { return n.sys.Poweroff(ctx) }

func (n *Node) destroy(ctx context.Context) error {
	if n.sys.Running() {
		ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		_ = n.sys.Poweroff(ctx)
		cancel()
	}
	return n.sys.Destroy()
}

// Run runs argv inside the node.
func (n *Node) Run(ctx context.Context, argv ...string) (string, error) {
	return n.sys.Run(ctx, argv...)
}

// Journal is the tail of a unit's journal in the node.
func (n *Node) Journal(unit string, lines int) string { return n.sys.Journal(unit, lines) }

// Status is what `drover status -o json` says on the node.
func (n *Node) Status(ctx context.Context) (map[string]any, error) {
	out, err := n.Run(ctx, "drover", "status", "--config", "/etc/drover/node.yaml", "-o", "json")
	if err != nil {
		return nil, err
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("drover status on %s: %w: %s", n.name, err, out)
	}
	return st, nil
}

// Live is the revision the node's `current` release link points at, or "".
func (n *Node) Live() string {
	target, err := os.Readlink(n.sys.Path("/var/lib/drover/current"))
	if err != nil {
		return ""
	}
	return filepath.Base(target)
}
