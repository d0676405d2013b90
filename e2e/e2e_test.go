//go:build e2e

// The end-to-end scenarios of issue 7, on a real cluster on this machine
// (package lab): three systemd nodes in their own network namespaces behind
// HAProxy, with Redis + Sentinel, PostgreSQL and a git forge. They share one
// lab and run in order; each leaves the cluster converged for the next.
// Run them with `make e2e`.
package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/drover-dev/drover/e2e/lab"
)

// clients is the load of every scenario: the seed's "several hundred
// concurrent users", each sending a request every 100 ms or so.
const (
	clients = 300
	think   = 100 * time.Millisecond
)

func TestCluster(t *testing.T) {
	l := startConverged(t)

	steps := []struct {
		name string
		run  func(t *scenarioT, l *lab.Lab)
	}{
		{"a_push_rolls_out_one_node_at_a_time", scenarioPush},
		{"d_failing_health_check_halts_at_first_node", scenarioBadHealth},
		{"e_failing_migration_switches_no_node", scenarioBadMigration},
		{"c_redis_master_killed_mid_rollout", scenarioRedisFailover},
		{"b_lock_holder_killed_mid_rollout", scenarioKilledHolder},
		{"f_git_server_down", scenarioForgeDown},
		{"m_rollback_pin_unpin_under_load", scenarioRollbackPinUnpin},
		{"n_agent_killed_at_each_step", scenarioKillAtEachStep},
		{"o_node_cut_from_redis_and_forge", scenarioPartition},
		{"p_canary_promotes_a_good_revision_and_fails_a_bad_one", scenarioCanary},
		{"h_guard_takes_out_a_node_whose_workers_hang", scenarioGuardHungWorkers},
		{"i_guard_puts_back_drift", scenarioGuardDrift},
		{"j_guard_out_node_holds_a_rollout", scenarioGuardOutHoldsRollout},
		{"k_guard_same_failure_everywhere_keeps_all_in", scenarioGuardAllDegraded},
		{"g_new_empty_node_joins", scenarioNewNode},
		{"l_package_install_and_upgrade_mid_turn", scenarioPackageInstall},
		{"z_history_lists_every_revision", scenarioHistory},
	}
	for _, s := range steps {
		var st *scenarioT
		if !t.Run(s.name, func(t *testing.T) { st = &scenarioT{T: t}; s.run(st, l) }) {
			t.Logf("status after the failed scenario:\n%s", statusText(l))
			for _, n := range l.Nodes() {
				if n.Running() {
					t.Logf("journal of drover on %s:\n%s", n.Name(), n.Journal("drover.service", 40))
				}
			}
			// Said again after the journals: CI shows the output's tail.
			t.Errorf("%s failed:\n%s", s.name, strings.Join(st.fails, "\n"))
			t.FailNow() // the later scenarios start from a converged cluster
		}
	}
}

// startConverged starts a lab and waits until its first deploy is live on
// every node.
func startConverged(t testing.TB) *lab.Lab {
	t.Helper()
	l := startLab(t)
	initial, err := lab.Git(context.Background(), l.Work(), "rev-parse", "HEAD")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitConverged(t, l, initial, 3*time.Minute)
	t.Logf("first deploy of 3 nodes converged in %s", time.Since(start).Round(time.Millisecond))
	return l
}

// startLab builds drover and drover-lab and starts a lab with a spare node.
func startLab(t testing.TB) *lab.Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the e2e lab needs root (namespaces, mounts, cgroups)")
	}
	src, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir() // removed at the end of the test
	for _, b := range [][2]string{{"drover", "./cmd/drover"}, {"drover-lab", "./e2e/cmd/drover-lab"}} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(bin, b[0]), b[1])
		cmd.Dir = src
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", b[1], err, out)
		}
	}
	l, err := lab.New(lab.Config{
		Dir:    "/tmp/drover-e2e",
		Prefix: "de",
		Net:    "10.79.0",
		Spares: []string{"n4", "n5"},
		Bare:   []string{"n5"},
		// The scenarios name instance ports (3000, 3001) and catch steps
		// that the overlap makes a few ms long: they run restart; p (the
		// canary) runs the default, auto, which overlaps here.
		Handover: "restart",
		Source:   src,
		Drover:   filepath.Join(bin, "drover"),
		Lab:      filepath.Join(bin, "drover-lab"),
		Log:      t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := l.Up(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Down(context.Background()); err != nil {
			t.Errorf("lab down: %v", err)
		}
		if left := l.Leftovers(); len(left) > 0 {
			t.Errorf("the lab left behind: %v", left)
		}
	})
	return l
}

// --- the scenarios ---------------------------------------------------------

// a. A push with a site change, a worker change and a migration: the forge's
// webhook wakes the nodes, they converge one at a time under load, no
// request fails, and the migration ran once.
func scenarioPush(t *scenarioT, l *lab.Lab) {
	ctx := context.Background()
	load := l.StartLoad(ctx, clients, think, lab.DefaultTargets)
	w := watchLB(l)
	pushed := time.Now()
	rev := commit(t, l, "Blog post, feedback-api v2 and a migration", map[string]string{
		"sites/blog/index.html":          strings.Replace(read(t, l, "sites/blog/index.html"), "<h1>The blog</h1>", "<h1>The blog</h1>\n<p>rollout A</p>", 1),
		"workers/feedback-api/server.js": setVersion(t, read(t, l, "workers/feedback-api/server.js"), "2"),
		"migrations/0003_e2e_runs.sql":   "CREATE TABLE e2e_runs (id serial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());\nINSERT INTO e2e_runs DEFAULT VALUES;\n",
	})
	waitConverged(t, l, rev, 4*time.Minute)
	took := time.Since(pushed)
	res := stopLoad(t, l, load)
	lb := w.stop()
	t.Logf("push → 3 nodes converged in %s; load: %s; LB: %s", took.Round(time.Millisecond), res, lb)
	if res.Failed > 0 {
		t.Errorf("%d of %d requests failed during the rollout: %v", res.Failed, res.Requests, res.Errors)
	}
	if res.Answers[`api-version {"version":"2","port":3000}`]+res.Answers[`api-version {"version":"2","port":3001}`] == 0 {
		t.Errorf("the load never saw feedback-api v2: %v", res.Answers)
	}
	if lb.maxOut > 1 {
		t.Errorf("%d nodes were out of the load balancer at once (maxUnavailable 1): %s", lb.maxOut, lb)
	}
	if got := len(lb.drained()); got != 3 {
		t.Errorf("%d nodes left the load balancer during the rollout, want each of the 3 once: %s", got, lb)
	}
	if n := queryInt(t, l, "SELECT count(*) FROM e2e_runs"); n != 1 {
		t.Errorf("the migration ran %d times, want once", n)
	}
	for _, n := range l.Nodes()[:3] {
		if body := get(t, n, "blog.example.com", "/"); !strings.Contains(body, "rollout A") {
			t.Errorf("%s serves the old blog: %.200s", n.Name(), body)
		}
	}
}

// d. A revision whose worker fails its health check: the first node rolls
// back and the rollout halts there, with no failed request; the next good
// commit goes everywhere.
func scenarioBadHealth(t *scenarioT, l *lab.Lab) {
	ctx := context.Background()
	before := l.Nodes()[0].Live()
	load := l.StartLoad(ctx, clients, think, lab.DefaultTargets)
	w := watchLB(l)
	src := read(t, l, "workers/feedback-api/server.js")
	spec := read(t, l, "drover.yaml")
	bad := commit(t, l, "feedback-api v3 that fails its health check", map[string]string{
		// An instance answering 500 is waited for until healthTimeout
		// (the example's 60 s would be most of this scenario's time).
		"drover.yaml": withRollout(t, spec, "healthTimeout", "15s"),
		"workers/feedback-api/server.js": strings.Replace(setVersion(t, src, "3"),
			`res.writeHead(200, { "Content-Type": "text/plain" });
    return res.end("ok\n");`, `res.writeHead(500, { "Content-Type": "text/plain" });
    return res.end("broken\n");`, 1),
	})
	reason := waitHalted(t, l, bad, 3*time.Minute)
	t.Logf("halted: %s", reason)
	waitAllOn(t, l, before, time.Minute) // the first node rolled back
	time.Sleep(3 * time.Second)          // nobody else tries
	res := stopLoad(t, l, load)
	lb := w.stop()
	t.Logf("load: %s; LB: %s", res, lb)
	if res.Failed > 0 {
		t.Errorf("%d of %d requests failed: %v", res.Failed, res.Requests, res.Errors)
	}
	if d := lb.drained(); len(d) != 1 {
		t.Errorf("nodes %v left the load balancer for the bad revision, want only the first", d)
	}
	for k := range res.Answers {
		if strings.Contains(k, `"version":"3"`) {
			t.Errorf("the bad revision served a request: %s", k)
		}
	}
	good := commit(t, l, "feedback-api v3, healthy", map[string]string{"drover.yaml": spec, "workers/feedback-api/server.js": setVersion(t, src, "3")})
	waitConverged(t, l, good, 4*time.Minute)
}

// e. A revision with a failing migration: the migration rolls back and no
// node switches or even drains.
func scenarioBadMigration(t *scenarioT, l *lab.Lab) {
	before := l.Nodes()[0].Live()
	w := watchLB(l)
	bad := commit(t, l, "A migration that fails, and a blog change", map[string]string{
		"migrations/0004_broken.sql": "CREATE TABLE e2e_half (id int);\nINSERT INTO e2e_no_such_table VALUES (1);\n",
		"sites/blog/index.html":      strings.Replace(read(t, l, "sites/blog/index.html"), "rollout A", "rollout E", 1),
	})
	reason := waitHalted(t, l, bad, 2*time.Minute)
	t.Logf("halted: %s", reason)
	if !strings.Contains(reason, "0004_broken.sql") {
		t.Errorf("the halt does not name the migration: %s", reason)
	}
	time.Sleep(3 * time.Second)
	lb := w.stop()
	for _, n := range l.Nodes()[:3] {
		if live := n.Live(); live != before {
			t.Errorf("%s switched to %s", n.Name(), live)
		}
	}
	if len(lb.drained()) > 0 {
		t.Errorf("nodes left the load balancer for a revision whose migration failed: %s", lb)
	}
	if n := queryInt(t, l, "SELECT count(*) FROM pg_tables WHERE tablename = 'e2e_half'"); n != 0 {
		t.Errorf("the failed migration left its table behind")
	}
	fixed := commit(t, l, "Drop the broken migration", map[string]string{"migrations/0004_broken.sql": ""})
	waitConverged(t, l, fixed, 4*time.Minute)
}

// c. The Redis master dies in the middle of a rollout: Sentinel promotes the
// replica, the rollout goes on, and never are two nodes out at once.
func scenarioRedisFailover(t *scenarioT, l *lab.Lab) {
	ctx := context.Background()
	load, w, rev := pushUnderLoad(t, l, "4")
	waitFor(t, 2*time.Minute, "a node out of the load balancer", func() bool { return len(w.outNow()) > 0 })
	master := masterService(t, l)
	if err := l.Kill(master); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed the Redis master (%s) while %v was out", master, w.outNow())
	waitConverged(t, l, rev, 5*time.Minute)
	res := stopLoad(t, l, load)
	lb := w.stop()
	t.Logf("load: %s; LB: %s", res, lb)
	if lb.maxOut > 1 {
		t.Errorf("%d nodes were out at once: %s", lb.maxOut, lb)
	}
	if res.Failed > 0 {
		t.Errorf("%d of %d requests failed: %v", res.Failed, res.Requests, res.Errors)
	}
	if err := l.Start(ctx, master); err != nil { // back, as a replica
		t.Fatal(err)
	}
}

// b. The node holding the lock is killed (a lost server) mid-rollout: the
// lock expires and the next node takes it, but drains only once the dead
// node is back in service; the killed node, booted again, is in the load
// balancer only while healthy, and ends on the new revision.
func scenarioKilledHolder(t *scenarioT, l *lab.Lab) {
	ctx := context.Background()
	load, w, rev := pushUnderLoad(t, l, "5")
	var victim *lab.Node
	waitFor(t, 2*time.Minute, "a node switching", func() bool {
		for _, n := range l.Nodes()[:3] {
			if n.Live() == rev {
				victim = n
				return true
			}
		}
		return false
	})
	w.probe(victim)
	victim.Kill()
	killed := time.Now()
	t.Logf("killed %s in the middle of its turn", victim.Name())
	// The lock expires (15 s) and another node takes it, but must wait:
	// the dead node counts as out of service.
	waitFor(t, time.Minute, "another node waiting for capacity", func() bool {
		st, err := l.Status(ctx)
		if err != nil {
			return false
		}
		for _, e := range st.Events {
			if e.Time.After(killed) && e.Node != victim.Name() && strings.Contains(e.Msg, "waiting for capacity") {
				return true
			}
		}
		return false
	})
	if d := w.outNow(); len(d) != 1 || d[0] != victim.Name() {
		t.Errorf("out of the load balancer while the dead node is: %v, want only it", d)
	}
	if err := victim.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, l, rev, 5*time.Minute)
	res := stopLoad(t, l, load)
	lb := w.stop()
	t.Logf("load: %s; LB: %s", res, lb)
	if lb.maxOut > 1 {
		t.Errorf("%d nodes were out at once: %s", lb.maxOut, lb)
	}
	for _, p := range lb.probes {
		if !p.healthy {
			t.Errorf("%s was in the load balancer at %s while unhealthy: %s", victim.Name(), p.at.Format(time.TimeOnly), p.answer)
		}
	}
	if len(lb.probes) == 0 {
		t.Errorf("%s never re-joined the load balancer", victim.Name())
	}
	// The node was drained when it died: no request was in flight there.
	if res.Failed > 0 {
		t.Errorf("%d of %d requests failed: %v", res.Failed, res.Requests, res.Errors)
	}
}

// f. The git server is down for a while: the nodes keep serving, and catch
// up by polling when it is back.
func scenarioForgeDown(t *scenarioT, l *lab.Lab) {
	ctx := context.Background()
	load := l.StartLoad(ctx, clients, think, lab.DefaultTargets)
	if err := l.Stop("forge"); err != nil {
		t.Fatal(err)
	}
	// The change lands in the repo while its server is down (as when a
	// forge's web front is down but its storage is not).
	rev := commitBehindForge(t, l, "Blog change while the forge is down", "rollout F")
	time.Sleep(25 * time.Second) // two failed polls at 10 s
	before := l.Nodes()[0].Live()
	for _, n := range l.Nodes()[:3] {
		if n.Live() == rev {
			t.Fatalf("%s has the revision while the forge is down", n.Name())
		}
	}
	if err := l.Start(ctx, "forge"); err != nil {
		t.Fatal(err)
	}
	// No webhook: the forge saw the branch already moved when it started.
	waitConverged(t, l, rev, 4*time.Minute)
	res := stopLoad(t, l, load)
	t.Logf("load: %s (the forge was down, the nodes were on %s)", res, before[:12])
	if res.Failed > 0 {
		t.Errorf("%d of %d requests failed: %v", res.Failed, res.Requests, res.Errors)
	}
}

// g. A new, empty node joins: it takes its turn, gets the current revision
// and joins the load balancer only once healthy on it.
func scenarioNewNode(t *scenarioT, l *lab.Lab) {
	ctx := context.Background()
	rev := l.Nodes()[0].Live()
	n4 := l.Node("n4")
	w := watchLB(l)
	w.probe(n4)
	if err := n4.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Minute, "n4 live and in the load balancer", func() bool {
		return n4.Live() == rev && w.stateNow().up("n4")
	})
	lb := w.stop()
	for _, p := range lb.probes {
		if !p.healthy || !strings.Contains(p.answer, "rollout F") {
			t.Errorf("n4 was in the load balancer at %s before serving the current revision: %s", p.at.Format(time.TimeOnly), p.answer)
		}
	}
	if len(lb.probes) == 0 {
		t.Error("n4 was never seen joining the load balancer")
	}
	if body := get(t, n4, "blog.example.com", "/"); !strings.Contains(body, "rollout F") {
		t.Errorf("n4 serves %.200s", body)
	}
}

// --- helpers ---------------------------------------------------------------

// pushUnderLoad starts the load and the watch of the LB, then pushes
// feedback-api version v.
func pushUnderLoad(t testing.TB, l *lab.Lab, v string) (*lab.Load, *lbWatch, string) {
	t.Helper()
	load := l.StartLoad(context.Background(), clients, think, lab.DefaultTargets)
	w := watchLB(l)
	rev := commit(t, l, "feedback-api v"+v, map[string]string{
		"workers/feedback-api/server.js": setVersion(t, read(t, l, "workers/feedback-api/server.js"), v),
	})
	return load, w, rev
}

func commit(t testing.TB, l *lab.Lab, msg string, files map[string]string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rev, err := l.Commit(ctx, msg, files)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pushed %s: %s", rev[:12], msg)
	pushed.add(rev, msg)
	return rev
}

// commitBehindForge commits a blog change and pushes it straight into the
// forge's bare repo on disk.
func commitBehindForge(t testing.TB, l *lab.Lab, msg, marker string) string {
	t.Helper()
	ctx := context.Background()
	p := filepath.Join(l.Work(), "sites/blog/index.html")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), "<h1>The blog</h1>", "<h1>The blog</h1>\n<p>"+marker+"</p>", 1)
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	bare := filepath.Join(l.Config().Dir, "git", "config.git")
	for _, args := range [][]string{{"commit", "-qam", msg}, {"push", "-q", bare, "main"}, {"fetch", "-q", "origin"}} {
		if _, err := lab.Git(ctx, l.Work(), args...); err != nil && args[0] != "fetch" {
			t.Fatal(err)
		}
	}
	rev, err := lab.Git(ctx, l.Work(), "rev-parse", "HEAD")
	if err != nil {
		t.Fatal(err)
	}
	pushed.add(rev, msg)
	return rev
}

func read(t testing.TB, l *lab.Lab, p string) string {
	t.Helper()
	s, err := l.ReadWork(p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// setVersion sets the feedback API's version constant.
func setVersion(t testing.TB, src, v string) string {
	t.Helper()
	i := strings.Index(src, `const version = "`)
	if i < 0 {
		t.Fatal("server.js has no version constant")
	}
	j := strings.Index(src[i+17:], `"`)
	return src[:i] + `const version = "` + v + `"` + src[i+17+j+1:]
}

// waitConverged waits until every running node is live on rev, idle, and
// in the load balancer.
func waitConverged(t testing.TB, l *lab.Lab, rev string, d time.Duration) {
	t.Helper()
	waitFor(t, d, "all nodes on "+rev[:12]+" and in the load balancer", func() bool {
		servers, err := l.LBServers(context.Background())
		if err != nil {
			return false
		}
		up := map[string]bool{}
		for _, s := range servers {
			up[s.Name] = s.State == "UP"
		}
		st, err := l.Status(context.Background())
		if err != nil {
			return false
		}
		idle := map[string]bool{}
		for _, n := range st.Nodes {
			idle[n.Node] = n.Step == "idle" && n.Rev == rev
		}
		for _, n := range l.Nodes() {
			if n.Running() && (n.Live() != rev || !up[n.Name()] || !idle[n.Name()]) {
				return false
			}
		}
		return true
	})
}

// waitAllOn waits until every running node is live on rev and in the LB.
func waitAllOn(t testing.TB, l *lab.Lab, rev string, d time.Duration) {
	t.Helper()
	waitFor(t, d, "all nodes back on "+rev[:12], func() bool {
		servers, err := l.LBServers(context.Background())
		if err != nil {
			return false
		}
		for _, s := range servers {
			if n := l.Node(s.Name); n.Running() && (s.State != "UP" || n.Live() != rev) {
				return false
			}
		}
		return true
	})
}

func waitHalted(t testing.TB, l *lab.Lab, rev string, d time.Duration) string {
	t.Helper()
	var reason string
	waitFor(t, d, rev[:12]+" halted", func() bool {
		st, err := l.Status(context.Background())
		if err == nil {
			reason = st.HaltReason(rev)
		}
		return reason != ""
	})
	pushed.outcome(rev, "halted")
	return reason
}

func waitFor(t testing.TB, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func statusText(l *lab.Lab) string {
	for _, n := range l.Nodes() {
		if n.Running() {
			out, err := n.Run(context.Background(), "drover", "status", "--config", "/etc/drover/node.yaml")
			if err != nil {
				return err.Error()
			}
			return out
		}
	}
	return "(no node running)"
}

// masterService names the infra service that is the Redis master now.
func masterService(t testing.TB, l *lab.Lab) string {
	t.Helper()
	out, err := exec.Command("redis-cli", "-h", l.InfraIP(), "-p", strings.Split(l.SentinelAddrs()[0], ":")[1],
		"sentinel", "get-master-addr-by-name", l.MasterName()).Output()
	if err != nil {
		t.Fatalf("ask a sentinel for the master: %v", err)
	}
	if strings.Contains(string(out), "6380") {
		return "replica"
	}
	return "redis"
}

func queryInt(t testing.TB, l *lab.Lab, q string) int {
	t.Helper()
	var n int
	queryRow(t, l, q, &n)
	return n
}

// queryRow runs q on the lab's PostgreSQL and scans its one row into dst.
func queryRow(t testing.TB, l *lab.Lab, q string, dst ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, l.PostgresDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if err := c.QueryRow(ctx, q).Scan(dst...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// direct is a client for a node's nginx itself, past the load balancer.
var direct = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
	TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // the nodes' certificates are self-signed
}}

// fetch asks node n for path on host over HTTPS, as the LB does.
func fetch(n *lab.Node, host, path string) (int, string, error) {
	return fetchWith(n, host, path, nil)
}

// fetchWith is fetch that also hands the answer's header to hdr.
func fetchWith(n *lab.Node, host, path string, hdr func(get func(string) string)) (int, string, error) {
	req, _ := http.NewRequest("GET", "https://"+n.IP()+path, nil)
	req.Host = host
	tr := direct.Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.ServerName = host
	resp, err := (&http.Client{Timeout: 5 * time.Second, Transport: tr}).Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	if hdr != nil {
		hdr(resp.Header.Get)
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

func get(t testing.TB, n *lab.Node, host, path string) string {
	t.Helper()
	code, body, err := fetch(n, host, path)
	if err != nil || code != 200 {
		t.Fatalf("GET https://%s%s on %s: %d %v", host, path, n.Name(), code, err)
	}
	return body
}

// --- the load balancer's view, sampled -------------------------------------

// lbWatch samples HAProxy's view of the nodes every 50 ms: how many were
// out at once, and who left. For probed nodes it checks, each time the LB
// puts one back, that the node itself answers healthily.
type lbWatch struct {
	l      *lab.Lab
	stopc  chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	res    lbResult
	now    lbState
	probed map[string]*lab.Node
	seenUp map[string]bool
}

type lbState map[string]string // node → HAProxy status

func (s lbState) drained() []string {
	var out []string
	for n, st := range s {
		if !strings.HasPrefix(st, "UP") {
			out = append(out, n)
		}
	}
	return out
}

func (s lbState) up(n string) bool { return s[n] == "UP" }

type probe struct {
	at      time.Time
	healthy bool
	answer  string
}

type lbResult struct {
	maxOut   int
	left     map[string]int // node → times it left the LB
	samples  int
	probes   []probe
	outAtMax []string
}

func (r lbResult) drained() []string {
	var out []string
	for n := range r.left {
		out = append(out, n)
	}
	return out
}

func (r lbResult) String() string {
	return fmt.Sprintf("max %d out at once %v, left: %v (%d samples)", r.maxOut, r.outAtMax, r.left, r.samples)
}

func watchLB(l *lab.Lab) *lbWatch {
	w := &lbWatch{l: l, stopc: make(chan struct{}), done: make(chan struct{}), res: lbResult{left: map[string]int{}},
		probed: map[string]*lab.Node{}, seenUp: map[string]bool{}}
	go func() {
		defer close(w.done)
		prev := lbState{}
		for {
			servers, err := l.LBServers(context.Background())
			if err == nil {
				cur := lbState{}
				for _, s := range servers {
					cur[s.Name] = s.State
				}
				w.mu.Lock()
				w.res.samples++
				// A node counts as out of service once it has been in it:
				// a spare that was never booted, or is booting, is not.
				for n := range cur {
					if cur.up(n) {
						w.seenUp[n] = true
					}
				}
				out := w.outLocked(cur)
				if len(out) > w.res.maxOut {
					w.res.maxOut, w.res.outAtMax = len(out), out
				}
				for _, n := range cur.drained() {
					if strings.HasPrefix(prev[n], "UP") {
						w.res.left[n]++
					}
				}
				w.now = cur
				probes := map[string]*lab.Node{}
				for name, n := range w.probed {
					if cur.up(name) && !prev.up(name) {
						probes[name] = n
					}
				}
				w.mu.Unlock()
				for _, n := range probes {
					code, body, err := fetch(n, "blog.example.com", "/")
					apiCode, apiBody, apiErr := fetch(n, "app.example.com", "/api/version")
					p := probe{at: time.Now(), healthy: err == nil && code == 200 && apiErr == nil && apiCode == 200,
						answer: fmt.Sprintf("%d %v %.300s | %d %s %v", code, err, body, apiCode, apiBody, apiErr)}
					w.mu.Lock()
					w.res.probes = append(w.res.probes, p)
					w.mu.Unlock()
				}
				prev = cur
			}
			select {
			case <-w.stopc:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return w
}

func (w *lbWatch) outLocked(cur lbState) []string {
	var out []string
	for _, n := range cur.drained() {
		if w.seenUp[n] {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// outNow lists the nodes out of service now.
func (w *lbWatch) outNow() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.outLocked(w.now)
}

// probe checks n each time the LB puts it (back) in service.
func (w *lbWatch) probe(n *lab.Node) {
	w.mu.Lock()
	w.probed[n.Name()] = n
	w.mu.Unlock()
}

func (w *lbWatch) stateNow() lbState {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.now
}

// snapshot is what the watch saw so far.
func (w *lbWatch) snapshot() lbResult {
	w.mu.Lock()
	defer w.mu.Unlock()
	r := w.res
	r.left = maps.Clone(w.res.left)
	r.probes = slices.Clone(w.res.probes)
	return r
}

func (w *lbWatch) stop() lbResult {
	close(w.stopc)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.res
}

// --- every answer checked by revision --------------------------------------

// stopLoad stops the load and checks every answer it got against the
// cluster's record (issue 16): a node answered from a revision only after
// it had verified that revision on itself (its "undraining" step, which
// follows the checks), unless it is the revision the node served when the
// load began; and no halted revision answered at all.
func stopLoad(t testing.TB, l *lab.Lab, load *lab.Load) lab.LoadResult {
	t.Helper()
	res := load.Stop()
	checkNamed(t, res)
	checkAnswers(t, l, res)
	return res
}

// checkNamed fails when an answer named no revision: it could not be
// checked (every node of the lab renders nginx.revisionHeader).
func checkNamed(t testing.TB, res lab.LoadResult) {
	t.Helper()
	if res.Unnamed > 0 {
		t.Errorf("%d of %d answers named no revision (X-Drover-Revision): they could not be checked", res.Unnamed, res.Requests)
	}
}

func checkAnswers(t testing.TB, l *lab.Lab, res lab.LoadResult) {
	t.Helper()
	checkAnswersExcept(t, l, res, "", "")
}

// checkAnswersExcept is checkAnswers, except that node's answers from rev
// are expected although rev ends halted: a canary serves users the revision
// its gate then fails.
func checkAnswersExcept(t testing.TB, l *lab.Lab, res lab.LoadResult, node, rev string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	events, err := l.Events(ctx, 1000)
	if err != nil {
		t.Errorf("read the cluster's events: %v", err)
		return
	}
	verified := map[[2]string][]time.Time{} // node, rev → when
	for _, e := range events {
		if e.Step == "undraining" && e.Rev != "" {
			k := [2]string{e.Node, e.Rev}
			verified[k] = append(verified[k], e.Time)
		}
	}
	st, err := l.Status(ctx)
	if err != nil {
		t.Errorf("read the cluster's status: %v", err)
		return
	}
	halted := map[string]bool{}
	for _, h := range st.Halted {
		halted[h.Rev] = true
	}
	for _, p := range pushed.list() {
		if p.outcome == "halted" {
			halted[p.rev] = true
		}
	}
	if res.LostChanges > 0 {
		t.Errorf("%d changes of revision were not kept: not every answer was checked", res.LostChanges)
	}
	bad := 0
	for n, changes := range res.Changes {
		for i, c := range changes {
			if halted[c.Rev] && (n != node || c.Rev != rev) {
				bad++
				t.Errorf("%s answered from halted revision %s at %s", n, short(c.Rev), c.At.Format("15:04:05.000"))
				continue
			}
			if i == 0 {
				continue // what the node served when the load began
			}
			ok := false
			for _, at := range verified[[2]string{n, c.Rev}] {
				ok = ok || !at.After(c.At)
			}
			if !ok && c.Rev != changes[0].Rev {
				bad++
				t.Errorf("%s answered from %s at %s before it had verified it (verified at %v)", n, short(c.Rev),
					c.At.Format("15:04:05.000"), verified[[2]string{n, c.Rev}])
			}
		}
	}
	var byRev []string
	for rev, n := range res.ByRevision {
		byRev = append(byRev, fmt.Sprintf("%s %d", short(rev), n))
	}
	sort.Strings(byRev)
	t.Logf("answers by revision: %s; %d changes of revision across %d nodes, %d unverified or halted", strings.Join(byRev, ", "),
		changeCount(res.Changes), len(res.Changes), bad)
}

func changeCount(cs map[string][]lab.RevisionChange) int {
	n := 0
	for _, c := range cs {
		n += len(c)
	}
	return n
}

func short(rev string) string { return rev[:min(12, len(rev))] }
