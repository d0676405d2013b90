package reconcile

import (
	"context"
	"fmt"
	"time"
)

// leaveGrace bounds Leave beyond the live spec's drainTimeout: the wait for
// the LB to see the node stopped.
const leaveGrace = time.Minute

// Leave takes the node out of the load balancer because the agent is about
// to stop workers that stop with it (the exec supervisor's children; the
// workers systemd runs outlive the agent, and Leave is not called for
// them). Without it the health endpoint would go on answering 200 while
// nginx has no worker behind it, and the LB would send the node requests
// that fail until the next agent started them again. The health marker goes
// first, so even a drain that fails leaves the endpoint at 503, and the node
// reports itself out, so no other node drains as if it still served.
// The next agent's start (Recover → ensureLive) verifies the workers it
// starts and puts the node back. Leave ignores ctx's cancellation (it runs
// as the agent stops) and is bounded by the live spec's drainTimeout plus
// a minute.
func (n *Node) Leave(ctx context.Context) error {
	cur, _ := n.d.Releases.Current() // none read: the default
	timeout := n.drainTimeoutOf(cur)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout+leaveGrace)
	defer cancel()
	n.markHealthy(false)
	n.setHealth(ctx, HealthOut, "the agent stopped, and its workers with it")
	if err := n.d.Drainer.Drain(ctx, timeout); err != nil {
		return fmt.Errorf("leave the load balancer before the workers stop: %w", err)
	}
	return nil
}
