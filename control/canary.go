package control

import (
	"context"
	"fmt"

	"github.com/drover-dev/drover/internal/revid"
	"github.com/drover-dev/drover/reconcile"
)

// Promote lets rev's canary go on before its judgement: the other nodes
// take it now. It returns the canary's record.
func (k *Control) Promote(ctx context.Context, rev string) (reconcile.Canary, error) {
	return k.canaryOp(ctx, "promote", rev)
}

// Abort halts rev cluster-wide: its canary rolls back, drained first.
func (k *Control) Abort(ctx context.Context, rev string) (reconcile.Canary, error) {
	return k.canaryOp(ctx, "abort", rev)
}

func (k *Control) canaryOp(ctx context.Context, op, rev string) (reconcile.Canary, error) {
	if k.c == nil {
		return reconcile.Canary{}, needCluster(op)
	}
	rec, ok, err := k.c.CanaryOf(ctx, rev)
	if err != nil {
		return rec, err
	}
	if !ok {
		return rec, fmt.Errorf("%s has no canary (give the full commit id; drover status shows it)", revid.Short(rev))
	}
	if op == "promote" {
		err = k.c.Promote(ctx, rev, k.By)
	} else {
		err = k.c.Abort(ctx, rev, k.By)
	}
	if err != nil {
		return rec, err
	}
	return rec, k.c.PublishSync(ctx, op+" by "+k.By)
}
