package reconcile

import (
	"context"
	"os"
	"testing"
	"testing/synctest"

	"github.com/drover-dev/drover/internal/layout"
)

// drainedLB is the LB with the drivers' Drained, which ensureLive reads to
// put a node found out of service back.
type drainedLB struct{ *recLB }

func (l drainedLB) Drained(context.Context) (bool, error) {
	_, _, in := l.log.snapshot()
	return !in, nil
}

// An agent whose workers stop with it leaves the LB first: the health
// endpoint says 503, the drain waits for the LB, the node reports itself
// out; the next agent verifies the workers it starts and only then puts
// the node back.
func TestLeaveBeforeTheWorkersStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newSuiteCluster()
		sp := suiteSpec("")
		sn := c.addNode(t, "n1", sp, sp)
		sn.deps.Drainer = drainedLB{sn.lb}
		sn.start(t)
		up := layout.UpFile(sn.cfg.HealthDir)

		if err := sn.n.Leave(t.Context()); err != nil {
			t.Fatalf("leave: %v", err)
		}
		if _, err := os.Stat(up); !os.IsNotExist(err) {
			t.Errorf("after Leave the health marker %s is still there (err %v): the LB keeps sending requests to stopped workers", up, err)
		}
		if sn.inService() {
			t.Error("after Leave the LB still has the node in service")
		}
		if st := sn.n.Status(); st.Health != HealthOut {
			t.Errorf("after Leave the node reports health %q, want %q: other nodes would count it in service", st.Health, HealthOut)
		}

		// The workers died with the agent; the next one starts them.
		sn.start(t)
		if err := sn.n.Recover(t.Context()); err != nil {
			t.Fatalf("the next agent's recovery: %v", err)
		}
		wantInOrder(t, c, "n1 drain", "n1 workers aaaa", "n1 undrain")
		if _, err := os.Stat(up); err != nil {
			t.Errorf("after the next agent's start the health marker is missing: %v", err)
		}
		sn.end(t, "aaaa", true)
	})
}
