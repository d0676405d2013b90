package cluster

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/testsvc"
	"github.com/drover-dev/drover/nodestate"
	"github.com/redis/go-redis/v9"
)

// Values forged into Redis are capped: an oversized node status makes the
// registry unreadable (so nodes wait instead of draining), an oversized halt
// or pause still halts or pauses with a cut reason, an oversized event text
// is cut, an oversized pin is an error, not a pin.
func TestForgedValuesAreCapped(t *testing.T) {
	t.Parallel()
	r := testsvc.StartRedis(t)
	cfg := Config{Addrs: []string{r.Addr}, PollMax: 100 * time.Millisecond}
	ctx := t.Context()
	c := open(t, cfg, "n1")
	if err := c.Report(ctx, status("n1", nodestate.StepIdle, "")); err != nil {
		t.Fatal(err)
	}
	db := rdb(t, r.Addr)
	huge := strings.Repeat("x", MaxValue+1)
	key := func(parts ...string) string { return c.key(parts...) }

	db.HSet(ctx, key("nodes"), "forged", huge)
	if _, err := c.Nodes(ctx); err == nil || !strings.Contains(err.Error(), "status of node forged") || !strings.Contains(err.Error(), "cap") {
		t.Fatalf("Nodes with a forged %d-byte status: %v, want a refusal naming it", len(huge), err)
	}
	if _, _, err := c.OutOfService(ctx); err == nil {
		t.Fatal("capacity counted nodes from an unreadable registry")
	}
	db.HDel(ctx, key("nodes"), "forged")

	db.HSet(ctx, key("halted"), "deadbeef", huge)
	reason, halted, err := c.Halted(ctx, "deadbeef")
	if err != nil || !halted || len(reason) > MaxText+64 {
		t.Fatalf("oversized halt: halted=%v, %d-byte reason, %v; want halted with a cut reason", halted, len(reason), err)
	}
	db.Set(ctx, key("paused"), huge, 0)
	why, paused, err := c.Paused(ctx)
	if err != nil || !paused || len(why) > MaxText+64 {
		t.Fatalf("oversized pause: paused=%v, %d-byte reason, %v", paused, len(why), err)
	}
	if err := c.Emit(ctx, Event{Msg: huge}); err != nil {
		t.Fatal(err)
	}
	es, err := c.Events(ctx, 1)
	if err != nil || len(es) != 1 || len(es[0].Msg) > MaxText+64 || !strings.Contains(es[0].Msg, "bytes cut") {
		t.Fatalf("oversized event: %v, %v", len(es), err)
	}
	db.Set(ctx, key("pin"), huge, 0)
	if _, _, err := c.Pinned(ctx); err == nil || !strings.Contains(err.Error(), "cap") {
		t.Fatalf("oversized pin: %v, want a refusal", err)
	}
}

// A forged registry, halt list or history of more entries than drover ever
// writes is refused by its count, before anything reads it whole.
func TestForgedListsAreRefusedByCount(t *testing.T) {
	t.Parallel()
	r := testsvc.StartRedis(t)
	ctx := t.Context()
	c := open(t, Config{Addrs: []string{r.Addr}, PollMax: 100 * time.Millisecond}, "n1")
	db := rdb(t, r.Addr)
	fields := func(n int) []any {
		kv := make([]any, 0, 2*n)
		for i := range n {
			kv = append(kv, fmt.Sprintf("f%d", i), "{}")
		}
		return kv
	}
	db.HSet(ctx, c.key("nodes"), fields(MaxNodes+1)...)
	if _, err := c.Nodes(ctx); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%d entries in Redis, over the cap of %d", MaxNodes+1, MaxNodes)) {
		t.Errorf("Nodes of a forged %d-node registry: %v, want refused by count", MaxNodes+1, err)
	}
	db.HSet(ctx, c.key("halted"), fields(MaxHalts+1)...)
	if _, err := c.HaltedAll(ctx); err == nil || !strings.Contains(err.Error(), "over the cap") {
		t.Errorf("HaltedAll of %d forged halts: %v, want refused by count", MaxHalts+1, err)
	}
	zs := make([]redis.Z, MaxHistory+1)
	for i := range zs {
		zs[i] = redis.Z{Score: float64(i), Member: fmt.Sprintf("%040d", i)}
	}
	db.ZAdd(ctx, c.key("history"), zs...)
	if _, err := c.History(0).List(ctx, 10); err == nil || !strings.Contains(err.Error(), "over the cap") {
		t.Errorf("History.List of %d forged revisions: %v, want refused by count", len(zs), err)
	}
}
