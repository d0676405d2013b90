// Package lab runs drover's end-to-end cluster on one machine: three (or
// more) Debian "servers", each a real systemd as PID 1 in its own network
// namespace (internal/sysnode), running nginx and the drover agent as
// systemd units and the workers as drover renders them; and, outside the
// nodes, in an "infra" network namespace, what a small team's cloud gives
// them: HAProxy as the load balancer (health checks on each node's health
// port), Redis (a master, a replica and three Sentinels), PostgreSQL, and a
// git forge serving the config repo over HTTP (git http-backend) that sends
// a signed push webhook when the branch moves.
//
// Addresses, on a bridge of the host (NET is Config.Net, a /24):
//
//	NET.1      the host (tests, the load generator, the user's browser)
//	NET.2      infra: HAProxy :80, Redis :6379 (master) and :6380 (replica),
//	           Sentinels :26379-26381, PostgreSQL :5432, forge :8418
//	NET.11...  the nodes n1, n2, ...
//
// Up starts it all and returns when every node runs; Down stops it and
// removes every process, mount, cgroup, namespace and interface it made.
// The processes outlive the Go process that started them (the drover-lab
// CLI starts a lab, then exits), and Open finds a running lab again from its
// directory. Everything is found by the PIDs in the lab's cgroups, never by
// name.
package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Config describes a lab. The zero value of a field takes the default.
type Config struct {
	// Dir holds the lab's state; default /tmp/drover-lab. Keep it short:
	// unix socket paths live under it.
	Dir string `json:"dir"`
	// Prefix names the lab's network namespaces, links and cgroup; default
	// "dl". Interface names are limited to 15 bytes: keep it short.
	Prefix string `json:"prefix"`
	// Net is the first three octets of the lab's /24; default 10.78.0.
	Net string `json:"net"`
	// Nodes are the nodes' names; default n1 n2 n3.
	Nodes []string `json:"nodes"`
	// Spares are more nodes, networked and in the load balancer's backend
	// (down) but not booted by Up: empty servers a test starts later.
	Spares []string `json:"spares"`
	// Bare names spares that boot with nginx and no drover at all: a new
	// server that a test installs the package on.
	Bare []string `json:"bare"`
	// Source is a drover checkout: examples/config seeds the config repo,
	// examples/systemd/drover.service runs the agent. Default: found by
	// walking up from the working directory to go.mod.
	Source string `json:"source"`
	// Drover is the drover binary installed on the nodes; default
	// Source/bin/drover.
	Drover string `json:"drover"`
	// Lab is the drover-lab binary, which runs the forge; default this
	// program (os.Executable).
	Lab string `json:"lab"`
	// Work is the user's clone of the config repo (pushes go through the
	// forge); default Dir/work.
	Work string `json:"work"`
	// PollInterval is the agents' repo.pollInterval; default 10s (the
	// webhook wakes them at once).
	PollInterval time.Duration `json:"pollInterval"`
	// LockExpiry is cluster.lockExpiry; default 15s (a killed holder
	// blocks the others this long).
	LockExpiry time.Duration `json:"lockExpiry"`
	// Handover, when set, is written into the seeded drover.yaml as
	// rollout.handover (the e2e scenarios name instance ports and catch
	// steps by their journal, so they run restart where they need it);
	// empty keeps the example's default.
	Handover string `json:"handover"`
	// Secret is the webhook secret; default a fixed demo value.
	Secret string `json:"secret"`
	// Log receives progress lines; default none.
	Log func(format string, args ...any) `json:"-"`
}

const (
	portLB       = 80
	portRedis    = 6379
	portReplica  = 6380
	portSentinel = 26379 // and the next two
	portPostgres = 5432
	portForge    = 8418
	portNotify   = 8419
	// portMetrics is each node's Prometheus endpoint (metrics.listen) on
	// its own address.
	portMetrics   = 9469
	masterName    = "drover"
	webhookPath   = "/_drover/webhook"
	webhookHost   = "deploy.example.com"
	healthPort    = 80
	httpsPort     = 443
	checkInterval = 500 * time.Millisecond // HAProxy's inter; drover's lb.healthcheck.interval
	checkFall     = 2
	checkRise     = 2
)

func (c *Config) defaults() error {
	if c.Dir == "" {
		c.Dir = "/tmp/drover-lab"
	}
	if c.Prefix == "" {
		c.Prefix = "dl"
	}
	if c.Net == "" {
		c.Net = "10.78.0"
	}
	if len(c.Nodes) == 0 {
		c.Nodes = []string{"n1", "n2", "n3"}
	}
	if c.Source == "" {
		src, err := findSource()
		if err != nil {
			return err
		}
		c.Source = src
	}
	if c.Drover == "" {
		c.Drover = filepath.Join(c.Source, "bin", "drover")
	}
	if c.Lab == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		c.Lab = exe
	}
	if c.Work == "" {
		c.Work = filepath.Join(c.Dir, "work")
	}
	if c.PollInterval == 0 {
		c.PollInterval = 10 * time.Second
	}
	if c.LockExpiry == 0 {
		c.LockExpiry = 15 * time.Second
	}
	if c.Secret == "" {
		c.Secret = "drover-lab-webhook-secret"
	}
	var err error
	for _, p := range []*string{&c.Dir, &c.Source, &c.Drover, &c.Lab, &c.Work} {
		if *p, err = filepath.Abs(*p); err != nil {
			return err
		}
	}
	if len(c.Prefix)+1+len("infra") > 15 {
		return fmt.Errorf("lab prefix %q is too long for interface names (15 bytes)", c.Prefix)
	}
	for _, n := range c.all() {
		if len(c.Prefix)+1+len(n) > 15 {
			return fmt.Errorf("node name %q with prefix %q is too long for an interface name", n, c.Prefix)
		}
	}
	return nil
}

// all are the nodes and the spares.
func (c *Config) all() []string { return append(append([]string(nil), c.Nodes...), c.Spares...) }

// findSource walks up from the working directory to drover's go.mod.
func findSource() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/drover-dev/drover\n") {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no drover checkout above %s: set the lab's source directory", dir)
		}
	}
}

// Lab is a lab, running or not.
type Lab struct {
	cfg   Config
	nodes map[string]*Node
}

// New describes a lab; nothing is started.
func New(cfg Config) (*Lab, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	l := &Lab{cfg: cfg, nodes: map[string]*Node{}}
	for i, name := range cfg.all() {
		n, err := l.newNode(name, i)
		if err != nil {
			return nil, err
		}
		l.nodes[name] = n
	}
	return l, nil
}

// Open finds the lab whose state is in dir (made by Up).
func Open(dir string) (*Lab, error) {
	b, err := os.ReadFile(filepath.Join(dir, "lab.json"))
	if err != nil {
		return nil, fmt.Errorf("no lab in %s (is it up?): %w", dir, err)
	}
	var cfg Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "lab.json"), err)
	}
	l, err := New(cfg)
	if err != nil {
		return nil, err
	}
	for _, n := range l.nodes {
		n.sys.Attach()
	}
	return l, nil
}

// Config is the lab's configuration with its defaults filled in.
func (l *Lab) Config() Config { return l.cfg }

func (l *Lab) logf(format string, args ...any) {
	if l.cfg.Log != nil {
		l.cfg.Log(format, args...)
	}
}

func (l *Lab) ip(host int) string { return fmt.Sprintf("%s.%d", l.cfg.Net, host) }

// InfraIP is the address of the infra namespace.
func (l *Lab) InfraIP() string { return l.ip(2) }

// LBAddr is HAProxy's frontend, host:port.
func (l *Lab) LBAddr() string { return fmt.Sprintf("%s:%d", l.InfraIP(), portLB) }

// HAProxySocket is HAProxy's runtime API socket on the host.
func (l *Lab) HAProxySocket() string { return filepath.Join(l.cfg.Dir, "infra", "haproxy.sock") }

// RedisAddrs are the master's and the replica's addresses (which is master
// changes on failover: ask a Sentinel).
func (l *Lab) RedisAddrs() []string {
	return []string{fmt.Sprintf("%s:%d", l.InfraIP(), portRedis), fmt.Sprintf("%s:%d", l.InfraIP(), portReplica)}
}

// SentinelAddrs are the three Sentinels.
func (l *Lab) SentinelAddrs() []string {
	var out []string
	for i := range 3 {
		out = append(out, fmt.Sprintf("%s:%d", l.InfraIP(), portSentinel+i))
	}
	return out
}

// MasterName is the Sentinels' name of the Redis master.
func (l *Lab) MasterName() string { return masterName }

// PostgresDSN reaches the cluster's database.
func (l *Lab) PostgresDSN() string {
	return fmt.Sprintf("postgres://postgres@%s:%d/postgres?sslmode=disable", l.InfraIP(), portPostgres)
}

// RepoURL is the config repo on the forge.
func (l *Lab) RepoURL() string { return fmt.Sprintf("http://%s:%d/config.git", l.InfraIP(), portForge) }

// Work is the user's clone of the config repo.
func (l *Lab) Work() string { return l.cfg.Work }

// Nodes lists the nodes in order, spares last.
func (l *Lab) Nodes() []*Node {
	var out []*Node
	for _, name := range l.cfg.all() {
		out = append(out, l.nodes[name])
	}
	return out
}

// Node returns a node by name, or nil.
func (l *Lab) Node(name string) *Node { return l.nodes[name] }

// Up starts the lab: network, infra, config repo, nodes. Leftovers of an
// earlier lab with the same directory are torn down first. On failure
// everything started is torn down again.
func (l *Lab) Up(ctx context.Context) (err error) {
	start := time.Now()
	if err := canRun(); err != nil {
		return err
	}
	if _, err := os.Stat(l.cfg.Drover); err != nil {
		return fmt.Errorf("drover binary: %w (run `make build`)", err)
	}
	// A clone outside the lab's directory is the user's: refuse before
	// touching anything (an earlier lab may still be running).
	if l.userClone() {
		if _, err := os.Stat(l.cfg.Work); err == nil {
			return fmt.Errorf("the lab's clone %s exists: is a lab running? `make demo-stop` stops it and removes the clone", l.cfg.Work)
		}
	}
	if l.leftovers() {
		l.logf("tearing down the leftovers of an earlier lab in %s", l.cfg.Dir)
		if err := l.Down(ctx); err != nil {
			return fmt.Errorf("tear down the earlier lab: %w", err)
		}
	}
	defer func() {
		if err != nil {
			if made := l.userClone(); made {
				_ = os.RemoveAll(l.cfg.Work) // made by this Up; nothing of the user's yet
			}
			if derr := l.Down(context.Background()); derr != nil {
				err = errors.Join(err, fmt.Errorf("tear down after failure: %w", derr))
			}
		}
	}()
	if err := os.MkdirAll(l.cfg.Dir, 0o755); err != nil {
		return err
	}
	if err := os.Chmod(l.cfg.Dir, 0o755); err != nil { // postgres and www-data traverse it
		return err
	}
	b, _ := json.MarshalIndent(l.cfg, "", "  ")
	if err := os.WriteFile(filepath.Join(l.cfg.Dir, "lab.json"), b, 0o644); err != nil {
		return err
	}
	if err := l.netUp(); err != nil {
		return err
	}
	var boot []*Node
	for _, name := range l.cfg.Nodes {
		n := l.nodes[name]
		if err := n.prepare(); err != nil {
			return err
		}
		boot = append(boot, n)
	}
	// The repo before the forge: the forge's first look at the branch is
	// its baseline, not a push.
	if err := l.repoUp(ctx); err != nil {
		return err
	}
	if err := l.infraUp(ctx); err != nil {
		return err
	}
	// Nodes boot in parallel: each systemd takes a few seconds of mostly
	// waiting.
	errc := make(chan error, len(boot))
	for _, n := range boot {
		go func() { errc <- n.Start(ctx) }()
	}
	var errs []error
	for range boot {
		errs = append(errs, <-errc)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	l.logf("lab up in %s: LB http://%s, repo %s (clone in %s)", time.Since(start).Round(time.Millisecond), l.LBAddr(), l.RepoURL(), l.cfg.Work)
	return nil
}

// userClone reports whether the clone lives outside the lab's directory
// (make demo's .demo/config), where Down does not remove it.
func (l *Lab) userClone() bool {
	return !strings.HasPrefix(l.cfg.Work, l.cfg.Dir+string(filepath.Separator))
}

// Down stops every node and service of the lab and removes what it made;
// the error lists whatever is left.
func (l *Lab) Down(ctx context.Context) error {
	var errs []error
	nodes := l.Nodes()
	done := make(chan error, len(nodes))
	for _, n := range nodes {
		go func() { done <- n.destroy(ctx) }()
	}
	for range nodes {
		errs = append(errs, <-done)
	}
	errs = append(errs, l.infraDown(), l.netDown())
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if left := mountsUnder(l.cfg.Dir); len(left) > 0 {
		return fmt.Errorf("mounts left under %s: %v", l.cfg.Dir, left)
	}
	if err := os.RemoveAll(l.cfg.Dir); err != nil {
		return err
	}
	if left := l.Leftovers(); len(left) > 0 {
		return fmt.Errorf("left behind: %s", strings.Join(left, "; "))
	}
	l.logf("lab down")
	return nil
}

// leftovers reports whether anything of a lab with this configuration is
// on the machine.
func (l *Lab) leftovers() bool {
	if _, err := os.Stat(l.cfg.Dir); err == nil {
		return true
	}
	return len(l.Leftovers()) > 0
}

// Leftovers lists the lab's processes, cgroups, mounts, namespaces and
// interfaces still on the machine.
func (l *Lab) Leftovers() []string {
	var left []string
	if _, err := os.Stat(l.cgroup()); err == nil {
		left = append(left, "cgroup "+l.cgroup())
	}
	for _, m := range mountsUnder(l.cfg.Dir) {
		left = append(left, "mount "+m)
	}
	for _, ns := range l.netnsNames() {
		if _, err := os.Stat("/run/netns/" + ns); err == nil {
			left = append(left, "netns "+ns)
		}
	}
	for _, link := range l.linkNames() {
		if _, err := os.Stat("/sys/class/net/" + link); err == nil {
			left = append(left, "interface "+link)
		}
	}
	if _, err := os.Stat(l.cfg.Dir); err == nil {
		left = append(left, "directory "+l.cfg.Dir)
	}
	return left
}
