package nginxconf

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"path"
	"regexp"
	"strconv"
	"strings"
	"unicode"

	"github.com/drover-dev/drover/spec"
)

// Params is everything a rendered nginx.conf depends on: the spec of the live
// revision and this node's settings.
type Params struct {
	Spec *spec.Spec
	// LiveDir is the live release (e.g. /var/lib/drover/current); a site's
	// root is LiveDir/sites/<name>.
	LiveDir string
	// HealthDir holds the load balancer health files: `up` (written by the
	// agent while the node is healthy) and `drain` (created by the drain
	// driver). nginx's workers must be able to read it.
	HealthDir string
	// Listen is the address to bind; "" binds every IPv4 address.
	Listen string
	// HTTPSPort and HealthPort are the effective ports; 0 takes the spec's.
	HTTPSPort, HealthPort int
	// TLSCert and TLSKey are certificate and key files. Both empty serves the
	// sites over plain HTTP on HTTPSPort, for development only.
	TLSCert, TLSKey string
	// User runs nginx's workers; "" writes no `user` directive.
	User string
	// PIDFile, ErrorLog and AccessLog are nginx's files; "" keeps nginx's
	// compiled-in pid and error log, and turns the access log off.
	PIDFile, ErrorLog, AccessLog string
	// TempDir, when set, holds nginx's temp paths (needed with a prefix
	// directory that nginx's compiled-in paths do not point into).
	TempDir string
	// Includes are the operator's extra http-level include globs.
	Includes []string
	// StatusListen is a loopback host:port serving stub_status at
	// /nginx_status, to count in-flight requests during a drain; "" = none.
	// HealthAccessLog is where the health location logs each LB check in
	// healthlog.Format, so the drain drivers can see the LB's checks
	// reach this node; "" logs nothing.
	HealthAccessLog string
	StatusListen    string
	// TrafficLog is the file of a line per request of the sites and routes
	// that the agent follows (package traffic); "" = none.
	TrafficLog string
	// Webhook routes the push webhook to the agent; nil = none.
	Webhook *Webhook
	// Revision, when set, is added with Node to every answer of every site
	// and route as X-Drover-Revision and X-Drover-Node (node.yaml
	// nginx.revisionHeader). It names the revision this config was
	// rendered for, so the config changes (and nginx reloads) with it.
	Revision, Node string
}

// Webhook is the push webhook's public address and the agent's listener.
type Webhook struct {
	// ServerName and Path are where the forge sends its pushes.
	ServerName, Path string
	// Upstream is the host:port of the agent's webhook listener.
	Upstream string
}

// StatusPath is where StatusListen serves nginx's stub_status.
const StatusPath = "/nginx_status"

// WebhookMaxBody bounds a webhook request's body: a push event with its
// (at most 20) commits is a few tens of kilobytes.
const WebhookMaxBody = "1m"

// Render returns the complete nginx.conf for p. The error lists every value
// that cannot be written safely.
func Render(p Params) ([]byte, error) {
	if p.Spec == nil {
		return nil, errors.New("render nginx config: no spec")
	}
	r := &renderer{p: p}
	r.resolve()
	r.write(r.model())
	if len(r.errs) > 0 {
		return nil, fmt.Errorf("render nginx config: %w", errors.Join(r.errs...))
	}
	return r.buf.Bytes(), nil
}

var (
	// Conservative, like the spec's rules: anything outside them is refused.
	nameRE       = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
	headerNameRE = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)
	urlPathRE    = regexp.MustCompile(`^/[A-Za-z0-9/._~%+-]*$`)
	hostLabelRE  = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	userRE       = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
	bodySizeRE   = regexp.MustCompile(`^[0-9]{1,9}[kKmMgG]?$`)
)

// unsafeChars end or extend a directive even inside double quotes: nginx
// expands $variables there and a quote or backslash ends or escapes it.
const unsafeChars = "\"\\$`"

func checkText(s string) string {
	for _, c := range s {
		if unicode.IsControl(c) {
			return fmt.Sprintf("%q contains a control character", s)
		}
		if strings.ContainsRune(unsafeChars, c) {
			return fmt.Sprintf("%q contains %q", s, c)
		}
	}
	return ""
}

func checkServerName(s string) string {
	labels := strings.Split(s, ".")
	if s == "" || len(s) > 253 {
		return fmt.Sprintf("%q is not a host name", s)
	}
	for i, l := range labels {
		if i == 0 && l == "*" && len(labels) > 2 {
			continue
		}
		if !hostLabelRE.MatchString(l) {
			return fmt.Sprintf("%q is not a lowercase host name or a wildcard such as *.example.com", s)
		}
	}
	return ""
}

// checkHostPort accepts an IP address or host name with a numeric port.
func checkHostPort(s string) string {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Sprintf("%q is not host:port", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Sprintf("%q has no port between 1 and 65535", s)
	}
	if net.ParseIP(host) == nil && checkServerName(host) != "" {
		return fmt.Sprintf("%q is not an IP address or host name with a port", s)
	}
	return ""
}

// renderer writes the config and collects every invalid value on the way.
type renderer struct {
	p     Params
	buf   bytes.Buffer
	depth int
	errs  []error
}

func (r *renderer) fail(field, msg string) {
	err := fmt.Errorf("%s: %s", field, msg)
	for _, e := range r.errs {
		if e.Error() == err.Error() {
			return // the same path checked for every site
		}
	}
	r.errs = append(r.errs, err)
}

func (r *renderer) check(field, msg string) bool {
	if msg != "" {
		r.fail(field, msg)
		return false
	}
	return true
}

// q returns v in double quotes, refusing what could escape them.
func (r *renderer) q(field, v string) string {
	r.check(field, checkText(v))
	return quote(v)
}

// checkAbs checks that v is a clean absolute path, safe to quote, and
// returns it.
func (r *renderer) checkAbs(field, v string) string {
	if !path.IsAbs(v) || path.Clean(v) != v {
		r.fail(field, fmt.Sprintf("%q is not a clean absolute path", v))
	}
	r.check(field, checkText(v))
	return v
}

// absPath quotes a clean absolute path.
func (r *renderer) absPath(field, v string) string {
	return quote(r.checkAbs(field, v))
}

// quote quotes a value made of checked parts.
func quote(v string) string { return `"` + v + `"` }

// line writes one line at the current depth; "" writes an empty line.
func (r *renderer) line(format string, args ...any) {
	if format == "" {
		r.buf.WriteByte('\n')
		return
	}
	r.buf.WriteString(strings.Repeat("    ", r.depth))
	fmt.Fprintf(&r.buf, format, args...)
	r.buf.WriteByte('\n')
}

func (r *renderer) open(format string, args ...any) {
	r.line(format+" {", args...)
	r.depth++
}

func (r *renderer) close() {
	r.depth--
	r.line("}")
}

// resolve fills the ports from the spec and checks the node settings.
func (r *renderer) resolve() {
	p := &r.p
	if p.HTTPSPort == 0 {
		p.HTTPSPort = p.Spec.Nginx.HTTPSPort
	}
	if p.HealthPort == 0 {
		p.HealthPort = p.Spec.Nginx.HealthPort
	}
	for _, port := range []struct {
		field string
		n     int
	}{{"httpsPort", p.HTTPSPort}, {"healthPort", p.HealthPort}} {
		if port.n < 1 || port.n > 65535 {
			r.fail(port.field, fmt.Sprintf("port %d is not between 1 and 65535", port.n))
		}
	}
	if p.HTTPSPort == p.HealthPort {
		r.fail("healthPort", fmt.Sprintf("must differ from httpsPort (%d)", p.HTTPSPort))
	}
	if p.Listen != "" && net.ParseIP(p.Listen) == nil && checkServerName(p.Listen) != "" {
		r.fail("listen", fmt.Sprintf("%q is not an IP address or host name", p.Listen))
	}
	if (p.TLSCert == "") != (p.TLSKey == "") {
		r.fail("tlsCert", "give both the certificate and the key, or neither")
	}
	if p.User != "" && !userRE.MatchString(p.User) {
		r.fail("user", fmt.Sprintf("%q is not a user name", p.User))
	}
	if !urlPathRE.MatchString(p.Spec.Nginx.HealthPath) {
		r.fail("nginx.healthPath", fmt.Sprintf("%q is not a URL path", p.Spec.Nginx.HealthPath))
	}
	if s := p.Spec.Nginx.ClientMaxBodySize; s != "" && !bodySizeRE.MatchString(s) {
		r.fail("nginx.clientMaxBodySize", fmt.Sprintf("%q is not a size such as 10m", s))
	}
	if p.StatusListen != "" && r.check("statusListen", checkHostPort(p.StatusListen)) {
		host, port, _ := net.SplitHostPort(p.StatusListen)
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			r.fail("statusListen", fmt.Sprintf("%q is not a loopback address: stub_status stays local", p.StatusListen))
		}
		if n, _ := strconv.Atoi(port); n == p.HTTPSPort || n == p.HealthPort {
			r.fail("statusListen", fmt.Sprintf("port %d is already the https or health port", n))
		}
	}
}

// listen is the address part of a listen directive for port.
func (r *renderer) listen(port int) string {
	if r.p.Listen == "" {
		return strconv.Itoa(port)
	}
	return net.JoinHostPort(r.p.Listen, strconv.Itoa(port))
}

// siteListen is the listen directive's arguments of the sites' servers.
func (r *renderer) siteListen() string {
	if r.tls() {
		return r.listen(r.p.HTTPSPort) + " ssl http2"
	}
	return r.listen(r.p.HTTPSPort)
}

func (r *renderer) tls() bool { return r.p.TLSCert != "" }
