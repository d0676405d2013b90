package printers

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/cluster"
	"github.com/drover-dev/drover/doctor"
	"github.com/drover-dev/drover/migrate"
	"github.com/drover-dev/drover/nodestate"
	"github.com/drover-dev/drover/plan"
	"github.com/drover-dev/drover/reconcile"
)

// The printers show times in the operator's zone; the tests fix it.
func TestMain(m *testing.M) {
	time.Local = time.UTC
	os.Exit(m.Run())
}

var (
	revA = strings.Repeat("a", 40)
	revB = strings.Repeat("b", 40)
	t0   = time.Date(2026, 12, 3, 14, 5, 6, 0, time.UTC)
)

// lines fails t unless out holds each want as a whole line, in order.
func lines(t *testing.T, out string, want ...string) {
	t.Helper()
	rest := out
	for _, w := range want {
		i := strings.Index(rest, w+"\n")
		if i < 0 || (i > 0 && rest[i-1] != '\n') {
			t.Errorf("output lacks the line %q (after the ones before it):\n%s", w, out)
			return
		}
		rest = rest[i+len(w)+1:]
	}
}

func TestNode(t *testing.T) {
	var b strings.Builder
	st := reconcile.Status{Node: "n1", Rev: revA, Target: revB, Step: reconcile.StepDraining, Since: t0,
		Seen: t0.Add(-90 * time.Second), Health: nodestate.HealthOut, HealthWhy: "api: 502", HealthSince: t0,
		Error: "verify api: 502", Signer: "alice"}
	halted := map[string]reconcile.Halt{
		revA: {Reason: "old\ntrace", At: t0.Add(-time.Hour)},
		revB: {Reason: "new", At: t0},
	}
	Node(&b, st, halted, &reconcile.Pin{Rev: revA, By: "ops", At: t0, Reason: "bad deploy"}, t0)
	lines(t, b.String(),
		"node     n1",
		"live     aaaaaaaaaaaa",
		"signer   alice",
		"step     draining bbbbbbbbbbbb (since 2026-12-03 14:05:06)",
		"polled   1m30s ago",
		"health   out (guard: api: 502) since 14:05:06",
		"error    verify api: 502",
		"halted   bbbbbbbbbbbb at 2026-12-03 14:05:06: new", // newest first
		"halted   aaaaaaaaaaaa at 2026-12-03 13:05:06: old …",
		"pinned   aaaaaaaaaaaa by ops at 2026-12-03 14:05:06: bad deploy",
	)

	// A node whose agent never ran: no poll, health, error or halts.
	b.Reset()
	Node(&b, reconcile.Status{Node: "n2", Step: reconcile.StepIdle}, nil, nil, t0)
	for _, absent := range []string{"polled", "health", "error", "halted", "pinned", "signer"} {
		if strings.Contains(b.String(), absent) {
			t.Errorf("a fresh node's status says %q:\n%s", absent, b.String())
		}
	}
}

func TestCluster(t *testing.T) {
	var evs []cluster.Event
	for i := range 12 {
		evs = append(evs, cluster.Event{Time: t0.Add(time.Duration(i) * time.Second), Node: "n1", Rev: revB, Step: reconcile.StepSwitching, Msg: "event " + string(rune('a'+i))})
	}
	evs[11].Err = "boom\nstack"
	s := cluster.ClusterStatus{Cluster: "prod", Time: t0,
		Paused: &cluster.PauseState{Node: "ops", At: t0, Reason: "incident"},
		Pin:    &reconcile.Pin{Rev: revA, By: "ops", At: t0},
		Nodes: []cluster.NodeStatus{
			{Status: reconcile.Status{Node: "n1", Rev: revA, Step: reconcile.StepIdle, Health: nodestate.HealthOK, HealthSince: t0}, Alive: true},
			{Status: reconcile.Status{Node: "n2", Rev: revA, Step: reconcile.StepFailed, Error: "verify\ndetail", Health: nodestate.HealthOut, HealthWhy: strings.Repeat("x", 200)}, Beat: t0},
		},
		Holders:  []cluster.Holder{{Slot: 0, Node: "n1", Rev: revB, Since: t0}},
		Halted:   []cluster.Halt{{Rev: revB, Node: "n1", At: t0, Reason: "api 502"}},
		Events:   evs,
		Canaries: []reconcile.Canary{{Rev: revB, Node: "n1", State: nodestate.CanaryObserving, Left: time.Minute, Requests: 100, Errors: 1, BaselineRequests: 900, BaselineErrors: 2, Z: 1.5}},
	}
	var b strings.Builder
	Cluster(&b, s, 10)
	out := b.String()
	lines(t, out,
		"cluster prod at 2026-12-03 14:05:06",
		"PAUSED since 2026-12-03 14:05:06 by ops: incident",
		"PINNED to aaaaaaaaaaaa by ops at 2026-12-03 14:05:06 (new commits are prepared, not applied; drover unpin follows the branch again)",
	)
	if !strings.Contains(out, "NODE  LIVE") || !strings.Contains(out, "healthy since 14:05:06") {
		t.Errorf("no node table with the guard's verdict:\n%s", out)
	}
	if !strings.Contains(out, "no (last beat 14:05:06)") || !strings.Contains(out, "verify …") {
		t.Errorf("the dead node's row lacks its last beat or its cut error:\n%s", out)
	}
	if !strings.Contains(out, strings.Repeat("x", 60)+"...") || strings.Contains(out, strings.Repeat("x", 100)) {
		t.Errorf("a long health verdict is not cut to the column's 100 runes:\n%s", out)
	}
	lines(t, out,
		"canary bbbbbbbbbbbb canary on n1: observing, 1m0s left, 100 requests, 1.0% errors; old revision 900 requests, 2 errors (z 1.50)",
		"rollout lock slot 0: n1, for bbbbbbbbbbbb, since 2026-12-03 14:05:06",
		"halted bbbbbbbbbbbb (by n1 at 2026-12-03 14:05:06): api 502",
		"recent events:",
		"  14:05:08  n1       switching    bbbbbbbbbbbb  event c",
		"  14:05:17  n1       switching    bbbbbbbbbbbb  event l  error: boom …",
	)
	if strings.Contains(out, "event b") {
		t.Errorf("more than 10 events shown:\n%s", out)
	}

	b.Reset()
	Cluster(&b, cluster.ClusterStatus{Cluster: "c", Time: t0}, 10)
	lines(t, b.String(), "rollout lock: free")
	if strings.Contains(b.String(), "recent events") || strings.Contains(b.String(), "PAUSED") {
		t.Errorf("an empty cluster's status:\n%s", b.String())
	}
}

func TestHistory(t *testing.T) {
	var b strings.Builder
	History(&b, nil)
	lines(t, b.String(), "no revision seen yet")

	b.Reset()
	revs := []cluster.Revision{{
		RevisionMeta: cluster.RevisionMeta{Rev: revB, FirstSeen: t0, Author: "dev", Subject: "api B"},
		Outcome:      "rolled back",
		Nodes: []cluster.NodeRun{
			{Node: "n1", Failed: t0, Error: "verify api\nmore", RolledBack: true, From: revA, Drained: 1234567 * time.Microsecond},
			{Node: "n2"},
		},
		Halt:    &cluster.Halt{Node: "n1", At: t0, Reason: "verify api"},
		Actions: []cluster.Action{{At: t0, By: "ops", What: "rollback", Reason: "api broken"}},
	}, {
		RevisionMeta: cluster.RevisionMeta{Rev: revA, FirstSeen: t0.Add(-time.Hour), Signature: "alice"},
		Outcome:      "superseded",
		Nodes:        []cluster.NodeRun{{Node: "n1", Live: t0.Add(-time.Hour), Drained: 800 * time.Millisecond}},
	}}
	History(&b, revs)
	// The table's column widths are tabwriter's; the rows' cells are ours.
	var rows []string
	for _, l := range strings.Split(strings.TrimRight(b.String(), "\n"), "\n") {
		rows = append(rows, strings.Join(strings.Fields(l), " "))
	}
	want := []string{
		"REVISION FIRST SEEN OUTCOME AUTHOR SIGNED SUBJECT",
		"bbbbbbbbbbbb 2026-12-03 14:05:06 rolled back dev - api B",
		"n1 failed at 2026-12-03 14:05:06, rolled back to aaaaaaaaaaaa: verify api …, drained 1.235s",
		"n2 seen",
		"halted by n1 at 2026-12-03 14:05:06: verify api",
		"operator rollback by ops at 2026-12-03 14:05:06: api broken",
		"aaaaaaaaaaaa 2026-12-03 13:05:06 superseded alice",
		"n1 live at 2026-12-03 13:05:06, drained 800ms",
	}
	if strings.Join(rows, "\n") != strings.Join(want, "\n") {
		t.Errorf("history rows:\n%s\nwant\n%s", strings.Join(rows, "\n"), strings.Join(want, "\n"))
	}
}

func TestPlan(t *testing.T) {
	var b strings.Builder
	Plan(&b, &plan.Plan{Node: "n1", From: revA, To: revA})
	lines(t, b.String(), "n1 is on aaaaaaaaaaaa: nothing to do")

	b.Reset()
	Plan(&b, &plan.Plan{Node: "n1", From: revA, To: revB, Commit: "api B", Halted: "verify\ntrace", Signature: "signed by alice",
		Sites:     []plan.Change{{Name: "blog", Action: "keep"}},
		Workers:   []plan.Change{{Name: "api", Action: "change", What: []string{"bundle", "env"}}, {Name: "old", Action: "remove"}},
		NginxDiff: []string{"-a", "+b"}})
	lines(t, b.String(),
		"n1: aaaaaaaaaaaa -> bbbbbbbbbbbb  api B",
		"HALTED: this revision failed and will not be applied: verify …",
		"signature: signed by alice",
		"sites:", "  = blog",
		"workers:", "  ~ api (bundle; env)", "  - old",
		"nginx config:", "  -a", "  +b",
	)

	b.Reset()
	Plan(&b, &plan.Plan{Node: "n1", From: revA, To: revB, Sites: []plan.Change{{Name: "new", Action: "add"}}})
	lines(t, b.String(), "  + new", "nginx config: unchanged")
}

func TestMigrations(t *testing.T) {
	row := func(v int64, file string) migrate.LedgerRow {
		return migrate.LedgerRow{Version: v, File: file, AppliedAt: t0, AppliedBy: "n1", Revision: revA, DurationMS: 1500, Checksum: strings.Repeat("c", 64)}
	}
	failed := row(4, "004_index.sql")
	failed.State, failed.Error, failed.Revision = "failed", "deadlock\ndetail", "dir:/tmp/x"
	mism := row(2, "002_b.sql")
	mism.FileChecksum = strings.Repeat("f", 64)
	rep := migrate.Report{Locked: true,
		Applied: []migrate.LedgerRow{row(1, "001_a.sql")}, Mismatched: []migrate.LedgerRow{mism},
		Missing: []migrate.LedgerRow{row(3, "003_gone.sql"), row(9, "009_newer.sql")}, Ahead: []int64{9},
		Failed: []migrate.LedgerRow{failed}, Pending: []migrate.PendingFile{{Version: 5, File: "005_e.sql"}}}
	var b strings.Builder
	Migrations(&b, "aaaaaaaaaaaa (live)", rep)
	lines(t, b.String(),
		"revision    aaaaaaaaaaaa (live)",
		"lock        held: migrations are running now",
		"applied     001_a.sql                        2026-12-03 14:05:06 by n1, revision aaaaaaaaaaaa, 1.5s",
		"mismatched  002_b.sql                        2026-12-03 14:05:06 by n1, revision aaaaaaaaaaaa; changed since: ledger sha256 cccccccccccc, file ffffffffffff",
		"missing     003_gone.sql                     2026-12-03 14:05:06 by n1, revision aaaaaaaaaaaa; its file is gone",
		"missing     009_newer.sql                    2026-12-03 14:05:06 by n1, revision aaaaaaaaaaaa; newer than every file: a rollback to an older revision, fine",
		"failed      004_index.sql                    2026-12-03 14:05:06 by n1, revision dir:/tmp/x: deadlock …",
		"pending     005_e.sql",
		"1 applied, 1 pending, 1 mismatched, 2 missing, 1 failed",
	)
}

func TestDoctorResult(t *testing.T) {
	var b strings.Builder
	DoctorResult(&b, doctor.Result{Check: "nginx", Status: doctor.Pass, Detail: "1.26", Fix: "unused"})
	DoctorResult(&b, doctor.Result{Check: "redis", Status: doctor.Fail, Detail: "dial\nrefused\n", Fix: "start it"})
	if got, want := b.String(), "pass  nginx: 1.26\nfail  redis: dial\n      refused\n      fix: start it\n"; got != want {
		t.Errorf("doctor lines:\n%q\nwant\n%q", got, want)
	}
}
