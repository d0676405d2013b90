package lbdrain

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/testsvc"
)

// TestDrainWaitsForTheLBItself: node.yaml says the LB checks every 200 ms
// and marks a node down after 2 failures (an assumed window of 600 ms), but
// the real HAProxy in front, which does not retry, checks every second. The
// drain must wait for the LB itself: after Drain returns, no request
// reaches node1, by the clients' count (no answer from node1 that started
// after Drain, none that ended later than a moment after it) and by
// node1's own nginx (its request counter, less the LB's checks and the
// test's own status reads, does not move until the undrain); and HAProxy
// itself reports node1 DOWN.
func TestDrainWaitsForTheLBItself(t *testing.T) {
	nodes := []*node{startNode(t, "node1", true), startNode(t, "node2", true), startNode(t, "node3", true)}
	n1 := nodes[0]
	fe := fmt.Sprintf("127.0.0.1:%d", testsvc.FreePort(t))
	h := testsvc.StartHAProxy(t, haproxyConfChecks(fe, "", "inter 1s fall 2 rise 2", nodes...))
	waitServersUp(t, h, len(nodes))
	const assumed = 600 * time.Millisecond // 200 ms × 2 + a 200 ms margin
	d, err := New(Config{
		Driver: DriverHealthCheck, DrainTimeout: 10 * time.Second, StatusURL: n1.statusURL,
		HealthCheck: HealthCheckConfig{Dir: n1.healthDir, AccessLog: n1.healthLog,
			CheckInterval: 200 * time.Millisecond, UnhealthyThreshold: 2, HealthyThreshold: 2},
	}, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l := startLoad("http://"+fe+"/", 100, "node1 ")
	defer func() {
		select {
		case <-l.stop:
		default:
			l.finish()
		}
	}()
	time.Sleep(1500 * time.Millisecond) // at least one check of the LB's before the drain

	drainStart := time.Now()
	if err := d.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	drained := time.Now()
	if why := Incomplete(d); why != "" {
		t.Errorf("a drain that saw the LB stop says it went on at its bound: %s", why)
	}
	row, err := h.Runtime(ctx, "show stat web 4 -1")
	if err != nil {
		t.Fatal(err)
	}
	n1Status := ""
	for _, line := range strings.Split(row, "\n") {
		if f := strings.Split(line, ","); len(f) > 17 && f[1] == "node1" {
			n1Status = f[17]
		}
	}

	// node1's own view over the drained window.
	w := newInflightWaiter(n1.statusURL)
	s1, err := w.read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lines1 := countLines(t, n1.healthLog)
	time.Sleep(2 * time.Second) // two of the LB's check intervals, under load
	lines2 := countLines(t, n1.healthLog)
	s2, err := w.read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	others := s2.Requests - s1.Requests - 1 - (lines2 - lines1)

	undrainStart := time.Now()
	if err := d.Undrain(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	l.finish()

	took := drained.Sub(drainStart)
	started, late := l.watchedAfter(drained, undrainStart, 20*time.Millisecond)
	t.Logf("drain took %s (the assumed window is %s); HAProxy says node1 is %q; %d requests sent, %d failed; node1 answered %d requests that started after Drain returned, %d that ended >20 ms after; node1's nginx got %d requests that were not checks in the 2 s after",
		took.Round(time.Millisecond), assumed, n1Status, l.sent.Load(), len(l.failures), started, late, others)
	if len(l.failures) > 0 {
		t.Errorf("%d requests failed, first: %s", len(l.failures), strings.Join(l.failures[:min(5, len(l.failures))], "; "))
	}
	if !strings.HasPrefix(n1Status, "DOWN") {
		t.Errorf("HAProxy reports node1 %q when Drain returned, want DOWN", n1Status)
	}
	if started > 0 || late > 0 {
		t.Errorf("node1 answered %d requests started after Drain returned and %d ending well after it", started, late)
	}
	if others > 0 {
		t.Errorf("node1's nginx counted %d requests (not the LB's checks) after Drain returned", others)
	}
	if l.page("node1 v1") == 0 {
		t.Error("node1 served nothing before the drain: the test proves nothing")
	}
}

// countLines is how many lines (health checks) nginx logged to path.
func countLines(t *testing.T, path string) int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return int64(bytes.Count(b, []byte("\n")))
}

// TestDrainWaitsForLateRequests: requests that still reach the node after
// the LB marked it down (routed just before, queued, slow to connect; here
// sent to node1 directly, every 50 ms for 1.5 s after the drain began) hold
// the drain: it returns only once none arrived for one check interval, and
// with nothing in flight.
func TestDrainWaitsForLateRequests(t *testing.T) {
	for _, driver := range []string{DriverHealthCheck, DriverHAProxy} {
		t.Run(driver, func(t *testing.T) {
			n1 := startNode(t, "node1", true)
			fe := fmt.Sprintf("127.0.0.1:%d", testsvc.FreePort(t))
			h := testsvc.StartHAProxy(t, haproxyConfChecks(fe, "", "inter 200ms fall 2 rise 2", n1))
			waitServersUp(t, h, 1)
			const interval = 200 * time.Millisecond
			d, err := New(Config{
				Driver: driver, DrainTimeout: 10 * time.Second, StatusURL: n1.statusURL,
				HealthCheck: HealthCheckConfig{Dir: n1.healthDir, AccessLog: n1.healthLog,
					CheckInterval: interval, UnhealthyThreshold: 2, HealthyThreshold: 2},
				HAProxy: HAProxyConfig{Socket: h.Socket, Backend: "web", Server: "node1"},
			}, testLog(t))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
			lastEnd := make(chan time.Time, 1)
			start := time.Now()
			go func() {
				var last time.Time
				for time.Since(start) < 1500*time.Millisecond {
					if resp, err := client.Get("http://" + n1.addr + "/"); err == nil {
						resp.Body.Close()
						last = time.Now()
					}
					time.Sleep(50 * time.Millisecond)
				}
				lastEnd <- last
			}()
			if err := d.Drain(ctx); err != nil {
				t.Fatal(err)
			}
			drained := time.Now()
			last := <-lastEnd
			t.Logf("%s: the last late request ended %s after the drain began; Drain returned %s after it", driver,
				last.Sub(start).Round(time.Millisecond), drained.Sub(last).Round(time.Millisecond))
			if last.IsZero() || last.Sub(start) < time.Second {
				t.Fatalf("the late requests did not run (last %v)", last)
			}
			// One interval of quiet, less the sampling period (100 ms) that
			// may separate the last request from the read that saw it.
			if drained.Before(last.Add(interval - 100*time.Millisecond)) {
				t.Errorf("Drain returned %s after the last late request, before one check interval (%s) of quiet", drained.Sub(last), interval)
			}
		})
	}
}
