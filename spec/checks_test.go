package spec

import (
	"strings"
	"testing"
	"time"
)

func TestHealthChecks(t *testing.T) {
	good := base + `health:
  checks:
    - {name: database, tcp: "10.0.0.5:5432"}
    - {name: api-deep, http: "http://127.0.0.1:3000/healthz/db", gates: steady, timeout: 1s}
    - {name: disk, exec: [/usr/bin/test, -w, /var/lib], gates: rollout}
`
	s, err := Parse("drover.yaml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	c := s.Health.Checks
	if len(c) != 3 || c[0].Kind() != "tcp" || c[0].Gates != GatesBoth || c[0].Timeout.D() != DefaultHealthReqTimeout ||
		c[1].Kind() != "http" || c[1].Status != 200 || c[1].Timeout.D() != time.Second || c[2].Kind() != "exec" {
		t.Fatalf("decoded as %+v", c)
	}
	if !c[0].Gate(true) || !c[0].Gate(false) || c[1].Gate(true) || !c[1].Gate(false) || !c[2].Gate(true) || c[2].Gate(false) {
		t.Fatalf("gates: %+v", c)
	}

	bad := base + `health:
  checks:
    - {name: two, tcp: "a:1", http: "http://a/"}
    - {name: none}
    - {name: port, tcp: "db:99999"}
    - {name: scheme, http: "ftp://a/"}
    - {name: creds, http: "http://u:p@a/"}
    - {name: rel, exec: [test, -w]}
    - {name: slow, tcp: "a:1", timeout: 1m}
    - {name: gate, tcp: "a:1", gates: sometimes}
    - {name: gate, tcp: "a:2"}
    - {name: st, tcp: "a:1", status: 200}
`
	_, err = Parse("drover.yaml", []byte(bad))
	for _, w := range []string{
		"health.checks[0]: needs exactly one of http",
		"health.checks[1]: needs exactly one of http",
		`health.checks[2].tcp: "db:99999": port "99999" is not between 1 and 65535`,
		`health.checks[3].http: "ftp://a/" is not an http or https URL`,
		"health.checks[4].http", "carries credentials",
		`health.checks[5].exec[0]: "test" must be an absolute path`,
		"health.checks[6].timeout: 1m0s is not between 0s and 30s",
		`health.checks[7].gates: "sometimes" is not rollout, steady or both`,
		`health.checks[8].name: check "gate" is already defined at health.checks[7]`,
		"health.checks[9].status: is only for http checks",
	} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in:\n%v", w, err)
		}
	}
	if err != nil && !strings.Contains(err.Error(), "drover.yaml:") {
		t.Errorf("errors carry no position: %v", err)
	}
}

func TestNodeGuard(t *testing.T) {
	n, err := ParseNode("node.yaml", []byte("repo: {url: /srv/repo}\n"), "/")
	if err != nil {
		t.Fatal(err)
	}
	if g := n.Guard; g.Disabled || g.Interval.D() != 2*time.Second || g.UnhealthyAfter != 3 || g.HealthyAfter != 3 || g.RestartAfter.D() != 30*time.Second {
		t.Fatalf("guard defaults: %+v", g)
	}
	_, err = ParseNode("node.yaml", []byte("repo: {url: /srv/repo}\nguard: {interval: 10ms, unhealthyAfter: 0, healthyAfter: 1000, restartAfter: 1ms}\n"), "/")
	for _, w := range []string{"node.yaml:2:", "guard.interval: 10ms is not between 100ms and 10m", "guard.unhealthyAfter: 0 is not between 1 and 100",
		"guard.healthyAfter: 1000", "guard.restartAfter: 1ms is shorter than guard.interval"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in:\n%v", w, err)
		}
	}
	n, err = ParseNode("node.yaml", []byte("repo: {url: /srv/repo}\nguard: {disabled: true}\n"), "/")
	if err != nil || !n.Guard.Disabled {
		t.Fatalf("disabled guard: %+v, %v", n, err)
	}
}
