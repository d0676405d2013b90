package printers

import (
	"strings"
	"testing"

	"github.com/drover-dev/drover/cluster"
	"github.com/drover-dev/drover/reconcile"
)

func TestClusterStatusNamesEachLiveRevisionsSigner(t *testing.T) {
	st := func(node, rev, signer string) cluster.NodeStatus {
		return cluster.NodeStatus{Status: reconcile.Status{Node: node, Rev: rev, Signer: signer}, Alive: true}
	}
	a, b := strings.Repeat("a", 40), strings.Repeat("b", 40)
	var out strings.Builder
	Cluster(&out, cluster.ClusterStatus{Cluster: "c", Nodes: []cluster.NodeStatus{
		st("n1", a, "alice@example.com (SSH SHA256:x)"), st("n2", a, "alice@example.com (SSH SHA256:x)"), st("n3", b, "Bob (OpenPGP F)"),
	}}, 0)
	for _, want := range []string{a[:12] + " signed by alice@example.com (SSH SHA256:x)\n", b[:12] + " signed by Bob (OpenPGP F)\n"} {
		if strings.Count(out.String(), want) != 1 {
			t.Errorf("status should say once %q:\n%s", want, out.String())
		}
	}
}
