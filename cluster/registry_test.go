package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/testsvc"
	"github.com/drover-dev/drover/nodestate"
)

func status(node string, step nodestate.Step, target string) nodestate.Status {
	return nodestate.Status{Node: node, Rev: "rev-old", Target: target, Step: step, Since: time.Now()}
}

// A node that stops heartbeating is reported not alive after the TTL, and
// counts as out of service, as do drained and failed nodes; forgetting a
// node stops counting it.
func TestRegistryHeartbeatAndCapacity(t *testing.T) {
	t.Parallel()
	r := testsvc.StartRedis(t)
	const ttl = 600 * time.Millisecond
	cfg := Config{Addrs: []string{r.Addr}, HeartbeatTTL: ttl, PollMax: 100 * time.Millisecond}
	ctx := t.Context()
	self, steady, silent, drained, failed := open(t, cfg, "self"), open(t, cfg, "steady"), open(t, cfg, "silent"), open(t, cfg, "drained"), open(t, cfg, "failed")
	for _, c := range []*Cluster{self, steady, silent, drained, failed} {
		if err := c.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	reports := map[*Cluster]nodestate.Status{
		self:    status("self", nodestate.StepWaiting, "rev-new"),
		steady:  status("steady", nodestate.StepIdle, ""),
		silent:  status("silent", nodestate.StepIdle, ""),
		drained: status("drained", nodestate.StepDraining, "rev-new"),
		failed:  status("failed", nodestate.StepFailed, "rev-new"),
	}
	for c, st := range reports {
		if err := c.Report(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	// "silent" dies: its heartbeat stops, its registration stays.
	if err := silent.Close(); err != nil {
		t.Fatal(err)
	}
	nodes, err := self.Nodes(ctx)
	if err != nil || len(nodes) != 5 || !nodes[3].Alive || nodes[3].Node != "silent" {
		t.Fatalf("nodes right after the reports: %+v, %v", nodes, err)
	}

	time.Sleep(ttl + 300*time.Millisecond)
	nodes, err = self.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	alive := map[string]bool{}
	for _, n := range nodes {
		alive[n.Node] = n.Alive
	}
	want := map[string]bool{"self": true, "steady": true, "silent": false, "drained": true, "failed": true}
	if !maps.Equal(alive, want) {
		t.Errorf("alive after %s: %v, want %v (the heartbeat keeps the others alive past the TTL)", ttl+300*time.Millisecond, alive, want)
	}

	out, registered, err := self.OutOfService(ctx)
	if err != nil {
		t.Fatal(err)
	}
	names := strings.Join(out, "; ")
	if registered != 5 || len(out) != 3 || !strings.Contains(names, "drained (draining)") ||
		!strings.Contains(names, "failed (failed)") || !strings.Contains(names, "silent (silent since") {
		t.Errorf("OutOfService = %q, %d; want drained, failed and silent of 5", out, registered)
	}

	// With maxUnavailable 3, self may not go out (3 out + itself = 4).
	var reasons []string
	wctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	err = self.WaitCapacity(wctx, 3, func(r string) { reasons = append(reasons, r) })
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || len(reasons) != 1 ||
		!strings.Contains(reasons[0], "3 of 5 nodes out of service") || !strings.Contains(err.Error(), "maxUnavailable 3") {
		t.Fatalf("WaitCapacity = %v with reasons %q; want a deadline error and one reason", err, reasons)
	}

	// The operator forgets the dead node, the drained one comes back and
	// the failed one rolls back: capacity frees while self waits.
	done := make(chan error, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		done <- self.WaitCapacity(wctx, 1, nil)
	}()
	time.Sleep(200 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("WaitCapacity returned %v while 3 nodes were out", err)
	default:
	}
	if err := self.Forget(ctx, "silent"); err != nil {
		t.Fatal(err)
	}
	if err := drained.Report(ctx, status("drained", nodestate.StepIdle, "")); err != nil {
		t.Fatal(err)
	}
	if err := failed.Report(ctx, status("failed", nodestate.StepIdle, "")); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("WaitCapacity after capacity freed: %v", err)
	}
	out, registered, _ = self.OutOfService(ctx)
	if len(out) != 0 || registered != 4 {
		t.Errorf("after forget: out %q of %d, want none of 4", out, registered)
	}
	events, _ := self.Events(ctx, 100)
	if !slices.ContainsFunc(events, func(e Event) bool { return e.Node == "self" && strings.Contains(e.Msg, "waiting for capacity") }) {
		t.Errorf("no event says why self waited: %+v", events)
	}
}

// A halt stops that revision everywhere and only that one; it survives the
// loss of a minority of Redlock masters, and a lost quorum is an error,
// never a "not halted".
func TestHalts(t *testing.T) {
	t.Parallel()
	rs := []*testsvc.Redis{testsvc.StartRedis(t), testsvc.StartRedis(t), testsvc.StartRedis(t)}
	cfg := Config{Addrs: []string{rs[0].Addr, rs[1].Addr, rs[2].Addr}}
	a, b := open(t, cfg, "a"), open(t, cfg, "b")
	ctx := t.Context()

	if err := a.Halt(ctx, "bad", "health checks: site blog: 502"); err != nil {
		t.Fatal(err)
	}
	if reason, halted, err := b.Halted(ctx, "bad"); err != nil || !halted || reason != "health checks: site blog: 502" {
		t.Errorf("Halted(bad) on another node = %q, %v, %v", reason, halted, err)
	}
	if _, halted, err := b.Halted(ctx, "newer"); err != nil || halted {
		t.Errorf("a newer commit is halted: %v, %v", halted, err)
	}

	rs[2].Kill()
	if err := a.Halt(ctx, "worse", "migrations failed"); err != nil {
		t.Fatalf("halt with 2 of 3 masters: %v", err)
	}
	all, err := b.HaltedAll(ctx)
	if err != nil || len(all) != 2 || all[0].Rev != "bad" || all[1].Rev != "worse" || all[1].Node != "a" {
		t.Errorf("HaltedAll = %+v, %v", all, err)
	}

	rs[1].Kill()
	if err := a.Halt(ctx, "third", "x"); err == nil {
		t.Error("halt with 1 of 3 masters succeeded")
	}
	if _, halted, err := b.Halted(ctx, "bad"); err != nil || !halted {
		t.Errorf("a halt seen on the one master left: %v, %v", halted, err)
	}
	if _, halted, err := b.Halted(ctx, "unknown"); err == nil || halted {
		t.Errorf("Halted without a quorum = %v, %v; want an error", halted, err)
	}
	if err := a.Clear(ctx, "bad"); err == nil {
		t.Error("clear without a quorum succeeded")
	}
}

func TestHaltClear(t *testing.T) {
	t.Parallel()
	r := testsvc.StartRedis(t)
	c := open(t, Config{Addrs: []string{r.Addr}}, "a")
	ctx := t.Context()
	if err := c.Halt(ctx, "bad", "boom"); err != nil {
		t.Fatal(err)
	}
	if err := c.Clear(ctx, "bad"); err != nil {
		t.Fatal(err)
	}
	if _, halted, err := c.Halted(ctx, "bad"); err != nil || halted {
		t.Errorf("halted after Clear: %v, %v", halted, err)
	}
	if all, err := c.HaltedAll(ctx); err != nil || len(all) != 0 {
		t.Errorf("HaltedAll after Clear = %+v, %v", all, err)
	}
}

// Pause stops every node from taking the rollout lock; Resume lets the
// waiting node go on.
func TestPauseBlocksTheLock(t *testing.T) {
	t.Parallel()
	r := testsvc.StartRedis(t)
	cfg := Config{Addrs: []string{r.Addr}, PollMax: 100 * time.Millisecond}
	op, node := open(t, cfg, "operator"), open(t, cfg, "node")
	ctx := t.Context()
	if err := op.Pause(ctx, "incident 42"); err != nil {
		t.Fatal(err)
	}
	if reason, paused, err := node.Paused(ctx); err != nil || !paused || reason != "incident 42" {
		t.Fatalf("Paused = %q, %v, %v", reason, paused, err)
	}
	wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, _, err := node.Acquire(wctx, "rev", 1)
	cancel()
	if err == nil || !strings.Contains(err.Error(), "rollouts are paused: incident 42") {
		t.Fatalf("Acquire while paused = %v", err)
	}

	got := make(chan error, 1)
	go func() {
		_, release, err := node.Acquire(ctx, "rev", 1)
		if err == nil {
			err = release(ctx)
		}
		got <- err
	}()
	time.Sleep(300 * time.Millisecond)
	select {
	case err := <-got:
		t.Fatalf("Acquire returned %v while paused", err)
	default:
	}
	if err := op.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Acquire still waiting 5s after Resume")
	}
	if _, paused, _ := node.Paused(ctx); paused {
		t.Error("still paused after Resume")
	}
}

// The event stream keeps about the last MaxEvents; Report records a step
// change once; Events is newest last.
func TestEvents(t *testing.T) {
	t.Parallel()
	r := testsvc.StartRedis(t)
	c := open(t, Config{Addrs: []string{r.Addr}}, "a")
	ctx := t.Context()
	for i := range 1500 {
		if err := c.Emit(ctx, Event{Rev: "r", Msg: "filler " + string(rune('a'+i%26))}); err != nil {
			t.Fatal(err)
		}
	}
	n, err := rdb(t, r.Addr).XLen(ctx, c.key("events")).Result()
	if err != nil || n < DefaultMaxEvents || n > DefaultMaxEvents+100 {
		t.Errorf("stream holds %d events after 1500, want about %d", n, DefaultMaxEvents)
	}

	st := status("a", nodestate.StepPreparing, "rev-new")
	for range 3 {
		if err := c.Report(ctx, st); err != nil { // the same step again: one event
			t.Fatal(err)
		}
	}
	st.Step, st.Error = nodestate.StepFailed, "health checks failed"
	if err := c.Report(ctx, st); err != nil {
		t.Fatal(err)
	}
	es, err := c.Events(ctx, 3)
	if err != nil || len(es) != 3 {
		t.Fatalf("Events(3) = %+v, %v", es, err)
	}
	if es[0].Msg == "" || es[1].Step != nodestate.StepPreparing || es[2].Step != nodestate.StepFailed ||
		es[2].Err != "health checks failed" || es[2].Rev != "rev-new" || es[2].Node != "a" || es[2].Time.IsZero() {
		t.Errorf("last events (newest last): %+v", es)
	}
}

// Snapshot shows everything status needs, and survives a JSON round trip.
func TestSnapshot(t *testing.T) {
	t.Parallel()
	r := testsvc.StartRedis(t)
	cfg := Config{Addrs: []string{r.Addr}, Cluster: "prod"}
	c := open(t, cfg, "a")
	ctx := t.Context()
	if err := c.Report(ctx, status("a", nodestate.StepMigrating, "rev-new")); err != nil {
		t.Fatal(err)
	}
	_, release, err := c.Acquire(ctx, "rev-new", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer release(ctx)
	if err := c.Halt(ctx, "rev-bad", "boom"); err != nil {
		t.Fatal(err)
	}
	if err := c.Pause(ctx, "maintenance"); err != nil {
		t.Fatal(err)
	}
	s, err := c.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back ClusterStatus
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if back.Cluster != "prod" || len(back.Nodes) != 1 || back.Nodes[0].Step != nodestate.StepMigrating || !back.Nodes[0].Alive ||
		len(back.Holders) != 1 || back.Holders[0].Node != "a" || back.Holders[0].Rev != "rev-new" ||
		len(back.Halted) != 1 || back.Halted[0].Reason != "boom" || back.Paused == nil || back.Paused.Reason != "maintenance" ||
		len(back.Events) == 0 {
		t.Errorf("snapshot: %s", data)
	}
	for _, key := range []string{`"nodes"`, `"lockHolders"`, `"halted"`, `"paused"`, `"events"`, `"alive":true`, `"step":"migrating"`} {
		if !strings.Contains(string(data), key) {
			t.Errorf("JSON lacks %s: %s", key, data)
		}
	}
	keys, _ := rdb(t, r.Addr).Keys(ctx, "*").Result()
	for _, k := range keys {
		if !strings.HasPrefix(k, "drover:prod:") {
			t.Errorf("key %q outside the cluster's prefix", k)
		}
	}
}

// Bad configuration is reported field by field; the password comes from
// its file.
func TestOpenConfig(t *testing.T) {
	t.Parallel()
	_, err := Open(t.Context(), Config{SentinelAddrs: []string{"nohost"}, Cluster: "a b", LockExpiry: time.Millisecond, CAFile: "x"}, "n", nil)
	for _, want := range []string{"cluster.masterName", "cluster.sentinels[0]", "cluster.name", "cluster.lockExpiry", "cluster.caFile"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}

	r := testsvc.StartRedis(t, "--requirepass", "s3cret")
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good"), filepath.Join(dir, "bad")
	_ = os.WriteFile(good, []byte("s3cret\n"), 0o600)
	_ = os.WriteFile(bad, []byte("wrong\n"), 0o600)
	c := open(t, Config{Addrs: []string{r.Addr}, PasswordFile: good}, "a")
	if err := c.Report(t.Context(), status("a", nodestate.StepIdle, "")); err != nil {
		t.Errorf("report with the right password: %v", err)
	}
	if _, err := Open(t.Context(), Config{Addrs: []string{r.Addr}, PasswordFile: bad}, "a", nil); err == nil {
		t.Error("Open with a wrong password succeeded")
	}
}

// TestEventsKeptWhileRedisIsDown: events that cannot be written while Redis
// is unreachable are kept, and written with their own times once it is back
// (by the heartbeat, with no new event); past MaxBacklog the oldest are
// dropped and a note says how many.
func TestEventsKeptWhileRedisIsDown(t *testing.T) {
	t.Parallel()
	r := testsvc.StartRedis(t)
	c := open(t, Config{Addrs: []string{r.Addr}, LockExpiry: 5 * time.Second, HeartbeatTTL: 1500 * time.Millisecond}, "a")
	ctx := t.Context()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Report(ctx, status("a", nodestate.StepIdle, "")); err != nil {
		t.Fatal(err)
	}
	r.Kill()
	var cut []Event
	for _, msg := range []string{"verified while cut off", "re-joined while cut off"} {
		e := Event{Time: time.Now(), Step: nodestate.StepUndraining, Rev: "rev-new", Msg: msg}
		if err := c.Emit(ctx, e); err != nil {
			t.Fatalf("Emit with Redis down: %v, want the event kept", err)
		}
		cut = append(cut, e)
	}
	back := restartRedis(t, r.Port)

	// The heartbeat writes them, with their times, in order.
	var es []Event
	deadline := time.Now().Add(10 * time.Second)
	for len(es) < 2 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		es, _ = c.Events(ctx, 10)
	}
	if len(es) != 2 {
		t.Fatalf("after Redis came back the stream holds %+v, want the 2 events kept", es)
	}
	for i, e := range es {
		if e.Msg != cut[i].Msg || !e.Time.Equal(cut[i].Time.Round(0)) || e.Node != "a" || e.Step != nodestate.StepUndraining {
			t.Errorf("event %d: %+v, want %q at %s", i, e, cut[i].Msg, cut[i].Time)
		}
	}

	// Too many while down: the oldest go, and a note says how many.
	_ = back.Process.Kill()
	_ = back.Wait()
	for i := range MaxBacklog + 5 {
		_ = c.Emit(ctx, Event{Msg: fmt.Sprint("kept ", i)})
	}
	restartRedis(t, r.Port)
	// go-redis dials again about once a second after failed dials: this
	// one may be kept too, and written by the heartbeat.
	_ = c.Emit(ctx, Event{Msg: "back"})
	for deadline := time.Now().Add(20 * time.Second); (len(es) == 0 || es[len(es)-1].Msg != "back") && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		es, _ = c.Events(ctx, MaxBacklog+10)
	}
	// The note, then the newest MaxBacklog kept (the last "back" if it too
	// was kept), then "back" if it was written at once.
	lost, kept := 0, 0
	if len(es) > 0 {
		fmt.Sscanf(es[0].Msg, "%d events were lost while Redis could not be written", &lost)
	}
	for i, e := range es[min(1, len(es)):] {
		if e.Msg == "back" {
			if i != len(es)-2 {
				t.Errorf("back is event %d of %d", i+1, len(es))
			}
			continue
		}
		if want := fmt.Sprint("kept ", lost+i); e.Msg != want {
			t.Errorf("event %d is %q, want %q", i+1, e.Msg, want)
		}
		kept++
	}
	if lost < 5 || lost+kept != MaxBacklog+5 || es[len(es)-1].Msg != "back" {
		t.Fatalf("after an overflow: %d events, %d lost and %d kept of %d, first %+v, last %+v", len(es), lost, kept, MaxBacklog+5, es[0], es[len(es)-1])
	}
	t.Logf("an overflow of %d: %d written after Redis came back, %d dropped and noted", MaxBacklog+5, kept, lost)
}
