package cluster

import (
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/testsvc"
	"github.com/drover-dev/drover/nodestate"
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
