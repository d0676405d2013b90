package lbdrain

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/testsvc"
)

// A real HAProxy in front of three real nginx nodes under 200 concurrent
// clients: node1 is drained, switched to a new release with an nginx reload,
// and put back. No request may fail, the drained node may get no request
// that starts while it is out, requests in flight to it (slow downloads)
// must have finished when Drain returns, and it must serve the new release
// after Undrain.
func TestZeroLossHAProxyDriver(t *testing.T)     { testZeroLoss(t, DriverHAProxy) }
func TestZeroLossHealthCheckDriver(t *testing.T) { testZeroLoss(t, DriverHealthCheck) }

const loadClients = 200

func testZeroLoss(t *testing.T, driver string) {
	nodes := []*node{startNode(t, "node1", true), startNode(t, "node2", true), startNode(t, "node3", true)}
	n1 := nodes[0]
	fe := fmt.Sprintf("127.0.0.1:%d", testsvc.FreePort(t))
	h := testsvc.StartHAProxy(t, haproxyConf(t, fe, "", nodes...))
	waitServersUp(t, h, len(nodes))

	d, err := New(Config{
		Driver: driver, DrainTimeout: 10 * time.Second, StatusURL: n1.statusURL,
		HealthCheck: HealthCheckConfig{Dir: n1.healthDir, AccessLog: n1.healthLog,
			CheckInterval: 200 * time.Millisecond, UnhealthyThreshold: 2, HealthyThreshold: 2},
		HAProxy: HAProxyConfig{Socket: h.Socket, Backend: "web", Server: "node1"},
	}, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	l := startLoad("http://"+fe+"/", loadClients, "node1 ")
	defer func() {
		select {
		case <-l.stop:
		default:
			l.finish()
		}
	}()
	time.Sleep(time.Second)

	// Two slow downloads in flight on node1 when the drain starts.
	const slow = 2
	slows := slowDownloads(t, "http://"+fe+"/slow.bin", "node1", slow)
	drainStart := time.Now()
	if err := d.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	drained := time.Now()
	if got, _ := d.Drained(ctx); !got {
		t.Error("Drained() = false after Drain")
	}
	n1.switchRelease(t, "v2")
	time.Sleep(300 * time.Millisecond) // the switch's restarts and health checks
	undrainStart := time.Now()
	if err := d.Undrain(ctx); err != nil {
		t.Fatal(err)
	}
	undrained := time.Now()
	time.Sleep(time.Second)
	l.finish()

	for range slow {
		r := <-slows
		if r.err != nil {
			t.Errorf("slow download from node1: %v", r.err)
		} else if r.end.After(drained.Add(100 * time.Millisecond)) {
			t.Errorf("a request in flight on node1 ended %s after Drain returned", r.end.Sub(drained))
		}
	}
	sent, ok := l.sent.Load(), l.ok.Load()
	first := l.firstWatchedAfter(undrained)
	t.Logf("%s: %d clients sent %d requests, %d ok, %d failed; drain took %s, undrain %s, node1 answered %s after; pages %v",
		driver, loadClients, sent, ok, len(l.failures), drained.Sub(drainStart).Round(time.Millisecond),
		undrained.Sub(undrainStart).Round(time.Millisecond), first.Round(time.Microsecond), l.bodies)
	if len(l.failures) > 0 {
		t.Errorf("%d of %d requests failed, first: %s", len(l.failures), sent, strings.Join(l.failures[:min(5, len(l.failures))], "; "))
	}
	if sent < 2000 {
		t.Errorf("only %d requests sent: the load is too light to prove anything", sent)
	}
	if n := l.watchedBetween(drained, undrainStart); n > 0 {
		t.Errorf("node1 answered %d requests sent while it was drained", n)
	}
	if l.page("node1 v1") == 0 {
		t.Error("node1 served nothing before the drain")
	}
	// Undrain returns when the LB sends traffic again: at thousands of
	// requests a second, node1 answers one sent right after.
	if first < 0 || first > 100*time.Millisecond || l.page("node1 v2") == 0 {
		t.Errorf("node1 got no traffic soon after Undrain (first request %s after; %d of the new release)", first, l.page("node1 v2"))
	}
}

// waitServersUp waits until HAProxy's health checks see n servers UP.
func waitServersUp(t testing.TB, h *testsvc.HAProxy, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := h.Runtime(context.Background(), "show stat web 4 -1")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Count(out, ",UP,") == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("servers not UP after 10 s:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
