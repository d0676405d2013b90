package reconcile

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/drover-dev/drover/spec"
	"github.com/drover-dev/drover/traffic"
)

// The canary gate's rule, kept pure (no clock, no I/O) so that every case is
// a table row: Judge is given the gate's settings, when the canary started
// serving, the time now and what was seen, and says what to do.
//
// The error rule is two-sided in evidence: the canary fails on errors only
// when its error rate is above maxErrorRate AND clearly worse than the nodes
// still on the old revision over the same minutes, by a one-sided
// two-proportion z-test at 99% confidence (z > ZCritical). A cluster whose old
// revision fails as often (a dependency down, a bad client) does not halt the
// new one for it. Without a usable baseline (no old-revision node, or fewer
// than MinBaseline requests on them, too few for the test to mean anything)
// maxErrorRate decides alone. The latency rule is absolute: p99 above
// maxLatencyP99 fails.
//
// Timing: before the end of duration the gate fails early once the canary
// has seen minRequests (at least MinEarly) and a rule fails, so a bad
// revision serves as few bad answers as the evidence allows; it never passes
// early. At the end of duration with fewer than minRequests it extends once
// by duration; at the end of the extension it decides on what was seen and
// says so.

// ZCritical is the one-sided 99% point of the standard normal.
const ZCritical = 2.326

// MinBaseline is the fewest old-revision requests the comparison uses.
const MinBaseline = 200

// MinEarly is the fewest canary requests an early failure needs.
const MinEarly = 50

// Decision is what the gate says.
type Decision string

const (
	// DecideWait: keep serving, look again later.
	DecideWait Decision = "observing"
	// DecideExtend: too few requests at the end of duration; observe once
	// more for duration.
	DecideExtend Decision = "extend"
	// DecidePass: the canary is good.
	DecidePass Decision = "passed"
	// DecideFail: the revision is halted and the canary rolls back.
	DecideFail Decision = "failed"
)

// Seen is what the gate judges: the canary's own figures since it started
// serving, and the old-revision nodes' over the same minutes.
type Seen struct {
	Canary   traffic.Counts
	P99      time.Duration
	Baseline traffic.Counts
	// Targets are the canary's counts by site and worker ("site:blog",
	// "worker:api"), BaselineTargets the old revision's: an error rate is
	// judged for each as for the total, so that a worker failing one
	// request in twenty is not hidden by a busy static site.
	Targets, BaselineTargets map[string]traffic.Counts
}

// Verdict is the gate's answer, with the figures it used.
type Verdict struct {
	Decision Decision
	// Reason says why, in words for drover status and the notification.
	Reason string
	// Z is the two-proportion statistic (0 without a baseline).
	Z float64
	// Left is the time to the end of the (extended) duration.
	Left time.Duration
}

// Judge applies the rule at now to a canary serving since start; extended
// says the one extension was already taken.
func Judge(c spec.Canary, start, now time.Time, extended bool, s Seen) Verdict {
	end := start.Add(c.Duration.D())
	if extended {
		end = end.Add(c.Duration.D())
	}
	v := Verdict{Left: max(end.Sub(now), 0)}
	failed, why, z := failing(c, s)
	v.Z = z
	figures := describe(s)
	if now.Before(end) {
		if failed && s.Canary.Requests >= uint64(max(c.MinRequests, MinEarly)) {
			v.Decision, v.Reason = DecideFail, why+" ("+figures+")"
			return v
		}
		v.Decision, v.Reason = DecideWait, figures
		return v
	}
	few := s.Canary.Requests < uint64(c.MinRequests)
	if few && !extended {
		v.Decision = DecideExtend
		v.Left = c.Duration.D()
		v.Reason = fmt.Sprintf("only %d requests of the %d needed after %s: extended once by %s (%s)",
			s.Canary.Requests, c.MinRequests, c.Duration.D(), c.Duration.D(), figures)
		return v
	}
	note := ""
	if few {
		note = fmt.Sprintf("; decided on %d requests, fewer than the %d asked, after the extension", s.Canary.Requests, c.MinRequests)
	}
	if failed {
		v.Decision, v.Reason = DecideFail, why+" ("+figures+note+")"
	} else {
		v.Decision, v.Reason = DecidePass, "within limits ("+figures+note+")"
	}
	return v
}

// failing applies the error rule to the total and to each target with
// MinEarly requests or more, then the latency rule.
func failing(c spec.Canary, s Seen) (bool, string, float64) {
	failed, why, z := errorsFail(c, s.Canary, s.Baseline)
	if failed {
		return true, why, z
	}
	for _, name := range slices.Sorted(maps.Keys(s.Targets)) {
		t := s.Targets[name]
		if t.Requests < MinEarly {
			continue
		}
		if bad, why, _ := errorsFail(c, t, s.BaselineTargets[name]); bad {
			return true, strings.Replace(name, ":", " ", 1) + ": " + why, z
		}
	}
	if c.MaxLatencyP99 > 0 && s.P99 > c.MaxLatencyP99.D() {
		return true, fmt.Sprintf("p99 latency %s above maxLatencyP99 %s", s.P99, c.MaxLatencyP99.D()), z
	}
	return false, "", z
}

// errorsFail applies the error rule to the canary's counts against the old
// revision's.
func errorsFail(c spec.Canary, canary, base traffic.Counts) (bool, string, float64) {
	rate := canary.ErrorRate()
	z := 0.0
	if base.Requests >= MinBaseline && canary.Requests > 0 {
		z = zScore(canary, base)
	}
	if rate > float64(c.MaxErrorRate) {
		switch {
		case base.Requests < MinBaseline:
			return true, fmt.Sprintf("error rate %s above maxErrorRate %s (no old-revision baseline of %d requests to compare with)",
				pct(rate), c.MaxErrorRate, MinBaseline), z
		case z > ZCritical:
			return true, fmt.Sprintf("error rate %s above maxErrorRate %s and worse than the old revision's %s (z = %.2f > %.3f)",
				pct(rate), c.MaxErrorRate, pct(base.ErrorRate()), z, ZCritical), z
		}
	}
	return false, "", z
}

// zScore is the two-proportion z statistic of a's error rate over b's,
// with the pooled rate; +Inf when a has errors and neither varies.
func zScore(a, b traffic.Counts) float64 {
	p1, p2 := a.ErrorRate(), b.ErrorRate()
	pool := float64(a.Errors+b.Errors) / float64(a.Requests+b.Requests)
	se := math.Sqrt(pool * (1 - pool) * (1/float64(a.Requests) + 1/float64(b.Requests)))
	if se == 0 {
		if p1 > p2 {
			return math.Inf(1)
		}
		return 0
	}
	return (p1 - p2) / se
}

func describe(s Seen) string {
	out := fmt.Sprintf("%d requests, %s errors", s.Canary.Requests, pct(s.Canary.ErrorRate()))
	if s.P99 > 0 {
		out += ", p99 " + s.P99.String()
	}
	if s.Baseline.Requests > 0 {
		out += fmt.Sprintf("; old revision %d requests, %s errors", s.Baseline.Requests, pct(s.Baseline.ErrorRate()))
	}
	return out
}
