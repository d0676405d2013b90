package cluster

import "github.com/drover-dev/drover/spec"

// ConfigFor is node.yaml n's cluster section (which spec has already
// validated) as Open takes it; ok is false for a single node, which has no
// cluster section. It lives here, beside Config, so that a field added to
// one is seen to need the other; cluster may import spec because spec
// imports nothing of drover's.
func ConfigFor(n *spec.Node) (cfg Config, ok bool) {
	c := n.Cluster
	if c == nil {
		return Config{}, false
	}
	return Config{
		Addrs:                c.Redis,
		SentinelAddrs:        c.SentinelAddrs,
		MasterName:           c.MasterName,
		Username:             c.Username,
		PasswordFile:         c.PasswordFile,
		SentinelPasswordFile: c.SentinelPasswordFile,
		TLS:                  c.TLS,
		CAFile:               c.CAFile,
		DB:                   c.DB,
		Cluster:              c.Name,
		LockExpiry:           c.LockExpiry.D(),
		HeartbeatTTL:         c.HeartbeatTTL.D(),
		HistoryKeep:          n.History.Keep,
	}, true
}
