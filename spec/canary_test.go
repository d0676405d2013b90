package spec

import (
	"strings"
	"testing"
	"time"
)

func TestCanaryOffWhenAbsent(t *testing.T) {
	s, err := Parse("drover.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if s.Rollout.Canary != nil {
		t.Fatalf("canary %+v without rollout.canary", s.Rollout.Canary)
	}
}

func TestCanaryDefaultsAndValues(t *testing.T) {
	s, err := Parse("drover.yaml", []byte(strings.Replace(base, "version: 1\n", "version: 1\nrollout:\n  canary: {}\n", 1)))
	if err != nil {
		t.Fatal(err)
	}
	c := s.Rollout.Canary
	if c == nil || c.Duration.D() != DefaultCanaryDuration || c.MaxErrorRate != DefaultCanaryMaxErrorRate ||
		c.MinRequests != DefaultCanaryMinRequests || c.MaxLatencyP99 != 0 || c.Promote != "auto" {
		t.Fatalf("defaults %+v", c)
	}
	s, err = Parse("drover.yaml", []byte(strings.Replace(base, "version: 1\n",
		"version: 1\nrollout:\n  canary: {duration: 2m, maxErrorRate: 0.5%, minRequests: 0, maxLatencyP99: 1500ms, promote: manual}\n", 1)))
	if err != nil {
		t.Fatal(err)
	}
	c = s.Rollout.Canary
	if c.Duration.D() != 2*time.Minute || c.MaxErrorRate != 0.005 || c.MinRequests != 0 ||
		c.MaxLatencyP99.D() != 1500*time.Millisecond || c.Promote != "manual" {
		t.Fatalf("values %+v", c)
	}
	if got := c.MaxErrorRate.String(); got != "0.5%" {
		t.Fatalf("0.5%% prints as %q", got)
	}
}

func TestBadCanary(t *testing.T) {
	cases := []struct{ canary, want string }{
		{"{duration: 1s}", "drover.yaml:3:22: rollout.canary.duration: 1s is not between 10s and 24h0m0s"},
		{"{duration: 48h}", "rollout.canary.duration: 48h0m0s is not between"},
		{"{maxErrorRate: 1}", `drover.yaml:3:26: rollout.canary.maxErrorRate: "1" is not a percentage`},
		{"{maxErrorRate: 0%}", "rollout.canary.maxErrorRate: 0% is not above 0% and below 100%"},
		{"{maxErrorRate: 100%}", "rollout.canary.maxErrorRate: 100% is not above 0%"},
		{"{maxErrorRate: -1%}", "rollout.canary.maxErrorRate: -1% is not above"},
		{"{maxErrorRate: abc%}", `"abc%" is not a percentage`},
		{"{maxErrorRate: [1]}", "rollout.canary.maxErrorRate: must be a percentage such as 1%, not a list"},
		{"{minRequests: -1}", "rollout.canary.minRequests: -1 is not between"},
		{"{maxLatencyP99: 1us}", "rollout.canary.maxLatencyP99: 1µs is not between 1ms and 10m"},
		{"{promote: yes}", `drover.yaml:3:21: rollout.canary.promote: "yes" is not auto or manual`},
		{"{promot: auto}", `rollout.canary.promot: unknown field (did you mean "promote"?)`},
	}
	for _, c := range cases {
		t.Run(c.canary, func(t *testing.T) {
			y := strings.Replace(base, "version: 1\n", "version: 1\nrollout:\n  canary: "+c.canary+"\n", 1)
			_, err := Parse("drover.yaml", []byte(y))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
		})
	}
}
