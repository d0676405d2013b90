package health

import (
	"context"
	"time"
)

type budgetKey struct{}

// WithBudget says how long each wait for one thing to become healthy may
// take under ctx: the rollout's healthTimeout, which the code that restarts
// worker instances one by one applies to each instance. Without it, that
// code uses its own default.
func WithBudget(ctx context.Context, d time.Duration) context.Context {
	if d <= 0 {
		return ctx
	}
	return context.WithValue(ctx, budgetKey{}, d)
}

// Budget is the duration set by WithBudget, if any.
func Budget(ctx context.Context) (time.Duration, bool) {
	d, ok := ctx.Value(budgetKey{}).(time.Duration)
	return d, ok
}
