// Package doctor checks, before an agent runs on a node, everything the
// agent will need, and says for each what is wrong and how to fix it:
// nginx, systemd, the config repo with this node's credentials, the
// revision at the branch's head, Redis or Sentinel and the clock, the load
// balancer's credentials, the migrations database (directly, not through
// transaction pooling), the webhook secret, disk space for the kept
// releases, and the ports nginx and the workers will bind.
//
// The contract: Run changes nothing on the node or anywhere else (the repo
// is read into a temporary directory that is removed, the load balancer and
// the database are only read), every check has a deadline, checks that do
// not depend on each other run at once, and the results come back in a
// fixed order, one per check, each Pass, Warn or Fail.
package doctor

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/drover-dev/drover/lbdrain"
	"github.com/drover-dev/drover/spec"
)

// Status is a check's outcome. Only Fail makes the node not ready.
type Status string

// The outcomes.
const (
	Pass Status = "pass"
	Warn Status = "warn"
	Fail Status = "fail"
)

// Result is one check's outcome: what was checked, what was found, and
// (unless it passed) what to do about it.
type Result struct {
	Check  string
	Status Status
	Detail string
	Fix    string
}

// Config is what the checks need to know of the node.
type Config struct {
	Node *spec.Node
	// LB is the drain driver's config as the agent builds it from node.yaml.
	LB lbdrain.Config
	// Timeout bounds each check (default 5s); the repo's fetch gets twice it.
	Timeout time.Duration
	// SystemdRunning says whether systemd runs this machine (default: the
	// same test the agent makes when node.yaml leaves supervisor empty).
	SystemdRunning func() bool
	Log            *slog.Logger
}

// Failed reports whether any result failed.
func Failed(rs []Result) bool {
	for _, r := range rs {
		if r.Status == Fail {
			return true
		}
	}
	return false
}

// Run runs every check and returns their results in a fixed order.
func Run(ctx context.Context, cfg Config) []Result {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.SystemdRunning == nil {
		cfg.SystemdRunning = systemdRunning
	}
	d := &doctor{cfg: cfg, n: cfg.Node}
	// Each group runs in its own goroutine; a group's checks run in order
	// because each needs what the one before found.
	const lbGroup = 4
	groups := []func(context.Context) []Result{
		d.nginx,
		d.systemd,
		d.repo, // repo, branch, drover.yaml, then TLS, disk and ports from that spec
		d.cluster,
		d.lb,
		d.database,
		d.webhook,
	}
	out := make([][]Result, len(groups))
	var wg sync.WaitGroup
	for i, g := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = g(ctx)
		}()
	}
	wg.Wait()
	// The LB's health check against the endpoint nginx will serve: known
	// only once both the LB and drover.yaml were read.
	if d.target != nil {
		out[lbGroup] = append(out[lbGroup], d.healthTarget(d.target, d.sp))
	}
	var all []Result
	for _, rs := range out {
		all = append(all, rs...)
	}
	return all
}

type doctor struct {
	cfg Config
	n   *spec.Node
	// Set by the repo and lb groups (each by one goroutine), read after
	// both ended.
	sp     *spec.Spec
	target *lbdrain.HealthTarget
}

// bounded runs f with the per-check deadline.
func (d *doctor) bounded(ctx context.Context, scale int, f func(context.Context) Result) Result {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(scale)*d.cfg.Timeout)
	defer cancel()
	return f(ctx)
}

func pass(check, format string, args ...any) Result {
	return Result{Check: check, Status: Pass, Detail: fmt.Sprintf(format, args...)}
}

func warn(check, fix, format string, args ...any) Result {
	return Result{Check: check, Status: Warn, Detail: fmt.Sprintf(format, args...), Fix: fix}
}

func fail(check, fix, format string, args ...any) Result {
	return Result{Check: check, Status: Fail, Detail: fmt.Sprintf(format, args...), Fix: fix}
}

// CheckFile is drover doctor: node.yaml at file is the first check, then,
// when it is valid, Run's with the agent's own LB config and timeout
// bounding each check. It returns the node's name ("" when node.yaml is
// invalid). go-redis's own log of each failed dial is silenced (it is
// process-wide): the Redis check's line says what failed.
func CheckFile(ctx context.Context, file string, timeout time.Duration) (string, []Result) {
	cfg, err := spec.LoadNode(file)
	if err != nil {
		return "", []Result{fail("node.yaml", "write it with drover init, or fix the fields named above", "%s", err)}
	}
	redis.SetLogger(quietRedis{})
	return cfg.Name, append([]Result{pass("node.yaml", "%s is valid (node %s)", file, cfg.Name)},
		Run(ctx, Config{Node: cfg, LB: lbdrain.ConfigFor(cfg), Timeout: timeout})...)
}

type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}
