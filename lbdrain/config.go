package lbdrain

import (
	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/nginxconf"
	"github.com/drover-dev/drover/spec"
)

// This file maps node.yaml's lb section (spec.LB, which spec has already
// validated) onto the drain driver's Config. It lives here, beside Config,
// so that a field added to one is seen to need the other; lbdrain may import
// spec and nginxconf because neither imports lbdrain.

// ObservesChecks says whether driver watches the LB's health checks arrive
// (and so needs nginx to log them): every driver that talks to an LB, since
// the quiet-counter rule tells the LB's checks from requests by that log
// (HAProxy keeps checking a server in DRAIN).
func ObservesChecks(driver string) bool {
	switch driver {
	case DriverHealthCheck, DriverDigitalOcean, DriverHAProxy:
		return true
	}
	return false
}

// ConfigFor is node.yaml n's lb section as the drain driver takes it, on
// DefaultConfig's defaults. The health directory and log are the state
// directory's, and the in-flight count is read from nginx's stub_status on
// nginx.statusListen.
func ConfigFor(n *spec.Node) Config {
	c := DefaultConfig()
	c.Driver = n.LB.Driver
	if n.Nginx.StatusListen != "" {
		c.StatusURL = "http://" + n.Nginx.StatusListen + nginxconf.StatusPath
	}
	dirs := layout.New(n.StateDir)
	c.HealthCheck.Dir = dirs.LBDir()
	if ObservesChecks(n.LB.Driver) {
		c.HealthCheck.AccessLog = dirs.HealthLog()
	}
	hc := n.LB.HealthCheck
	c.HealthCheck.CheckInterval = hc.Interval.D()
	c.HealthCheck.UnhealthyThreshold = hc.UnhealthyThreshold
	c.HealthCheck.HealthyThreshold = hc.HealthyThreshold
	x := n.LB.HAProxy
	c.HAProxy = HAProxyConfig{Socket: x.Socket, Backend: x.Backend, Server: x.Server}
	do := n.LB.DigitalOcean
	c.DigitalOcean.LoadBalancerID, c.DigitalOcean.TokenFile = do.LoadBalancerID, do.TokenFile
	if do.APIURL != "" {
		c.DigitalOcean.APIURL = do.APIURL
	}
	if do.MetadataURL != "" {
		c.DigitalOcean.MetadataURL = do.MetadataURL
	}
	return c
}
