package spec

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Canary is rollout.canary: the first node to take a revision serves real
// traffic for Duration before the other nodes follow, and its own figures
// decide whether they do (see package reconcile's canary gate). Absent, there
// is no canary.
type Canary struct {
	// Duration is how long the canary serves the revision before the gate
	// decides; it is extended once by Duration when fewer than MinRequests
	// requests were seen.
	Duration Duration `yaml:"duration" json:"duration"`
	// MaxErrorRate is the share of 5xx answers (from nginx or an upstream)
	// above which the gate may fail, written "1%" or "0.5%".
	MaxErrorRate Percent `yaml:"maxErrorRate" json:"maxErrorRate"`
	// MinRequests is the traffic the canary must see for a decision on its
	// figures alone.
	MinRequests int `yaml:"minRequests" json:"minRequests"`
	// MaxLatencyP99 fails the gate when the canary's 99th percentile of
	// request time is above it; 0 checks no latency.
	MaxLatencyP99 Duration `yaml:"maxLatencyP99" json:"maxLatencyP99,omitempty"`
	// Promote is "auto" (a passed gate releases the other nodes) or
	// "manual" (they wait for drover promote).
	Promote string `yaml:"promote" json:"promote"`
}

// Defaults of rollout.canary, for the fields the file leaves out.
const (
	DefaultCanaryDuration     = 5 * time.Minute
	DefaultCanaryMaxErrorRate = Percent(0.01)
	DefaultCanaryMinRequests  = 200
	// MinCanaryDuration is the shortest canary: shorter ones cannot see
	// enough traffic to compare, and figures are kept by the minute.
	MinCanaryDuration = 10 * time.Second
	// MaxCanaryDuration bounds how long the cluster may wait on one node.
	MaxCanaryDuration = 24 * time.Hour
)

// Percent is a fraction written as a percentage in YAML ("1%", "0.5%");
// its value is the fraction (0.01 for "1%").
type Percent float64

// String writes p as a percentage.
func (p Percent) String() string {
	return strconv.FormatFloat(float64(p)*100, 'f', -1, 64) + "%"
}

// MarshalText writes p as a percentage.
func (p Percent) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// parsePercent reads "1%", "0.5%"; the % is required so that 1 is never
// read as 100% or 1%.
func parsePercent(s string) (Percent, error) {
	num, ok := strings.CutSuffix(strings.TrimSpace(s), "%")
	if !ok {
		return 0, fmt.Errorf("%q is not a percentage (write e.g. 1%% or 0.5%%)", s)
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || f != f { // NaN
		return 0, fmt.Errorf("%q is not a percentage (write e.g. 1%% or 0.5%%)", s)
	}
	return Percent(f / 100), nil
}

func (s *Spec) applyCanaryDefaults(pos map[string]Pos) {
	c := s.Rollout.Canary
	if c == nil {
		return
	}
	if _, set := pos["rollout.canary.duration"]; !set {
		c.Duration = Duration(DefaultCanaryDuration)
	}
	if _, set := pos["rollout.canary.maxErrorRate"]; !set {
		c.MaxErrorRate = DefaultCanaryMaxErrorRate
	}
	if _, set := pos["rollout.canary.minRequests"]; !set {
		c.MinRequests = DefaultCanaryMinRequests
	}
	if c.Promote == "" {
		c.Promote = "auto"
	}
}

func (v *validator) canary(c *Canary) {
	if c == nil {
		return
	}
	if d := c.Duration.D(); d < MinCanaryDuration || d > MaxCanaryDuration {
		v.fail("rollout.canary.duration", "%s is not between %s and %s", d, MinCanaryDuration, MaxCanaryDuration)
	}
	if c.MaxErrorRate <= 0 || c.MaxErrorRate >= 1 {
		v.fail("rollout.canary.maxErrorRate", "%s is not above 0%% and below 100%%", c.MaxErrorRate)
	}
	if c.MinRequests < 0 || c.MinRequests > 1_000_000_000 {
		v.fail("rollout.canary.minRequests", "%d is not between 0 and 1000000000", c.MinRequests)
	}
	if d := c.MaxLatencyP99.D(); d != 0 && (d < time.Millisecond || d > 10*time.Minute) {
		v.fail("rollout.canary.maxLatencyP99", "%s is not between 1ms and 10m (or absent for no latency check)", d)
	}
	if c.Promote != "auto" && c.Promote != "manual" {
		v.fail("rollout.canary.promote", "%q is not auto or manual", c.Promote)
	}
}
