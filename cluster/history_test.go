package cluster

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/testsvc"
	"github.com/drover-dev/drover/nodestate"
)

func rev(i int) string { return fmt.Sprintf("%040x", i+1) }

// TestHistoryKeepsTheNewestRevisions: past keep, the revisions first seen
// longest ago go, their details with them; a revision seen again keeps its
// first record; two nodes' records of one revision both stay.
func TestHistoryKeepsTheNewestRevisions(t *testing.T) {
	r := testsvc.StartRedis(t)
	cfg := Config{Addrs: []string{r.Addr}, Cluster: "h"}
	n1, n2 := open(t, cfg, "n1"), open(t, cfg, "n2")
	h1, h2 := n1.History(3), n2.History(3)
	ctx := t.Context()
	t0 := time.Now().UTC().Truncate(time.Millisecond)
	for i := range 5 {
		if err := h1.Seen(ctx, RevisionMeta{Rev: rev(i), Subject: fmt.Sprint("commit ", i), Author: "a <a@x>", FirstSeen: t0.Add(time.Duration(i) * time.Second)}); err != nil {
			t.Fatal(err)
		}
		for _, h := range []*History{h1, h2} {
			if err := h.Node(ctx, rev(i), NodeRun{Node: h.c.node, Live: t0.Add(time.Duration(i)*time.Second + 500*time.Millisecond), Drained: time.Second}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Seen again by the other node, later: the first record stays.
	if err := h2.Seen(ctx, RevisionMeta{Rev: rev(4), Subject: "other", Author: "b <b@x>", FirstSeen: t0.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	revs, err := h2.List(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, rv := range revs {
		got = append(got, rv.Rev[38:]+":"+rv.Subject+":"+rv.Outcome)
		if len(rv.Nodes) != 2 {
			t.Errorf("%s has %d node runs, want both nodes'", rv.Rev[38:], len(rv.Nodes))
		}
	}
	if want := "05:commit 4:live,04:commit 3:superseded,03:commit 2:superseded"; strings.Join(got, ",") != want {
		t.Fatalf("history %s, want %s", strings.Join(got, ","), want)
	}
	if !revs[0].FirstSeen.Equal(t0.Add(4 * time.Second)) {
		t.Errorf("first seen %s, want the first record's %s", revs[0].FirstSeen, t0.Add(4*time.Second))
	}
	keys, err := rdb(t, r.Addr).Keys(ctx, "drover:h:history:*").Result()
	if err != nil || len(keys) != 3 {
		t.Errorf("%d history hashes in Redis, want 3 (the dropped revisions' details go too): %v %v", len(keys), keys, err)
	}
	if prev := PreviousLive(revs); prev != rev(3) {
		t.Errorf("previous live %s, want %s", prev, rev(3))
	}
}

// TestPinOnRedlock: the pin is written to every master and read back when
// one of three is down; with two down the read fails instead of saying
// "not pinned", so no agent follows the branch in doubt.
func TestPinOnRedlock(t *testing.T) {
	var addrs []string
	var servers []*testsvc.Redis
	for range 3 {
		s := testsvc.StartRedis(t)
		servers = append(servers, s)
		addrs = append(addrs, s.Addr)
	}
	c := open(t, Config{Addrs: addrs, Cluster: "p"}, "n1")
	ctx := t.Context()
	if _, pinned, err := c.Pinned(ctx); err != nil || pinned {
		t.Fatalf("pinned before any pin: %v %v", pinned, err)
	}
	if err := c.SetPin(ctx, nodestate.Pin{Rev: rev(1), Reason: "bad", By: "op@host", At: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	servers[0].Kill()
	p, pinned, err := c.Pinned(ctx)
	if err != nil || !pinned || p.Rev != rev(1) || p.By != "op@host" || p.Reason != "bad" {
		t.Fatalf("pin with one master down: %+v %v %v", p, pinned, err)
	}
	servers[1].Kill()
	if err := c.Unpin(ctx, "op@host"); err == nil {
		t.Error("unpin succeeded without a quorum")
	}
	servers[2].Kill()
	if _, pinned, err := c.Pinned(ctx); err == nil || pinned {
		t.Fatalf("pin read with no master answering: pinned %v, err %v; want an error", pinned, err)
	}
}

// TestHistoryRecordAfterALostFirstOne: a revision whose first record was
// lost (a Redis failover: the promoted replica lacked it) and which comes
// back through a late write of one of its runs keeps its place by that
// run's time: older than the revision that replaced it, superseded, not
// "rolled back" as a revision first seen now would read.
func TestHistoryRecordAfterALostFirstOne(t *testing.T) {
	t.Parallel()
	r := testsvc.StartRedis(t)
	h := open(t, Config{Addrs: []string{r.Addr}, Cluster: "h"}, "n1").History(10)
	ctx := t.Context()
	t0 := time.Now().UTC().Add(-time.Minute).Truncate(time.Millisecond)
	a, b := rev(1), rev(2)
	if err := h.Seen(ctx, RevisionMeta{Rev: b, Subject: "B", Author: "a <a@x>", FirstSeen: t0.Add(10 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	if err := h.Node(ctx, b, NodeRun{Node: "n1", Started: t0.Add(11 * time.Second), Live: t0.Add(12 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	// A's run, retried after the failover that lost A's first record.
	if err := h.Node(ctx, a, NodeRun{Node: "n2", Started: t0.Add(2 * time.Second), Live: t0.Add(3 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	revs, err := h.List(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(revs) != 2 || revs[0].Rev != b || revs[1].Rev != a {
		t.Fatalf("history %+v, want B then A (newest first)", revs)
	}
	if revs[1].Outcome != "superseded" || !revs[1].FirstSeen.Equal(t0.Add(2*time.Second)) {
		t.Errorf("A: outcome %q, first seen %s; want superseded, first seen at its run's start %s", revs[1].Outcome, revs[1].FirstSeen, t0.Add(2*time.Second))
	}
	if revs[0].Outcome != "live" {
		t.Errorf("B: outcome %q, want live", revs[0].Outcome)
	}
}
