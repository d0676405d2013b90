package units

import (
	"context"
	"testing"
	"time"

	"github.com/drover-dev/drover/health"
)

// TestInstanceContextTakesTheHealthBudget: the rollout's healthTimeout,
// passed down as the health budget, bounds each instance's wait instead of
// the supervisor's 2-minute default; a nearer deadline of ctx still wins.
func TestInstanceContextTakesTheHealthBudget(t *testing.T) {
	c := Config{}.withDefaults()
	left := func(ctx context.Context) time.Duration {
		d, ok := ctx.Deadline()
		if !ok {
			t.Fatal("no deadline")
		}
		return time.Until(d)
	}
	ctx, cancel := c.instanceContext(context.Background())
	if d := left(ctx); d < DefaultInstanceTimeout-time.Second || d > DefaultInstanceTimeout {
		t.Errorf("without a budget: %s left, want %s", d, DefaultInstanceTimeout)
	}
	cancel()
	ctx, cancel = c.instanceContext(health.WithBudget(context.Background(), 5*time.Second))
	if d := left(ctx); d < 4*time.Second || d > 5*time.Second {
		t.Errorf("with a 5s budget: %s left", d)
	}
	cancel()
	parent, pcancel := context.WithTimeout(health.WithBudget(context.Background(), time.Minute), 2*time.Second)
	defer pcancel()
	ctx, cancel = c.instanceContext(parent)
	defer cancel()
	if d := left(ctx); d > 2*time.Second {
		t.Errorf("a nearer deadline of ctx: %s left, want ≤ 2s", d)
	}
}
