//go:build e2e

package main

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/drover-dev/drover/cluster"
	"github.com/drover-dev/drover/internal/testsvc"
	"github.com/drover-dev/drover/reconcile"
)

// scrape GETs /metrics and parses it with Prometheus's own text parser.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// sample returns the metric of fam whose labels include want.
func sample(t *testing.T, fams map[string]*dto.MetricFamily, fam string, want map[string]string) *dto.Metric {
	t.Helper()
	f, ok := fams[fam]
	if !ok {
		t.Fatalf("no metric family %s", fam)
	}
next:
	for _, m := range f.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		return m
	}
	t.Fatalf("%s has no sample with labels %v", fam, want)
	return nil
}

// TestAgentMetricsMatchTheHistory: an agent with metrics.listen rolls out
// A and B, then C, which fails its checks and is rolled back and halted.
// /metrics, parsed by Prometheus's text parser, says what the history says:
// two rollouts live, one rolled back, one halt, three drained windows of the
// same length, B live.
func TestAgentMetricsMatchTheHistory(t *testing.T) {
	t.Parallel() // the agent mostly waits on its LB's checks: tests share the CPUs
	n := newTestNode(t)
	addr := fmt.Sprintf("127.0.0.1:%d", testsvc.FreePort(t))
	n.configure("test", "./repo", "metrics: {listen: "+addr+"}\n")
	a := n.commit("blog A", "api A")
	n.startAgent()
	n.waitLive(a)
	b := n.commit("blog B", "api B")
	n.waitLive(b)
	c := n.commit("blog C", "crash C")
	n.waitFor("C halted", func(st reconcile.Status) bool {
		return strings.Contains(st.Error, "revision "+c[:12]+" is halted")
	})

	var revs []cluster.Revision
	if err := json.Unmarshal([]byte(runCLI(t, "history", "--config", n.config, "-o", "json")), &revs); err != nil {
		t.Fatal(err)
	}
	// With the default handover (auto: the overlap), C's crashing
	// instances are caught before the drain: refused, with no drained
	// window; with restart, C is rolled back from the drained window.
	var live, rolledBack, refused, halted, windows int
	var drained time.Duration
	for _, rv := range revs {
		if rv.Halt != nil {
			halted++
		}
		for _, run := range rv.Nodes {
			switch {
			case !run.Live.IsZero():
				live++
			case run.RolledBack:
				rolledBack++
			case !run.Failed.IsZero() && run.Drained == 0:
				refused++
			}
			if run.Drained > 0 {
				windows++
			}
			drained += run.Drained
		}
	}
	if live != 2 || rolledBack+refused != 1 || halted != 1 {
		t.Fatalf("history: %d live, %d rolled back, %d refused, %d halted; want 2, 1 rolled back or refused, 1: %+v", live, rolledBack, refused, halted, revs)
	}

	fams := scrape(t, addr)
	node := map[string]string{"node": "test"}
	for outcome, want := range map[string]int{"live": live, "rolled_back": rolledBack, "refused": refused, "failed": 0, "lock_lost": 0} {
		got := sample(t, fams, "drover_rollouts_total", map[string]string{"node": "test", "outcome": outcome}).GetCounter().GetValue()
		if int(got) != want {
			t.Errorf("drover_rollouts_total{outcome=%q} = %v, history says %d", outcome, got, want)
		}
	}
	if got := sample(t, fams, "drover_halts_total", node).GetCounter().GetValue(); int(got) != halted {
		t.Errorf("drover_halts_total = %v, history says %d", got, halted)
	}
	h := sample(t, fams, "drover_drained_seconds", node).GetHistogram()
	if int(h.GetSampleCount()) != windows {
		t.Errorf("drover_drained_seconds has %d windows, history %d", h.GetSampleCount(), windows)
	}
	// Both clocks measure the same windows, from the same status changes.
	if diff := math.Abs(h.GetSampleSum() - drained.Seconds()); diff > 0.5 {
		t.Errorf("drained: metrics %.3fs, history %.3fs", h.GetSampleSum(), drained.Seconds())
	}
	if got := sample(t, fams, "drover_live_revision_info", map[string]string{"node": "test", "revision": b}).GetGauge().GetValue(); got != 1 {
		t.Errorf("drover_live_revision_info{revision=B} = %v", got)
	}
	if len(fams["drover_live_revision_info"].Metric) != 1 {
		t.Errorf("drover_live_revision_info has %d revisions, want only the live one", len(fams["drover_live_revision_info"].Metric))
	}
	if got := sample(t, fams, "drover_step", map[string]string{"node": "test", "step": "idle"}).GetGauge().GetValue(); got != 1 {
		t.Errorf("drover_step{step=idle} = %v", got)
	}
	if rc := sample(t, fams, "drover_rollout_duration_seconds", node).GetHistogram(); rc.GetSampleCount() != uint64(live) {
		t.Errorf("drover_rollout_duration_seconds has %d rollouts, want %d", rc.GetSampleCount(), live)
	}
	polled := sample(t, fams, "drover_last_successful_poll_timestamp_seconds", node).GetGauge().GetValue()
	if age := time.Since(time.Unix(int64(polled), 0)); age < 0 || age > 10*time.Second {
		t.Errorf("last successful poll %s ago, want within the 1s poll interval", age)
	}
	if got := sample(t, fams, "drover_guard_health", map[string]string{"node": "test", "health": "healthy"}).GetGauge().GetValue(); got != 1 {
		t.Errorf("drover_guard_health{health=healthy} = %v", got)
	}
}
