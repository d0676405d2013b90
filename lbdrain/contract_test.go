package lbdrain

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/testsvc"
)

// contractEnv is one driver in front of a real (or, for DigitalOcean, a
// faithful fake) load balancer.
type contractEnv struct {
	// newDriver makes a fresh instance, as an agent restart would.
	newDriver func() Driver
	// lbOut asks the load balancer itself whether it keeps the node out of
	// rotation; nil for the none driver.
	lbOut func() bool
}

// The contract every driver keeps: Drain and Undrain are idempotent, the
// state survives a restart (a new instance), and Drained reports what the
// load balancer itself says.
func TestContract(t *testing.T) {
	envs := map[string]func(*testing.T) contractEnv{
		DriverNone:              noneEnv,
		DriverHealthCheck:       healthCheckEnv,
		DriverHAProxy:           haproxyEnv,
		DriverDigitalOcean:      func(t *testing.T) contractEnv { return doEnv(t, "") },
		"digitalocean-by-tag":   func(t *testing.T) contractEnv { return doEnv(t, "web") },
		"haproxy-over-tcp":      haproxyTCPEnv,
		"healthcheck-unwatched": healthCheckUnwatchedEnv,
	}
	for name, env := range envs {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			runContract(t, env(t))
		})
	}
}

func runContract(t *testing.T, env contractEnv) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	check := func(step string, d Driver, want bool) {
		t.Helper()
		got, err := d.Drained(ctx)
		if err != nil {
			t.Fatalf("%s: Drained: %v", step, err)
		}
		if env.lbOut == nil {
			want = false // the none driver is never drained
		} else if lb := lbSays(env.lbOut, want); lb != want {
			t.Errorf("%s: the load balancer says out=%v, want %v", step, lb, want)
		}
		if got != want {
			t.Errorf("%s: Drained() = %v, want %v", step, got, want)
		}
	}
	do := func(step string, f func(context.Context) error) {
		t.Helper()
		start := time.Now()
		if err := f(ctx); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		t.Logf("%s took %s", step, time.Since(start).Round(time.Millisecond))
	}
	a := env.newDriver()
	check("start", a, false)
	do("Undrain of an undrained node", a.Undrain)
	check("after Undrain of an undrained node", a, false)
	do("Drain", a.Drain)
	check("after Drain", a, true)
	do("Drain again", a.Drain)
	check("after Drain again", a, true)

	b := env.newDriver() // the agent restarted while the node was out
	check("after restart", b, true)
	do("Drain after restart", b.Drain)
	do("Undrain after restart", b.Undrain)
	check("after Undrain", b, false)
	do("Undrain again", b.Undrain)
	check("after Undrain again", env.newDriver(), false)
}

// lbSays is what lbOut reports, allowing the load balancer a moment to
// act on the check it just made: Undrain returns once nginx has logged the
// HealthyThreshold-th 200, which HAProxy is then still reading (its state
// flipped milliseconds later in about one run in ten on a loaded machine).
func lbSays(lbOut func() bool, want bool) bool {
	got := lbOut()
	for deadline := time.Now().Add(500 * time.Millisecond); got != want && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		got = lbOut()
	}
	return got
}

func noneEnv(t *testing.T) contractEnv {
	return contractEnv{newDriver: func() Driver {
		d, err := New(Config{Driver: DriverNone}, testLog(t))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}}
}

// serverStatus is HAProxy's view of backend web's server name.
func serverStatus(t *testing.T, h *testsvc.HAProxy, name string) string {
	t.Helper()
	out, err := h.Runtime(context.Background(), "show stat web 4 -1")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Split(l, ","); len(f) > 17 && f[1] == name {
			return f[17]
		}
	}
	t.Fatalf("no server %s in:\n%s", name, out)
	return ""
}

func mustNew(t *testing.T, cfg Config) Driver {
	t.Helper()
	d, err := New(cfg, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func healthCheckConfig(n *node) Config {
	return Config{
		Driver: DriverHealthCheck, DrainTimeout: 5 * time.Second, StatusURL: n.statusURL,
		HealthCheck: HealthCheckConfig{Dir: n.healthDir, AccessLog: n.healthLog,
			CheckInterval: 200 * time.Millisecond, UnhealthyThreshold: 2, HealthyThreshold: 2},
	}
}

// healthCheckEnv: HAProxy polls the node's health endpoint; "out" is
// HAProxy marking the server DOWN.
func healthCheckEnv(t *testing.T) contractEnv {
	n := startNode(t, "node1", true)
	h := testsvc.StartHAProxy(t, haproxyConf(t, fmt.Sprintf("127.0.0.1:%d", testsvc.FreePort(t)), "", n))
	waitServersUp(t, h, 1)
	return contractEnv{
		newDriver: func() Driver { return mustNew(t, healthCheckConfig(n)) },
		lbOut:     func() bool { return !strings.HasPrefix(serverStatus(t, h, "node1"), "UP") },
	}
}

// healthCheckUnwatchedEnv: no health access log, so only the computed
// windows are waited.
func healthCheckUnwatchedEnv(t *testing.T) contractEnv {
	n := startNode(t, "node1", true)
	h := testsvc.StartHAProxy(t, haproxyConf(t, fmt.Sprintf("127.0.0.1:%d", testsvc.FreePort(t)), "", n))
	waitServersUp(t, h, 1)
	cfg := healthCheckConfig(n)
	cfg.HealthCheck.AccessLog = ""
	return contractEnv{
		newDriver: func() Driver { return mustNew(t, cfg) },
		lbOut:     func() bool { return !strings.HasPrefix(serverStatus(t, h, "node1"), "UP") },
	}
}

func haproxyEnvWith(t *testing.T, extraGlobal, socket string) contractEnv {
	n := startNode(t, "node1", true)
	h := testsvc.StartHAProxy(t, haproxyConf(t, fmt.Sprintf("127.0.0.1:%d", testsvc.FreePort(t)), extraGlobal, n))
	waitServersUp(t, h, 1)
	if socket == "" {
		socket = h.Socket
	}
	cfg := Config{Driver: DriverHAProxy, DrainTimeout: 5 * time.Second, StatusURL: n.statusURL,
		HAProxy: HAProxyConfig{Socket: socket, Backend: "web", Server: "node1"}}
	return contractEnv{
		newDriver: func() Driver { return mustNew(t, cfg) },
		lbOut:     func() bool { return serverStatus(t, h, "node1") == "DRAIN" },
	}
}

func haproxyEnv(t *testing.T) contractEnv { return haproxyEnvWith(t, "", "") }

func haproxyTCPEnv(t *testing.T) contractEnv {
	addr := fmt.Sprintf("127.0.0.1:%d", testsvc.FreePort(t))
	return haproxyEnvWith(t, "stats socket ipv4@"+addr+" level admin", addr)
}

// doEnv: the fake DigitalOcean LB, health-checking a real nginx from two
// checker addresses.
func doEnv(t *testing.T, tag string) contractEnv {
	f, _, cfg := doSetup(t, tag, true)
	return contractEnv{
		newDriver: func() Driver { return f.driver(t, cfg) },
		lbOut:     func() bool { return !f.member() },
	}
}

// doSetup starts a node and a fake DigitalOcean in front of it and returns
// the driver config.
func doSetup(t *testing.T, tag string, watch bool) (*fakeDO, *node, Config) {
	n := startNode(t, "droplet", true)
	f := startFakeDO(t, tag, n.healthyEnd, "127.0.0.2", "127.0.0.3")
	tokenFile := filepath.Join(t.TempDir(), "do-token")
	if err := os.WriteFile(tokenFile, []byte(f.token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Driver: DriverDigitalOcean, DrainTimeout: 5 * time.Second, StatusURL: n.statusURL,
		DigitalOcean: DOConfig{LoadBalancerID: f.lbID, TokenFile: tokenFile, APIURL: f.srv.URL, MetadataURL: f.srv.URL},
	}
	if watch {
		cfg.HealthCheck.AccessLog = n.healthLog
	}
	return f, n, cfg
}

// driver makes a DigitalOcean driver whose seconds are the fake's, and whose
// retry waits are recorded instead of slept.
func (f *fakeDO) driver(t *testing.T, cfg Config) *digitalOcean {
	d := mustNew(t, cfg).(*digitalOcean)
	d.second = f.unit
	d.retry.sleep = func(ctx context.Context, w time.Duration) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.slept = append(f.slept, w)
		return ctx.Err()
	}
	return d
}
