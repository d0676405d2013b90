package doctor

import (
	"crypto/tls"
	"crypto/x509"
	"slices"
	"strings"
	"time"

	"github.com/drover-dev/drover/spec"
)

// renewBefore is how early an expiring certificate is worth a warning.
const renewBefore = 14 * 24 * time.Hour

// certificate checks the TLS pair nginx will load, node.yaml's or
// drover.yaml's: a missing, unreadable or mismatched pair makes every
// revision's nginx -t fail, which the agent takes for a bad revision.
func (d *doctor) certificate(sp *spec.Spec) Result {
	var cert, key, from string
	switch t := d.n.Nginx.TLS; {
	case t != nil && t.SelfSigned:
		return pass("tls", "self-signed (nginx.tls.selfSigned: development only)")
	case t != nil:
		cert, key, from = t.Certificate, t.Key, "node.yaml's nginx.tls"
	case sp != nil && sp.Nginx.TLS != nil:
		cert, key, from = sp.Nginx.TLS.Certificate, sp.Nginx.TLS.Key, "drover.yaml's nginx.tls"
	case sp == nil:
		return warn("tls", "fix the repo check above", "not checked: drover.yaml could not be read")
	default:
		return warn("tls", "set nginx.tls in drover.yaml (or node.yaml) to serve HTTPS", "no certificate: the sites are served over plain HTTP")
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return fail("tls", "install the certificate and key at those paths (readable by root), or fix "+from,
			"%s (%s, %s): %v", from, cert, key, err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return fail("tls", "install a PEM certificate there", "%s: %v", cert, err)
	}
	now := time.Now()
	switch left := leaf.NotAfter.Sub(now); {
	case left <= 0:
		return fail("tls", "renew it (acme.sh --renew, then systemctl reload nginx)", "%s expired on %s", cert, leaf.NotAfter.Format(time.DateOnly))
	case now.Before(leaf.NotBefore):
		return fail("tls", "check this node's clock", "%s is valid only from %s", cert, leaf.NotBefore.Format(time.DateTime))
	case left < renewBefore:
		return warn("tls", "renew it now; check the renewal job", "%s expires in %d days", cert, int(left.Hours()/24))
	}
	var missing []string
	if sp != nil {
		for _, h := range hostNames(sp) {
			if leaf.VerifyHostname(strings.ReplaceAll(h, "*", "wildcard")) != nil {
				missing = append(missing, h)
			}
		}
	}
	if len(missing) > 0 {
		return warn("tls", "issue the certificate for those names too", "%s does not cover %s", cert, strings.Join(missing, ", "))
	}
	return pass("tls", "%s is valid until %s", cert, leaf.NotAfter.Format(time.DateOnly))
}

// hostNames are the names nginx serves over TLS: the sites' and the
// workers' routes'.
func hostNames(sp *spec.Spec) []string {
	var names []string
	for _, s := range sp.Sites {
		names = append(names, s.ServerNames...)
	}
	for _, w := range sp.Workers {
		for _, r := range w.Routes {
			names = append(names, r.ServerName)
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}
