package spec

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"
)

// HealthChecks are the node's checks beyond its sites and worker instances:
// what the seed platform's health endpoint "checked database status and a
// few other things" for. Each gates rollouts (a switched node must pass it
// before it re-joins the LB), the steady state (the guard takes a node that
// fails it out of the LB between rollouts), or both.
type HealthChecks struct {
	Checks []ExtraCheck `yaml:"checks" json:"checks,omitempty"`
}

// ExtraCheck is one check: exactly one of HTTP, TCP and Exec.
type ExtraCheck struct {
	Name string `yaml:"name" json:"name"`
	// HTTP is a URL (http or https) that must answer Status.
	HTTP   string `yaml:"http" json:"http,omitempty"`
	Status int    `yaml:"status" json:"status,omitempty"`
	// TCP is a host:port that must accept a connection (PostgreSQL, Redis).
	TCP string `yaml:"tcp" json:"tcp,omitempty"`
	// Exec is an argv whose program must exit 0; argv[0] is an absolute
	// path. It runs as nobody with an empty environment when the agent runs
	// as root: a check must not be a way to run code as root.
	Exec []string `yaml:"exec" json:"exec,omitempty"`
	// Timeout bounds one attempt (default 2s, at most 30s).
	Timeout Duration `yaml:"timeout" json:"timeout,omitempty"`
	// Gates is rollout, steady or both (default).
	Gates string `yaml:"gates" json:"gates,omitempty"`
}

// What a check gates.
const (
	GatesBoth    = "both"
	GatesRollout = "rollout"
	GatesSteady  = "steady"
)

// Gate reports whether the check applies to rollouts (rollout true) or to
// the steady state between them (rollout false).
func (c ExtraCheck) Gate(rollout bool) bool {
	switch c.Gates {
	case GatesRollout:
		return rollout
	case GatesSteady:
		return !rollout
	}
	return true
}

// Kind is "http", "tcp" or "exec".
func (c ExtraCheck) Kind() string {
	switch {
	case c.HTTP != "":
		return "http"
	case c.TCP != "":
		return "tcp"
	}
	return "exec"
}

func (s *Spec) applyCheckDefaults() {
	if s.Health == nil {
		return
	}
	for i := range s.Health.Checks {
		c := &s.Health.Checks[i]
		if c.HTTP != "" && c.Status == 0 {
			c.Status = 200
		}
		if c.Timeout == 0 {
			c.Timeout = Duration(DefaultHealthReqTimeout)
		}
		if c.Gates == "" {
			c.Gates = GatesBoth
		}
	}
}

// maxCheckTimeout bounds one attempt of an extra check: the guard runs every
// check every few seconds, and a rollout's health wait must not hang on one.
const maxCheckTimeout = 30 * time.Second

func (v *validator) extraChecks(h *HealthChecks) {
	if h == nil {
		return
	}
	if len(h.Checks) > 32 {
		v.fail("health.checks", "%d checks; at most 32", len(h.Checks))
	}
	names := map[string]string{}
	for i := range h.Checks {
		c := &h.Checks[i]
		f := fmt.Sprintf("health.checks[%d]", i)
		v.name(f+".name", c.Name)
		if prev, ok := names[c.Name]; ok && c.Name != "" {
			v.fail(f+".name", "check %q is already defined at %s", c.Name, prev)
		} else {
			names[c.Name] = f
		}
		kinds := 0
		for _, set := range []bool{c.HTTP != "", c.TCP != "", len(c.Exec) > 0} {
			if set {
				kinds++
			}
		}
		if kinds != 1 {
			v.fail(f, "needs exactly one of http (a URL), tcp (host:port) and exec (an argv)")
		}
		if c.HTTP != "" {
			u, err := url.Parse(c.HTTP)
			switch {
			case err != nil:
				v.fail(f+".http", "%q is not a URL: %v", c.HTTP, err)
			case u.Scheme != "http" && u.Scheme != "https":
				v.fail(f+".http", "%q is not an http or https URL", c.HTTP)
			case u.Host == "":
				v.fail(f+".http", "%q has no host", c.HTTP)
			case u.User != nil:
				v.fail(f+".http", "%q carries credentials; checks must not hold secrets", c.HTTP)
			}
			if c.Status < 100 || c.Status > 599 {
				v.fail(f+".status", "%d is not an HTTP status", c.Status)
			}
		} else if c.Status != 0 {
			v.fail(f+".status", "is only for http checks")
		}
		if c.TCP != "" {
			host, port, err := net.SplitHostPort(c.TCP)
			p, perr := strconv.Atoi(port)
			switch {
			case err != nil:
				v.fail(f+".tcp", "%q is not host:port: %v", c.TCP, err)
			case host == "":
				v.fail(f+".tcp", "%q has no host", c.TCP)
			case perr != nil || p < 1 || p > 65535:
				v.fail(f+".tcp", "%q: port %q is not between 1 and 65535", c.TCP, port)
			}
		}
		for j, a := range c.Exec {
			af := fmt.Sprintf("%s.exec[%d]", f, j)
			if j == 0 {
				v.check(af, checkAbsPath(a))
			} else {
				v.check(af, checkText(a, ""))
			}
		}
		if c.Timeout <= 0 || c.Timeout.D() > maxCheckTimeout {
			v.fail(f+".timeout", "%s is not between 0s and %s", c.Timeout, maxCheckTimeout)
		}
		if c.Gates != GatesBoth && c.Gates != GatesRollout && c.Gates != GatesSteady {
			v.fail(f+".gates", "%q is not rollout, steady or both", c.Gates)
		}
	}
}
