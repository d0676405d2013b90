package agent

import (
	"context"

	"github.com/drover-dev/drover/metrics"
)

// serveMetrics starts node.yaml's metrics listener (metrics.listen) and
// feeds it the node's status changes and halts; without the section it does
// nothing. Call it before the node's first report.
func (n *Node) serveMetrics(ctx context.Context) (stop func(), err error) {
	if n.cfg.Metrics == nil {
		return func() {}, nil
	}
	m := metrics.New(n.cfg.Name)
	stop, err = metrics.Serve(ctx, n.cfg.Metrics.Listen, m, n.log.With("part", "metrics"))
	if err != nil {
		return nil, err
	}
	obs := n.observed()
	obs.mu.Lock()
	obs.watch = append(obs.watch, m.Observe)
	obs.onHalt = append(obs.onHalt, m.Halt)
	obs.mu.Unlock()
	return stop, nil
}
