package reconcile

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/drover-dev/drover/internal/layout"
)

// The in-process suite: every path of a node's turn, driven against fakes
// that hold state (fakes_test.go) inside a testing/synctest bubble, so
// health timeouts, soaks, backoffs and capacity waits cost no wall time.
// Each case ends by replaying the cluster's history against the
// invariants (checkInvariants), whatever else it checks.

// suiteSpec is a release with one worker; rollout is added to the
// rollout settings.
func suiteSpec(rollout string) string {
	if !strings.Contains(rollout, "soak:") {
		rollout += ", soak: 0s"
	}
	return `version: 1
rollout: {healthTimeout: 5s, drainTimeout: 10s, progressDeadline: 10m, ` + strings.TrimPrefix(rollout, ", ") + `}
workers:
  - name: api
    source: workers/api
    exec: [node, server.js]
    port: 3000
    health: {path: /healthz, timeout: 500ms, interval: 50ms}
`
}

// replayed is one node as the history says it is.
type replayed struct {
	in, held bool
	cur      string
	verified string            // the release whose checks passed last, "" since a change
	runs     map[string]string // "workers", "nginx" → release
}

// checkInvariants replays the cluster's history and fails the test for
// each step that broke an invariant:
//   - nothing switched, restarted or reconfigured while the LB had the
//     node in service (re-applying the live release's own is allowed);
//   - a node leaves service (drain) only while it holds the rollout lock,
//     and then never more than maxUnavailable registered nodes are out;
//   - no more than maxUnavailable nodes hold the lock at once;
//   - a node re-joins (undrain) only with a live release whose checks
//     passed since it last changed;
//   - no node switches to a revision after it was halted.
//
// Every node starts on aaaa, verified and in service.
func checkInvariants(t *testing.T, c *suiteCluster, maxUnavailable int) {
	t.Helper()
	hist := c.events()
	nodes := map[string]*replayed{}
	for _, sn := range c.nodes {
		nodes[sn.name] = &replayed{in: true, cur: "aaaa", verified: "aaaa", runs: map[string]string{"workers": "aaaa", "nginx": "aaaa"}}
	}
	othersOut := map[string]bool{}
	halted := map[string]bool{}
	bad := 0
	fail := func(i int, format string, args ...any) {
		bad++
		t.Errorf("invariant broken at history[%d] %q: %s", i, hist[i], fmt.Sprintf(format, args...))
	}
	for i, line := range hist {
		name, ev, _ := strings.Cut(line, " ")
		verb, rev, _ := strings.Cut(ev, " ")
		r, agent := nodes[name]
		if !agent {
			othersOut[name] = ev == "out"
			continue
		}
		switch verb {
		case "lock":
			r.held = true
			holders := 0
			for _, o := range nodes {
				if o.held {
					holders++
				}
			}
			if holders > maxUnavailable {
				fail(i, "%d nodes hold the rollout lock, maxUnavailable is %d", holders, maxUnavailable)
			}
		case "unlock", "lost", "crash":
			r.held = false
		case "drain":
			if !r.in {
				break // again, idempotent: the node was out already
			}
			if !r.held {
				fail(i, "%s left service without holding the rollout lock", name)
			}
			r.in = false
			var out []string
			for n, o := range nodes {
				if !o.in {
					out = append(out, n)
				}
			}
			for n, o := range othersOut {
				if o {
					out = append(out, n)
				}
			}
			if len(out) > maxUnavailable {
				fail(i, "%d nodes out of service (%s), maxUnavailable is %d", len(out), strings.Join(out, ", "), maxUnavailable)
			}
		case "undrain":
			if r.verified != r.cur {
				fail(i, "%s re-joined the LB on %s before its checks passed (last passed: %q)", name, r.cur, r.verified)
			}
			r.in = true
		case "switch":
			if r.in && rev != r.cur {
				fail(i, "%s switched from %s to %s while in service", name, r.cur, rev)
			}
			if halted[rev] {
				fail(i, "%s switched to %s after it was halted", name, rev)
			}
			if rev != r.cur {
				r.verified = ""
			}
			r.cur = rev
		case "workers", "nginx":
			if r.in && r.runs[verb] != rev {
				fail(i, "%s moved its %s from %s to %s while in service", name, verb, r.runs[verb], rev)
			}
			if r.runs[verb] != rev {
				r.verified = ""
			}
			r.runs[verb] = rev
		case "checks":
			rev, result, _ := strings.Cut(rev, " ")
			if rev == r.cur {
				r.verified = map[bool]string{true: rev, false: ""}[result == "ok"]
			}
		case "halt":
			halted[rev] = true
		}
	}
	if bad > 0 {
		t.Logf("history:\n  %s", strings.Join(hist, "\n  "))
	}
}

// inOrder reports whether want occur in hist in this order (not
// necessarily next to each other).
func inOrder(hist []string, want ...string) bool {
	for _, h := range hist {
		if len(want) > 0 && h == want[0] {
			want = want[1:]
		}
	}
	return len(want) == 0
}

func wantInOrder(t *testing.T, c *suiteCluster, want ...string) {
	t.Helper()
	if hist := c.events(); !inOrder(hist, want...) {
		t.Errorf("history lacks, in this order, %q:\n  %s", want, strings.Join(hist, "\n  "))
	}
}

func wantNone(t *testing.T, c *suiteCluster, ev string) {
	t.Helper()
	for _, h := range c.events() {
		if h == ev {
			t.Errorf("history has %q:\n  %s", ev, strings.Join(c.events(), "\n  "))
			return
		}
	}
}

// end checks where a node ended: its live release, whether the LB has it,
// and that what runs is that release's.
func (sn *suiteNode) end(t *testing.T, live string, in bool) {
	t.Helper()
	cur, _ := sn.rel.Current()
	w, x := sn.parts.running("workers"), sn.parts.running("nginx")
	if cur != live || w != live || x != live || sn.inService() != in {
		t.Errorf("%s ended live on %s (workers %s, nginx %s), in service %v; want %s, in service %v",
			sn.name, cur, w, x, sn.inService(), live, in)
	}
}

func (c *suiteCluster) halts() []string {
	c.reg.mu.Lock()
	defer c.reg.mu.Unlock()
	var hs []string
	for rev := range c.reg.halted {
		hs = append(hs, rev)
	}
	return hs
}

// loseLockAt takes the lock from n1 right after its event ev.
func loseLockAt(ev string) func(c *suiteCluster, sn *suiteNode) {
	return func(c *suiteCluster, sn *suiteNode) {
		c.hook = func(node, e string) {
			if node == sn.name && e == ev {
				c.loseLock(node)
			}
		}
	}
}

// TestSuiteTurn: every way one node's turn ends, each from aaaa live and
// in service to bbbb at the branch head.
func TestSuiteTurn(t *testing.T) {
	for _, c := range []struct {
		name string
		to   string // bbbb's spec (default suiteSpec(""))
		tree string // drover.yaml at bbbb in the repo, if not to
		// setup changes the node's parts before its agent starts.
		setup func(c *suiteCluster, sn *suiteNode)
		err   string // in Sync's error ("" for none)
		// applied, rolledBack: the Outcome; halted: bbbb halted.
		applied, rolledBack, halted bool
		backoff                     bool   // bbbb retried only after a backoff
		live                        string // live release at the end
		out                         bool   // left out of the LB
		journal                     Step   // left in the journal ("" for cleared)
		then                        func(t *testing.T, c *suiteCluster, sn *suiteNode)
	}{{
		name: "a good revision goes live", applied: true, live: "bbbb",
		then: func(t *testing.T, c *suiteCluster, sn *suiteNode) {
			wantInOrder(t, c, "n1 step preparing", "n1 lock", "n1 migrate bbbb", "n1 drain", "n1 switch bbbb",
				"n1 workers bbbb", "n1 nginx bbbb", "n1 checks bbbb ok", "n1 step undraining", "n1 undrain", "n1 unlock")
		},
	}, {
		name: "prepare: an invalid spec halts the revision before the lock",
		tree: "version: 1\nrollout: {maxUnavailabel: 1}\n", err: "maxUnavailabel", halted: true, live: "aaaa",
		then: func(t *testing.T, c *suiteCluster, sn *suiteNode) { wantNone(t, c, "n1 lock") },
	}, {
		name: "prepare: a failed install backs off, then is retried",
		setup: func(c *suiteCluster, sn *suiteNode) {
			sn.rel.prepareErr = errors.New("yarn install: network unreachable")
		},
		err: "network unreachable", backoff: true, live: "aaaa",
		then: func(t *testing.T, c *suiteCluster, sn *suiteNode) {
			wantNone(t, c, "n1 lock")
			before := len(c.events())
			if _, err, _ := sn.sync(t.Context()); err != nil || len(c.events()) != before {
				t.Errorf("a sync within the backoff: %v, history %q; want nothing done", err, c.events()[before:])
			}
			sn.rel.mu.Lock()
			sn.rel.prepareErr = nil
			sn.rel.mu.Unlock()
			time.Sleep(time.Minute + time.Second)
			if out, err, _ := sn.sync(t.Context()); err != nil || !out.Applied {
				t.Fatalf("after the backoff: %+v, %v", out, err)
			}
			sn.end(t, "bbbb", true)
		},
	}, {
		name: "prepare: a release error that says it is the revision's fault halts before the lock",
		setup: func(c *suiteCluster, sn *suiteNode) {
			sn.rel.prepareErr = fmt.Errorf("secrets: %w", revErr{fault: true})
		},
		err: "already exists", halted: true, live: "aaaa",
		then: func(t *testing.T, c *suiteCluster, sn *suiteNode) { wantNone(t, c, "n1 lock") },
	}, {
		name: "migrations: a failing migration halts the revision undrained",
		setup: func(c *suiteCluster, sn *suiteNode) {
			sn.mig.fails, sn.mig.err = 1, BadRevision(errors.New(`ERROR: column "email" already exists`))
		},
		err: "already exists", halted: true, live: "aaaa",
		then: func(t *testing.T, c *suiteCluster, sn *suiteNode) {
			wantInOrder(t, c, "n1 lock", "n1 migrate bbbb fail", "n1 halt bbbb", "n1 unlock")
			wantNone(t, c, "n1 drain")
		},
	}, {
		name: "migrations: a lost database connection is retried after the backoff",
		setup: func(c *suiteCluster, sn *suiteNode) {
			sn.mig.fails, sn.mig.err = 1, errors.New("dial tcp 10.0.0.5:5432: connection refused")
		},
		err: "connection refused", backoff: true, live: "aaaa",
		then: func(t *testing.T, c *suiteCluster, sn *suiteNode) {
			wantNone(t, c, "n1 drain")
			time.Sleep(time.Minute + time.Second)
			if out, err, _ := sn.sync(t.Context()); err != nil || !out.Applied {
				t.Fatalf("after the backoff: %+v, %v", out, err)
			}
			wantInOrder(t, c, "n1 migrate bbbb fail", "n1 unlock", "n1 lock", "n1 migrate bbbb", "n1 drain", "n1 switch bbbb")
			sn.end(t, "bbbb", true)
		},
	}, {
		name:  "drain: a failed drain puts the node back on the old release, and backs off",
		setup: func(c *suiteCluster, sn *suiteNode) { sn.lb.drainErr = errors.New("haproxy: still 3 sessions") },
		err:   "drain: haproxy", live: "aaaa", backoff: true,
		then: func(t *testing.T, c *suiteCluster, sn *suiteNode) {
			wantInOrder(t, c, "n1 drain", "n1 undrain", "n1 unlock")
			wantNone(t, c, "n1 switch bbbb")
		},
	}, {
		name: "switch: workers that fail to start halt and roll back",
		setup: func(c *suiteCluster, sn *suiteNode) {
			sn.deps.Supervisor = faultySup{recSup: recSup{sn.parts}, failOn: "bbbb", err: errors.New("drover-api@0.service: start request failed")}
		},
		err: "workers: drover-api@0.service", rolledBack: true, halted: true, live: "aaaa",
	}, {
		name: "switch: nginx refusing the config halts and rolls back",
		setup: func(c *suiteCluster, sn *suiteNode) {
			sn.deps.Web = faultyWeb{recWeb: recWeb{sn.parts}, failOn: "bbbb"}
		},
		err: "nginx: nginx -t", rolledBack: true, halted: true, live: "aaaa",
	}, {
		name:  "verify: failing checks halt and roll back, drained throughout",
		setup: func(c *suiteCluster, sn *suiteNode) { sn.setHealth("bbbb", healthFail) },
		err:   "checks of bbbb not healthy", rolledBack: true, halted: true, live: "aaaa",
		then: func(t *testing.T, c *suiteCluster, sn *suiteNode) {
			wantInOrder(t, c, "n1 drain", "n1 switch bbbb", "n1 checks bbbb fail", "n1 halt bbbb", "n1 step rolling-back",
				"n1 switch aaaa", "n1 workers aaaa", "n1 nginx aaaa", "n1 checks aaaa ok", "n1 undrain", "n1 step failed", "n1 unlock")
		},
	}, {
		name: "soak: a release that dies during the soak halts and rolls back",
		to:   suiteSpec("soak: 10s"), setup: func(c *suiteCluster, sn *suiteNode) { sn.setHealth("bbbb", healthDies) },
		err: "after 10s of soak", rolledBack: true, halted: true, live: "aaaa",
		then: func(t *testing.T, c *suiteCluster, sn *suiteNode) {
			wantInOrder(t, c, "n1 checks bbbb ok", "n1 checks bbbb fail", "n1 halt bbbb", "n1 switch aaaa", "n1 checks aaaa ok", "n1 undrain")
		},
	}, {
		name:  "lock lost mid-switch: rolled back, not halted",
		setup: loseLockAt("switch bbbb"),
		err:   "rollout lock lost during verifying: lock expired", rolledBack: true, live: "aaaa",
		then: func(t *testing.T, c *suiteCluster, sn *suiteNode) {
			wantInOrder(t, c, "n1 switch bbbb", "n1 lost", "n1 switch aaaa", "n1 checks aaaa ok", "n1 undrain")
		},
	}, {
		name:  "lock lost during the soak: rolled back, not halted",
		to:    suiteSpec("soak: 10s"),
		setup: loseLockAt("checks bbbb ok"),
		err:   "rollout lock lost during verifying", rolledBack: true, live: "aaaa",
		then: func(t *testing.T, c *suiteCluster, sn *suiteNode) {
			wantInOrder(t, c, "n1 checks bbbb ok", "n1 lost", "n1 step rolling-back", "n1 switch aaaa", "n1 checks aaaa ok", "n1 undrain")
		},
	}, {
		name: "lock lost while waiting for capacity: never drains",
		setup: func(c *suiteCluster, sn *suiteNode) {
			c.setOther("n3", true)
			c.hook = func(node, ev string) {
				if node == "n1" && ev == "capacity wait" {
					go func() { time.Sleep(time.Minute); c.loseLock("n1") }()
				}
			}
		},
		err: "capacity: context canceled", live: "aaaa",
		then: func(t *testing.T, c *suiteCluster, sn *suiteNode) {
			wantInOrder(t, c, "n1 capacity wait", "n1 lost")
			wantNone(t, c, "n1 drain")
		},
	}, {
		name: "onFailure halt: stays drained on the failed release, across a restart",
		to:   suiteSpec("onFailure: halt"), setup: func(c *suiteCluster, sn *suiteNode) { sn.setHealth("bbbb", healthFail) },
		err: "health checks", halted: true, live: "bbbb", out: true, journal: StepFailed,
		then: func(t *testing.T, c *suiteCluster, sn *suiteNode) {
			// A restarted agent (a package upgrade) keeps the hold: it
			// once recovered the node back onto aaaa and undrained it.
			sn.start(t)
			if err := sn.n.Recover(t.Context()); err != nil {
				t.Fatalf("recover a held node: %v", err)
			}
			if e := sn.journal(t); e == nil || !e.Held || !e.Drained {
				t.Errorf("journal after the restart %+v, want the hold kept", e)
			}
			if st := sn.n.Status(); st.Step != StepFailed || !strings.Contains(st.Error, "held drained on the failed release") {
				t.Errorf("status after the restart %+v, want failed, held", st)
			}
			sn.end(t, "bbbb", false)
			wantNone(t, c, "n1 switch aaaa")
			wantNone(t, c, "n1 undrain")
		},
	}, {
		name: "node fault: the supervisor unreachable mid-switch does not halt",
		setup: func(c *suiteCluster, sn *suiteNode) {
			sn.deps.Supervisor = faultySup{recSup: recSup{sn.parts}, failOn: "bbbb", err: downErr{}}
		},
		err: "this node failed during switching, not revision bbbb", rolledBack: true, backoff: true, live: "aaaa",
	}} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				to := c.to
				if to == "" {
					to = suiteSpec("")
				}
				cl := newSuiteCluster()
				sn := cl.addNode(t, "n1", suiteSpec(""), to)
				if c.tree != "" {
					sn.deps.Source = treeSource{rev: "bbbb", tree: treeOf(c.tree)}
				}
				if c.setup != nil {
					c.setup(cl, sn)
				}
				sn.start(t) // with the parts as set up
				out, err, _ := sn.sync(t.Context())
				switch {
				case c.err == "" && err != nil:
					t.Errorf("sync: %v", err)
				case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
					t.Errorf("sync: %v, want an error with %q", err, c.err)
				}
				if out.Applied != c.applied || out.RolledBack != c.rolledBack {
					t.Errorf("outcome %+v, want applied %v, rolled back %v", out, c.applied, c.rolledBack)
				}
				if hs := cl.halts(); (len(hs) == 1) != c.halted {
					t.Errorf("halted %q, want bbbb halted: %v", hs, c.halted)
				}
				if _, backedOff := sn.n.retry["bbbb"]; backedOff != c.backoff {
					t.Errorf("bbbb backed off: %v, want %v", backedOff, c.backoff)
				}
				sn.end(t, c.live, !c.out)
				e := sn.journal(t)
				switch {
				case c.journal == "" && e != nil:
					t.Errorf("journal left: %+v", e)
				case c.journal != "" && (e == nil || e.Step != c.journal || !e.Drained):
					t.Errorf("journal %+v, want it at %s, drained", e, c.journal)
				}
				if c.then != nil {
					c.then(t, cl, sn)
				}
				checkInvariants(t, cl, 1)
			})
		})
	}
}

// TestSuiteCapacity: a node whose turn comes while other registered nodes
// are out of service waits, without draining, until it may leave; that
// wait is bounded by the progress deadline.
func TestSuiteCapacity(t *testing.T) {
	for _, c := range []struct {
		name           string
		maxUnavailable int
		out            []string      // other nodes out at the start
		back           time.Duration // when they come back (0: never)
		err            string
	}{
		{name: "another node out: waits until it is back", maxUnavailable: 1, out: []string{"n3"}, back: 3 * time.Minute},
		{name: "another node out for good: gives up at the progress deadline", maxUnavailable: 1, out: []string{"n3"}, err: "capacity: context deadline exceeded"},
		{name: "maxUnavailable 2, one out: goes on at once", maxUnavailable: 2, out: []string{"n3"}},
		{name: "maxUnavailable 2, two out: waits", maxUnavailable: 2, out: []string{"n3", "n4"}, back: time.Minute},
	} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				sp := suiteSpec(fmt.Sprintf("maxUnavailable: %d", c.maxUnavailable))
				cl := newSuiteCluster()
				sn := cl.addNode(t, "n1", sp, sp)
				for _, o := range c.out {
					cl.setOther(o, true)
				}
				type result struct {
					out Outcome
					err error
				}
				done := make(chan result, 1)
				start := time.Now()
				go func() { out, err, _ := sn.sync(t.Context()); done <- result{out, err} }()
				waits := len(c.out) >= c.maxUnavailable
				if waits {
					time.Sleep(30 * time.Second)
					synctest.Wait()
					st := sn.n.Status()
					if st.Step != StepWaiting || !strings.Contains(st.Error, "waiting for capacity: ") || !strings.Contains(st.Error, "n3") {
						t.Errorf("status while others are out: %+v, want waiting for capacity naming n3", st)
					}
					wantNone(t, cl, "n1 drain")
					if c.back > 0 {
						time.Sleep(c.back - 30*time.Second)
						for _, o := range c.out {
							cl.setOther(o, false)
						}
					}
				}
				r := <-done
				took := time.Since(start)
				if c.err != "" {
					if r.err == nil || !strings.Contains(r.err.Error(), c.err) {
						t.Errorf("sync: %v, want %q", r.err, c.err)
					}
					if took < 10*time.Minute || took > 10*time.Minute+2*time.Second {
						t.Errorf("gave up after %s, want the 10m progress deadline", took)
					}
					wantNone(t, cl, "n1 drain")
					sn.end(t, "aaaa", true)
					if hs := cl.halts(); len(hs) > 0 {
						t.Errorf("halted %q: waiting for capacity is no fault of the revision", hs)
					}
				} else {
					if r.err != nil || !r.out.Applied {
						t.Errorf("sync: %+v, %v", r.out, r.err)
					}
					if waits && took < c.back {
						t.Errorf("went on after %s, before the others were back (%s)", took, c.back)
					}
					sn.end(t, "bbbb", true)
				}
				if e := sn.journal(t); e != nil {
					t.Errorf("journal left: %+v", e)
				}
				checkInvariants(t, cl, c.maxUnavailable)
			})
		})
	}
}

// TestSuiteCluster: several agents on one cluster, all syncing at once.
func TestSuiteCluster(t *testing.T) {
	t.Run("one at a time, each node in turn", func(t *testing.T) {
		for _, c := range []struct{ nodes, maxUnavailable int }{{3, 1}, {4, 2}} {
			synctest.Test(t, func(t *testing.T) {
				sp := suiteSpec(fmt.Sprintf("maxUnavailable: %d, soak: 5s", c.maxUnavailable))
				cl := newSuiteCluster()
				var sns []*suiteNode
				for i := range c.nodes {
					sns = append(sns, cl.addNode(t, fmt.Sprintf("n%d", i+1), sp, sp))
				}
				errs := make(chan error, len(sns))
				for _, sn := range sns {
					go func() {
						out, err, _ := sn.sync(t.Context())
						if err == nil && !out.Applied {
							err = fmt.Errorf("%s: not applied: %+v", sn.name, out)
						}
						errs <- err
					}()
				}
				for range sns {
					if err := <-errs; err != nil {
						t.Error(err)
					}
				}
				for _, sn := range sns {
					sn.end(t, "bbbb", true)
				}
				// The rule must have been tested: the nodes did overlap
				// up to maxUnavailable, and no further.
				peak, out := 0, map[string]bool{}
				for _, h := range cl.events() {
					name, ev, _ := strings.Cut(h, " ")
					switch ev {
					case "drain":
						out[name] = true
					case "undrain":
						delete(out, name)
					}
					peak = max(peak, len(out))
				}
				if peak != c.maxUnavailable {
					t.Errorf("at most %d nodes out at once, want maxUnavailable %d to be reached", peak, c.maxUnavailable)
				}
				checkInvariants(t, cl, c.maxUnavailable)
			})
		}
	})
	t.Run("a halted revision is applied by no other node", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			sp := suiteSpec("")
			cl := newSuiteCluster()
			var sns []*suiteNode
			for i := range 3 {
				sn := cl.addNode(t, fmt.Sprintf("n%d", i+1), sp, sp)
				sn.setHealth("bbbb", healthFail)
				sns = append(sns, sn)
			}
			errs := make(chan error, len(sns))
			for _, sn := range sns {
				go func() { _, err, _ := sn.sync(t.Context()); errs <- err }()
			}
			halted := 0
			for range sns {
				if err := <-errs; errors.Is(err, ErrHalted) {
					halted++
				}
			}
			if halted != 2 {
				t.Errorf("%d nodes refused the halted revision, want the 2 that did not try it", halted)
			}
			switched := 0
			for _, h := range cl.events() {
				if strings.HasSuffix(h, " switch bbbb") {
					switched++
				}
			}
			if switched != 1 {
				t.Errorf("%d nodes switched to bbbb, want only the first", switched)
			}
			for _, sn := range sns {
				sn.end(t, "aaaa", true)
			}
			checkInvariants(t, cl, 1)
		})
	})
}

// TestSuiteCrash: the agent killed (runtime.Goexit in a fake: nothing it
// would do next happens) right after each step of a turn and of a
// rollback, then started again: Recover puts the node on one release, in
// service, and the next sync finishes the rollout or halts it again.
// recover_test.go writes each journal by hand; this kills a real turn.
func TestSuiteCrash(t *testing.T) {
	good := []string{"step preparing", "step waiting", "step migrating", "migrate bbbb", "step draining", "drain", "step switching", "switch bbbb",
		"workers bbbb", "nginx bbbb", "step verifying", "checks bbbb ok", "step undraining", "undrain", "step idle"}
	bad := []string{"checks bbbb fail", "halt bbbb", "step failed", "step rolling-back", "switch aaaa", "workers aaaa",
		"nginx aaaa", "checks aaaa ok", "undrain"}
	for _, c := range []struct {
		kind  string
		at    []string
		fails bool // bbbb fails its checks
	}{{"rollout", good, false}, {"rollback", bad, true}} {
		for _, at := range c.at {
			t.Run(c.kind+" killed after "+at, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					cl := newSuiteCluster()
					sn := cl.addNode(t, "n1", suiteSpec(""), suiteSpec(""))
					if c.fails {
						sn.setHealth("bbbb", healthFail)
					}
					sn.crashAt = at
					if _, err, crashed := sn.sync(t.Context()); !crashed {
						t.Fatalf("the turn never reached %q (err %v):\n  %s", at, err, strings.Join(cl.events(), "\n  "))
					}
					sn.start(t)
					if err := sn.n.Recover(t.Context()); err != nil {
						t.Fatalf("recover: %v", err)
					}
					if e := sn.journal(t); e != nil {
						t.Errorf("journal after Recover: %+v", e)
					}
					cur, _ := sn.rel.Current()
					sn.end(t, cur, true) // on one release, in service
					out, err, _ := sn.sync(t.Context())
					if c.fails {
						if err == nil || out.Applied {
							t.Errorf("sync after the restart: %+v, %v; want bbbb refused", out, err)
						}
						if hs := cl.halts(); len(hs) != 1 {
							t.Errorf("halts %q, want bbbb", hs)
						}
						sn.end(t, "aaaa", true)
					} else {
						if err != nil {
							t.Errorf("sync after the restart: %v", err)
						}
						sn.end(t, "bbbb", true)
					}
					if e := sn.journal(t); e != nil {
						t.Errorf("journal left: %+v", e)
					}
					checkInvariants(t, cl, 1)
				})
			})
		}
	}
}

// TestSuiteCrashLoop: a revision that stops the agent at the same point of
// every try (killed after it started bbbb's workers) is tried again after
// each restart until the agent has stopped maxCrashes times in its change;
// then Recover, with the node whole on aaaa and in service, halts it. A
// revision that goes live after fewer stops is not held against later.
func TestSuiteCrashLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cl := newSuiteCluster()
		sn := cl.addNode(t, "n1", suiteSpec(""), suiteSpec(""))
		for i := 1; i <= maxCrashes; i++ {
			sn.crashAt = "workers bbbb"
			if out, err, crashed := sn.sync(t.Context()); !crashed {
				t.Fatalf("try %d: the turn did not reach bbbb's workers: %+v, %v", i, out, err)
			}
			sn.start(t)
			if err := sn.n.Recover(t.Context()); err != nil {
				t.Fatalf("recover %d: %v", i, err)
			}
			sn.end(t, "aaaa", true)
			if hs := cl.halts(); i < maxCrashes && len(hs) != 0 {
				t.Fatalf("halted after %d stops: %q", i, hs)
			}
		}
		if hs := cl.halts(); len(hs) != 1 || hs[0] != "bbbb" {
			t.Fatalf("halts %q after %d stops, want bbbb", hs, maxCrashes)
		}
		if st := sn.n.Status(); !strings.Contains(st.Error, "the agent stopped 5 times while putting bbbb live") {
			t.Errorf("status %+v; want the halt's reason", st)
		}
		if out, err, _ := sn.sync(t.Context()); err == nil || out.Applied {
			t.Errorf("sync after the halt: %+v, %v; want bbbb refused", out, err)
		}
		sn.end(t, "aaaa", true)
		if _, err := os.Stat(layout.New(sn.cfg.StateDir).Crashes()); !os.IsNotExist(err) {
			t.Errorf("the count of stops outlived the halt (a cleared revision would get one try): %v", err)
		}
		checkInvariants(t, cl, 1)
	})
	synctest.Test(t, func(t *testing.T) {
		cl := newSuiteCluster()
		sn := cl.addNode(t, "n1", suiteSpec(""), suiteSpec(""))
		for range maxCrashes - 1 {
			sn.crashAt = "nginx bbbb"
			sn.sync(t.Context())
			sn.start(t)
			if err := sn.n.Recover(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
		if out, err, _ := sn.sync(t.Context()); err != nil || !out.Applied {
			t.Fatalf("the try after %d stops: %+v, %v; want bbbb live", maxCrashes-1, out, err)
		}
		if _, err := os.Stat(layout.New(sn.cfg.StateDir).Crashes()); !os.IsNotExist(err) {
			t.Errorf("the count of stops outlived bbbb going live: %v", err)
		}
		if hs := cl.halts(); len(hs) != 0 {
			t.Errorf("halts %q", hs)
		}
	})
}
