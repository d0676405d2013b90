package cluster

import (
	"testing"

	"github.com/drover-dev/drover/spec"
)

// A cluster section spec accepts maps to a Config that Validate accepts (spec
// is the validator of node.yaml; Validate must never fail what it let
// through), and a node without one has no cluster.
func TestConfigFor(t *testing.T) {
	for _, section := range []string{
		`{redis: [10.0.0.2:6379], name: prod, tls: true, caFile: ca.pem, db: 2, lockExpiry: 10s}`,
		`{sentinels: [10.0.0.1:26379, 10.0.0.2:26379, 10.0.0.3:26379], masterName: mymaster}`,
		`{redis: [a:1, b:1, c:1]}`,
	} {
		n, err := spec.ParseNode("node.yaml", []byte("repo: {url: /srv/repo}\ncluster: "+section+"\n"), "/etc/drover")
		if err != nil {
			t.Fatal(err)
		}
		cfg, ok := ConfigFor(n)
		if !ok {
			t.Fatalf("ConfigFor(%s) says single node", section)
		}
		if err := cfg.Validate(); err != nil {
			t.Errorf("spec accepted cluster %s but Validate says: %v", section, err)
		}
		c := n.Cluster
		if len(cfg.Addrs) != len(c.Redis) || len(cfg.SentinelAddrs) != len(c.SentinelAddrs) || cfg.MasterName != c.MasterName ||
			cfg.Cluster != c.Name || cfg.CAFile != c.CAFile || cfg.TLS != c.TLS || cfg.DB != c.DB ||
			cfg.LockExpiry != c.LockExpiry.D() || cfg.HeartbeatTTL != c.HeartbeatTTL.D() || cfg.HistoryKeep != n.History.Keep {
			t.Errorf("ConfigFor(%s) = %+v", section, cfg)
		}
	}
	n, err := spec.ParseNode("node.yaml", []byte("repo: {url: /srv/repo}\n"), "/etc/drover")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ConfigFor(n); ok {
		t.Error("a node without a cluster section has a cluster")
	}
}
