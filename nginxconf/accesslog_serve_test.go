package nginxconf

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/testsvc"
	"github.com/drover-dev/drover/traffic"
)

// TestTrafficLogCountsRealRequests serves a site and a worker whose answers
// are 500 one time in ten through the real nginx, with the per-request log
// followed by the agent, and checks the counter's figures against what
// the clients got: requests per target, 5xx as errors, 4xx not, the
// health endpoint and unknown hosts not counted, no URI in a line.
func TestTrafficLogCountsRealRequests(t *testing.T) {
	apiPort := testsvc.FreePort(t)
	yaml := appYAML + fmt.Sprintf(`
workers:
  - name: api
    source: workers/api
    exec: [./api]
    port: %d
    health: {path: /healthz}
    routes: [{serverName: app.test, path: /api/}]
`, apiPort)
	var (
		counter *traffic.Counter
		lines   atomic.Int64
		raw     atomic.Value
	)
	w := newWorld(t, yaml, true, func(p *Params) {
		p.TrafficLog = filepath.Join(filepath.Dir(p.HealthDir), "traffic.log")
		counter = traffic.NewCounter(traffic.TargetsOf(p.Spec))
		counter.Reset("r1", nil, time.Now().Add(-time.Second))
		f := traffic.NewFollower(p.TrafficLog, &lineSpy{c: counter, n: &lines, last: &raw}, 0)
		f.Start(50 * time.Millisecond)
		t.Cleanup(f.Close)
	})
	var n atomic.Int64
	backend(t, fmt.Sprintf("127.0.0.1:%d", apiPort), func(rw http.ResponseWriter, r *http.Request) {
		if n.Add(1)%10 == 0 {
			http.Error(rw, "boom", 500)
			return
		}
		fmt.Fprint(rw, "ok")
	})
	writeFile(t, filepath.Join(w.p.HealthDir, "up"), "ok\n")
	c := w.client(true, false)
	want := map[string]traffic.Counts{}
	count := func(target string, status int) {
		cs := want[target]
		cs.Requests++
		if status >= 500 {
			cs.Errors++
		}
		want[target] = cs
	}
	for i := range 200 {
		resp, _ := w.mustGet(c, "app.test", fmt.Sprintf("/api/secret-%d?token=x", i))
		count("worker:api", resp.StatusCode)
		resp, _ = w.mustGet(c, "app.test", "/")
		count("site:app", resp.StatusCode)
	}
	for range 20 {
		resp, _ := w.mustGet(c, "app.test", "/missing.html")
		if resp.StatusCode != 404 {
			t.Fatalf("missing file: %d", resp.StatusCode)
		}
		count("site:app", 404)
		if r, err := http.Get(w.healthURL("/healthz")); err == nil {
			r.Body.Close()
		}
	}
	if want["worker:api"].Errors != 20 {
		t.Fatalf("backend answered %+v, want 20 errors", want["worker:api"])
	}
	total := int64(want["worker:api"].Requests + want["site:app"].Requests)
	deadline := time.Now().Add(5 * time.Second) // nginx flushes within 1 s
	for lines.Load() < total && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	f := counter.Figures(time.Now().Add(-time.Hour), time.Now())
	for name, cs := range want {
		if got := f.Targets[name].Counts; got != cs {
			t.Errorf("%s: counted %+v, clients got %+v", name, got, cs)
		}
	}
	if len(f.Targets) != 2 || f.Malformed != 0 || lines.Load() != total {
		t.Errorf("figures %+v from %d lines, want %d lines of 2 targets", f, lines.Load(), total)
	}
	if f.P99 <= 0 || f.P99 > time.Second {
		t.Errorf("p99 %s on loopback", f.P99)
	}
	last := raw.Load().(string)
	if strings.Contains(last, "secret") || strings.Contains(last, "token") || strings.Contains(last, "127.0.0.1|") {
		t.Errorf("a line carries user data: %q", last)
	}
	t.Logf("last line: %q; figures %+v", last, f.Total)
}

// lineSpy counts the datagrams that reach the counter.
type lineSpy struct {
	c    *traffic.Counter
	n    *atomic.Int64
	last *atomic.Value
}

func (s *lineSpy) AddLine(b []byte) {
	s.last.Store(string(b))
	s.c.AddLine(b)
	s.n.Add(1)
}
