package lbdrain

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/testsvc"
)

// BenchmarkDrainedWindow measures what a drain costs in the drained window:
// the time Drain takes, behind a real HAProxy (no retries; checks every
// 200 ms, fall 2, as node.yaml says) under 100 clients, for each driver
// that waits on the LB. One op is one Drain; the Undrain between ops is
// not timed.
//
//	go test ./lbdrain -run '^$' -bench DrainedWindow -benchtime 5x
func BenchmarkDrainedWindow(b *testing.B) {
	for _, driver := range []string{DriverHealthCheck, DriverHAProxy} {
		b.Run(driver, func(b *testing.B) {
			nodes := []*node{startNode(b, "node1", true), startNode(b, "node2", true), startNode(b, "node3", true)}
			n1 := nodes[0]
			fe := fmt.Sprintf("127.0.0.1:%d", testsvc.FreePort(b))
			h := testsvc.StartHAProxy(b, haproxyConfChecks(fe, "", "inter 200ms fall 2 rise 2", nodes...))
			waitServersUp(b, h, len(nodes))
			d, err := New(Config{
				Driver: driver, DrainTimeout: 10 * time.Second, StatusURL: n1.statusURL,
				HealthCheck: HealthCheckConfig{Dir: n1.healthDir, AccessLog: n1.healthLog,
					CheckInterval: 200 * time.Millisecond, UnhealthyThreshold: 2, HealthyThreshold: 2},
				HAProxy: HAProxyConfig{Socket: h.Socket, Backend: "web", Server: "node1"},
			}, nil)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			l := startLoad("http://"+fe+"/", 100, "node1 ")
			defer l.finish()
			time.Sleep(time.Second)
			var total time.Duration
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				if err := d.Drain(ctx); err != nil {
					b.Fatal(err)
				}
				total += time.Since(start)
				b.StopTimer()
				if err := d.Undrain(ctx); err != nil {
					b.Fatal(err)
				}
				time.Sleep(300 * time.Millisecond)
				b.StartTimer()
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/drain")
			if len(l.failures) > 0 {
				b.Errorf("%d requests failed under the drains", len(l.failures))
			}
		})
	}
}
