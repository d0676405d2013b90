package lbdrain

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/testsvc"
)

// An HAProxy that refuses the change, or does not know the server, makes
// Drain fail and leaves the server in rotation.
func TestHAProxyRefusals(t *testing.T) {
	t.Parallel()
	n := startNode(t, "node1", true)
	opAddr := fmt.Sprintf("127.0.0.1:%d", testsvc.FreePort(t))
	h := testsvc.StartHAProxy(t, haproxyConf(t, fmt.Sprintf("127.0.0.1:%d", testsvc.FreePort(t)),
		"stats socket ipv4@"+opAddr+" level user", n))
	waitServersUp(t, h, 1)
	ctx := context.Background()
	for _, c := range []struct {
		name string
		x    HAProxyConfig
		want string
	}{
		{"unknown server", HAProxyConfig{Socket: h.Socket, Backend: "web", Server: "node9"}, `no server "node9" in backend "web"`},
		{"unknown backend", HAProxyConfig{Socket: h.Socket, Backend: "api", Server: "node1"}, "Can't find backend"},
		{"read-only socket", HAProxyConfig{Socket: opAddr, Backend: "web", Server: "node1"}, "Permission denied"},
		{"no runtime API", HAProxyConfig{Socket: h.Dir + "/nope.sock", Backend: "web", Server: "node1"}, "no such file"},
	} {
		d := mustNew(t, Config{Driver: DriverHAProxy, DrainTimeout: time.Second, HAProxy: c.x})
		if err := d.Drain(ctx); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Drain: %v, want %q", c.name, err, c.want)
		}
	}
	if st := serverStatus(t, h, "node1"); st != "UP" {
		t.Errorf("after refused drains the server is %s", st)
	}
}

// A node whose health checks fail is not reported back in rotation:
// Undrain waits for HAProxy to run it until ctx ends, and says why.
func TestHAProxyUndrainUnhealthyNode(t *testing.T) {
	t.Parallel()
	env := haproxyEnvWithNode(t)
	ctx := context.Background()
	if err := env.d.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	env.n.setUp(t, false) // the new release is broken, and HAProxy's checks see it
	for deadline := time.Now().Add(5 * time.Second); serverStatus(t, env.h, "node1") != "DOWN"; {
		if time.Now().After(deadline) {
			t.Fatalf("HAProxy does not see node1 down: %s", serverStatus(t, env.h, "node1"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	short, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	err := env.d.Undrain(short)
	if err == nil || !strings.Contains(err.Error(), "does not run the server") || !strings.Contains(err.Error(), "503") {
		t.Fatalf("Undrain of an unhealthy node: %v", err)
	}
}

// When the drain timeout passes with a request still in flight, Drain
// returns nil and logs a warning with the count: the LB sends nothing new.
func TestHAProxyDrainTimeoutWithRequestInFlight(t *testing.T) {
	t.Parallel()
	env := haproxyEnvWithNode(t)
	var logs testsvc.LogBuffer
	d := newHAProxy(Config{DrainTimeout: 300 * time.Millisecond, StatusURL: env.n.statusURL,
		HAProxy: HAProxyConfig{Socket: env.h.Socket, Backend: "web", Server: "node1"}}, slog.New(slog.NewTextHandler(&logs, nil)))
	resp, err := http.Get("http://" + env.fe + "/slow.bin")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	start := time.Now()
	if err := d.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 300*time.Millisecond || took > 2*time.Second {
		t.Errorf("Drain took %s with a 300ms drain timeout", took)
	}
	if !strings.Contains(logs.String(), "drain timeout passed") || !strings.Contains(logs.String(), "inflight=1") {
		t.Errorf("no warning with the count: %s", logs.String())
	}
	if why := Incomplete(d); !strings.Contains(why, "1 sessions on the server") {
		t.Errorf("Incomplete = %q, want the sessions left at the bound (for the agent's event)", why)
	}
	if n, err := io.Copy(io.Discard, resp.Body); err != nil || n != 300<<10 {
		t.Errorf("the request in flight was cut: %d bytes, %v", n, err)
	}
}

type haproxyNodeEnv struct {
	n  *node
	h  *testsvc.HAProxy
	fe string
	d  Driver
}

func haproxyEnvWithNode(t *testing.T) haproxyNodeEnv {
	n := startNode(t, "node1", true)
	fe := fmt.Sprintf("127.0.0.1:%d", testsvc.FreePort(t))
	h := testsvc.StartHAProxy(t, haproxyConf(t, fe, "", n))
	waitServersUp(t, h, 1)
	d := mustNew(t, Config{Driver: DriverHAProxy, DrainTimeout: 5 * time.Second, StatusURL: n.statusURL,
		HAProxy: HAProxyConfig{Socket: h.Socket, Backend: "web", Server: "node1"}})
	return haproxyNodeEnv{n, h, fe, d}
}

// An nginx config whose health location ignores the drain file would leave
// the node in rotation: Drain sees the LB still answered 200 and fails.
func TestHealthCheckDrainIgnoredByNginx(t *testing.T) {
	t.Parallel()
	n := startNode(t, "node1", false)
	h := testsvc.StartHAProxy(t, haproxyConf(t, fmt.Sprintf("127.0.0.1:%d", testsvc.FreePort(t)), "", n))
	waitServersUp(t, h, 1)
	d := mustNew(t, healthCheckConfig(n))
	err := d.Drain(context.Background())
	if err == nil || !strings.Contains(err.Error(), "still answers the LB 200") {
		t.Fatalf("Drain with a config that ignores the drain file: %v", err)
	}
	if out, _ := d.Drained(context.Background()); out || serverStatus(t, h, "node1") != "UP" {
		t.Errorf("after the failed drain: Drained() = %v, HAProxy says %s; want false, UP", out, serverStatus(t, h, "node1"))
	}
}

// Undrain of a node whose health endpoint fails (no up file: the switch
// broke it) reports that the LB's checks get 503.
func TestHealthCheckUndrainUnhealthyNode(t *testing.T) {
	t.Parallel()
	n := startNode(t, "node1", true)
	h := testsvc.StartHAProxy(t, haproxyConf(t, fmt.Sprintf("127.0.0.1:%d", testsvc.FreePort(t)), "", n))
	waitServersUp(t, h, 1)
	d := mustNew(t, healthCheckConfig(n))
	ctx := context.Background()
	if err := d.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	n.setUp(t, false)
	err := d.Undrain(ctx)
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1: 503") {
		t.Fatalf("Undrain of an unhealthy node: %v", err)
	}
	if st := serverStatus(t, h, "node1"); st != "DOWN" {
		t.Errorf("HAProxy reports %s", st)
	}
}
