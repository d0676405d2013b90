// Package traffic keeps a node's own figures of the requests nginx answered:
// per site and worker of the live release, per minute for the last Minutes
// minutes, how many requests, how many errors (5xx, from nginx or an
// upstream; 4xx are the client's) and a latency histogram for the p99.
//
// nginx writes one line per request in LogFormat (see package nginxconf)
// to a file that a Follower reads; a line carries no user data (no URI, no
// address, no header). Lines are bounded (MaxLine) and a
// malformed one is counted and dropped. Memory is bounded: Minutes buckets
// per target, targets only those of the spec (Targets), the rest ignored.
package traffic

import (
	"bytes"
	"strconv"
	"strings"
	"time"

	"github.com/drover-dev/drover/spec"
)

// LogFormat is the log_format of the per-request line, shared with the nginx
// config drover renders: when nginx answered, the status, the request time,
// the upstream response times (one per try, or -), the server block's first
// name and the upstream addresses (or the upstream group's name, or -).
const LogFormat = "$msec|$status|$request_time|$upstream_response_time|$server_name|$upstream_addr"

// MaxLine bounds one line; longer ones are dropped as malformed.
const MaxLine = 1024

// Entry is one request.
type Entry struct {
	Time    time.Time
	Status  int
	Latency time.Duration
	// Site is the first server name of the server block; Upstream the
	// upstream address, or the upstream group's name when none was tried.
	Site, Upstream string
}

// ParseLine reads one line in LogFormat.
func ParseLine(b []byte) (Entry, bool) {
	if len(b) > MaxLine {
		return Entry{}, false
	}
	b = bytes.TrimRight(b, "\n")
	f := strings.Split(string(b), "|")
	if len(f) != 6 {
		return Entry{}, false
	}
	t, ok := parseMsec(f[0])
	status, err := strconv.Atoi(f[1])
	if !ok || err != nil || status < 100 || status > 999 {
		return Entry{}, false
	}
	e := Entry{Time: t, Status: status, Site: f[4], Upstream: lastOf(f[5])}
	if e.Upstream == "-" {
		e.Upstream = ""
	}
	// A proxied request is judged by the upstream's time (all tries), a
	// static one by nginx's whole request time.
	if ut := f[3]; ut != "-" && ut != "" {
		var sum float64
		for _, p := range strings.Split(strings.ReplaceAll(ut, " : ", ", "), ",") {
			if v, err := strconv.ParseFloat(strings.TrimSpace(p), 64); err == nil && v >= 0 {
				sum += v
			}
		}
		e.Latency = secs(sum)
	} else if v, err := strconv.ParseFloat(f[2], 64); err == nil && v >= 0 {
		e.Latency = secs(v)
	} else {
		return Entry{}, false
	}
	return e, true
}

func secs(v float64) time.Duration {
	if v > 1e6 {
		v = 1e6
	}
	return time.Duration(v * float64(time.Second))
}

// lastOf is the last of nginx's list of tries: ", " between the servers of
// one upstream, " : " across internal redirects.
func lastOf(s string) string {
	s = strings.ReplaceAll(s, " : ", ", ")
	if i := strings.LastIndex(s, ", "); i >= 0 {
		s = s[i+2:]
	}
	return strings.TrimSpace(s)
}

// parseMsec reads nginx's $msec: seconds with a millisecond fraction.
func parseMsec(s string) (time.Time, bool) {
	sec, frac, _ := strings.Cut(s, ".")
	n, err := strconv.ParseInt(sec, 10, 64)
	if err != nil || len(frac) > 3 || n < 0 {
		return time.Time{}, false
	}
	ms := 0
	if frac != "" {
		if ms, err = strconv.Atoi((frac + "00")[:3]); err != nil {
			return time.Time{}, false
		}
	}
	return time.Unix(n, int64(ms)*int64(time.Millisecond)), true
}

// Targets names the site or worker of a request from what nginx logged: a
// site by its server names, a worker by its instances' addresses and its
// upstream group (drover_<name>).
type Targets struct {
	sites     map[string]string
	upstreams map[string]string
}

// TargetsOf maps the sites and workers of s.
func TargetsOf(s *spec.Spec) *Targets {
	t := &Targets{sites: map[string]string{}, upstreams: map[string]string{}}
	for _, site := range s.Sites {
		for _, n := range site.ServerNames {
			t.sites[n] = "site:" + site.Name
		}
	}
	for _, w := range s.Workers {
		t.upstreams["drover_"+w.Name] = "worker:" + w.Name
		// Both port ranges: with the overlap handover the live instances
		// may be on the second one.
		for _, p := range append(w.InstancePorts(), w.AltPorts()...) {
			t.upstreams["127.0.0.1:"+strconv.Itoa(p)] = "worker:" + w.Name
		}
	}
	return t
}

// Of returns "site:NAME", "worker:NAME", or "" for a request of nobody's
// (the webhook, a host drover does not serve).
func (t *Targets) Of(e Entry) string {
	if e.Upstream != "" {
		return t.upstreams[e.Upstream]
	}
	return t.sites[e.Site]
}
