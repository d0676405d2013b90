package reconcile

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/spec"
	"github.com/drover-dev/drover/traffic"
)

func gateCfg() spec.Canary {
	return spec.Canary{Duration: spec.Duration(5 * time.Minute), MaxErrorRate: 0.01, MinRequests: 200,
		MaxLatencyP99: spec.Duration(2 * time.Second), Promote: "auto"}
}

func counts(n, e uint64) traffic.Counts { return traffic.Counts{Requests: n, Errors: e} }

func TestJudge(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 1, 0, 0, 0, time.UTC)
	during, end, endExt := t0.Add(2*time.Minute), t0.Add(5*time.Minute), t0.Add(10*time.Minute)
	cases := []struct {
		name     string
		now      time.Time
		extended bool
		seen     Seen
		want     Decision
		reason   string
	}{
		{"good, still observing", during, false, Seen{Canary: counts(1000, 2), Baseline: counts(2000, 4)}, DecideWait, "1000 requests, 0.20% errors"},
		{"5% errors vs 0.2% fails early", during, false, Seen{Canary: counts(1000, 50), Baseline: counts(2000, 4)}, DecideFail,
			"error rate 5.0% above maxErrorRate 1% and worse than the old revision's 0.20% (z = "},
		{"bad but under minRequests: no early failure", during, false, Seen{Canary: counts(100, 50)}, DecideWait, "100 requests"},
		{"good at the end passes", end, false, Seen{Canary: counts(1000, 2), P99: 300 * time.Millisecond, Baseline: counts(2000, 4)}, DecidePass,
			"within limits (1000 requests, 0.20% errors, p99 300ms; old revision 2000 requests, 0.20% errors)"},
		{"above maxErrorRate but the old revision fails as often", end, false, Seen{Canary: counts(1000, 30), Baseline: counts(2000, 60)}, DecidePass, "within limits"},
		{"above maxErrorRate, slightly worse, not significant", end, false, Seen{Canary: counts(300, 6), Baseline: counts(300, 4)}, DecidePass, "within limits"},
		{"no baseline: maxErrorRate alone", end, false, Seen{Canary: counts(1000, 20)}, DecideFail, "no old-revision baseline"},
		{"tiny baseline is no baseline", end, false, Seen{Canary: counts(1000, 50), Baseline: counts(3, 0)}, DecideFail, "no old-revision baseline"},
		{"under maxErrorRate, even if worse", end, false, Seen{Canary: counts(10000, 90), Baseline: counts(10000, 10)}, DecidePass, "within limits"},
		{"p99 too slow", end, false, Seen{Canary: counts(1000, 0), P99: 3 * time.Second, Baseline: counts(2000, 0)}, DecideFail, "p99 latency 3s above maxLatencyP99 2s"},
		{"p99 too slow fails early", during, false, Seen{Canary: counts(500, 0), P99: 3 * time.Second}, DecideFail, "p99 latency"},
		{"too few at the end: extend", end, false, Seen{Canary: counts(150, 0)}, DecideExtend, "only 150 requests of the 200 needed after 5m0s: extended once by 5m0s"},
		{"extended, still observing", end, true, Seen{Canary: counts(150, 0)}, DecideWait, "150 requests"},
		{"extended, still few: decide and say so", endExt, true, Seen{Canary: counts(150, 0)}, DecidePass, "decided on 150 requests, fewer than the 200 asked, after the extension"},
		{"extended, few and bad", endExt, true, Seen{Canary: counts(40, 10)}, DecideFail, "error rate 25.0% above maxErrorRate 1%"},
		{"no traffic at all after the extension passes, saying so", endExt, true, Seen{}, DecidePass, "decided on 0 requests"},
		// The lab's case: the API fails 1 in 20 of /api/version, diluted
		// to 0.8% by the static sites; the worker's own rate fails it.
		{"one worker failing under a busy site fails early", during, false, Seen{
			Canary: counts(16000, 125), Baseline: counts(80000, 0),
			Targets:         map[string]traffic.Counts{"site:blog": counts(11000, 0), "worker:feedback-api": counts(5000, 125)},
			BaselineTargets: map[string]traffic.Counts{"site:blog": counts(55000, 0), "worker:feedback-api": counts(25000, 0)},
		}, DecideFail, "worker feedback-api: error rate 2.5% above maxErrorRate 1% and worse than the old revision's 0.00%"},
		{"one worker failing as it did before passes", end, false, Seen{
			Canary: counts(16000, 125), Baseline: counts(80000, 600),
			Targets:         map[string]traffic.Counts{"site:blog": counts(11000, 0), "worker:feedback-api": counts(5000, 125)},
			BaselineTargets: map[string]traffic.Counts{"site:blog": counts(55000, 0), "worker:feedback-api": counts(25000, 600)},
		}, DecidePass, "within limits"},
		{"a target with too few requests is not judged alone", end, false, Seen{
			Canary: counts(1000, 2), Baseline: counts(2000, 4),
			Targets: map[string]traffic.Counts{"site:blog": counts(990, 0), "worker:admin": counts(10, 2)},
		}, DecidePass, "within limits"},
		{"a failing worker without its own baseline: maxErrorRate alone", end, false, Seen{
			Canary: counts(1000, 8), Baseline: counts(2000, 0),
			Targets: map[string]traffic.Counts{"site:blog": counts(800, 0), "worker:api": counts(200, 8)},
		}, DecideFail, "worker api: error rate 4.0% above maxErrorRate 1% (no old-revision baseline"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := Judge(gateCfg(), t0, c.now, c.extended, c.seen)
			if v.Decision != c.want || !strings.Contains(v.Reason, c.reason) {
				t.Fatalf("Judge = %s %q (z %.2f), want %s with %q", v.Decision, v.Reason, v.Z, c.want, c.reason)
			}
		})
	}
}

func TestJudgeLeft(t *testing.T) {
	t0 := time.Unix(0, 0)
	if v := Judge(gateCfg(), t0, t0.Add(170*time.Second), false, Seen{}); v.Left != 130*time.Second {
		t.Fatalf("left %s, want 2m10s", v.Left)
	}
	if v := Judge(gateCfg(), t0, t0.Add(6*time.Minute), true, Seen{}); v.Left != 4*time.Minute {
		t.Fatalf("extended: left %s, want 4m", v.Left)
	}
}

func TestZScore(t *testing.T) {
	// 5% of 1000 against 0.2% of 2000: far beyond 99%.
	if z := zScore(counts(1000, 50), counts(2000, 4)); z < 8 || z > 10 {
		t.Fatalf("z = %.2f", z)
	}
	// Equal rates: 0.
	if z := zScore(counts(1000, 10), counts(2000, 20)); math.Abs(z) > 1e-9 {
		t.Fatalf("equal rates: z = %v", z)
	}
	// Errors where neither side varies (all failed vs none): +Inf, never NaN.
	if z := zScore(counts(10, 10), counts(0+10, 0)); !(z > ZCritical) {
		t.Fatalf("z = %v", z)
	}
	if z := zScore(counts(10, 0), counts(10, 0)); z != 0 {
		t.Fatalf("no errors anywhere: z = %v", z)
	}
}

// TestJudgeHalts5PercentWithinMinRequests is the case: a revision
// whose API answers 500 one time in twenty, the old one 0.1%, is failed as
// soon as minRequests are seen, whatever the order of the requests.
func TestJudgeHalts5PercentWithinMinRequests(t *testing.T) {
	t0 := time.Unix(0, 0)
	seen := Seen{Canary: counts(200, 10), Baseline: counts(400, 0)}
	if v := Judge(gateCfg(), t0, t0.Add(30*time.Second), false, seen); v.Decision != DecideFail {
		t.Fatalf("%s %q", v.Decision, v.Reason)
	}
}
