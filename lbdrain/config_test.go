package lbdrain

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/drover-dev/drover/spec"
)

// A node.yaml spec accepts maps to a Config that Validate accepts: spec is
// the validator of node.yaml, and Validate must never fail a config it let
// through (it would fail at the first drain, not at load).
func TestConfigForAcceptedNode(t *testing.T) {
	for _, c := range []struct{ name, lb string }{
		{"none", `{driver: none}`},
		{"healthcheck", `{driver: healthcheck, healthcheck: {interval: 2s, unhealthyThreshold: 3, healthyThreshold: 2}}`},
		{"haproxy", `{driver: haproxy, haproxy: {socket: /run/haproxy/admin.sock, backend: app, server: web1}}`},
		{"digitalocean", `{driver: digitalocean, digitalocean: {loadBalancerID: lb1, tokenFile: do.token, apiURL: "http://127.0.0.1:1/"}}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			n, err := spec.ParseNode("node.yaml", []byte("repo: {url: /srv/repo}\nlb: "+c.lb+"\n"), "/etc/drover")
			if err != nil {
				t.Fatal(err)
			}
			cfg := ConfigFor(n)
			if err := cfg.Validate(); err != nil {
				t.Fatalf("spec accepted lb %s but Validate says: %v", c.lb, err)
			}
			if cfg.Driver != c.name || cfg.DrainTimeout != DefaultConfig().DrainTimeout {
				t.Errorf("ConfigFor = %+v", cfg)
			}
			if c.name != DriverNone && (cfg.StatusURL != "http://"+n.Nginx.StatusListen+"/nginx_status" || !filepath.IsAbs(cfg.HealthCheck.AccessLog)) {
				t.Errorf("StatusURL %q, AccessLog %q", cfg.StatusURL, cfg.HealthCheck.AccessLog)
			}
			switch c.name {
			case DriverHealthCheck:
				if h := cfg.HealthCheck; h.CheckInterval != 2*time.Second || h.UnhealthyThreshold != 3 || h.HealthyThreshold != 2 {
					t.Errorf("HealthCheck = %+v", h)
				}
			case DriverHAProxy:
				if cfg.HAProxy != (HAProxyConfig{Socket: "/run/haproxy/admin.sock", Backend: "app", Server: "web1"}) {
					t.Errorf("HAProxy = %+v", cfg.HAProxy)
				}
			case DriverDigitalOcean:
				d := cfg.DigitalOcean
				if d.LoadBalancerID != "lb1" || d.TokenFile != "/etc/drover/do.token" || d.APIURL != "http://127.0.0.1:1/" || d.MetadataURL != DefaultConfig().DigitalOcean.MetadataURL {
					t.Errorf("DigitalOcean = %+v", d)
				}
			}
		})
	}
}
