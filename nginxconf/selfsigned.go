package nginxconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/drover-dev/drover/internal/atomicfile"
)

// Names of the files EnsureSelfSigned keeps in its directory.
const (
	SelfSignedCert = "selfsigned.crt"
	SelfSignedKey  = "selfsigned.key"
)

const (
	selfSignedValidity = 365 * 24 * time.Hour
	// A certificate closer than this to its end is replaced.
	selfSignedRenewBefore = 30 * 24 * time.Hour
)

// EnsureSelfSigned returns a self-signed certificate (ECDSA P-256) for names
// (host names, wildcards or IP addresses; none means localhost) in dir, for
// development machines. It keeps the files already there when they form a
// valid pair covering exactly these names for at least 30 more days;
// otherwise it writes new ones atomically, the key readable by its owner only.
func EnsureSelfSigned(dir string, names []string) (certPath, keyPath string, err error) {
	if len(names) == 0 {
		names = []string{"localhost"}
	}
	certPath, keyPath = filepath.Join(dir, SelfSignedCert), filepath.Join(dir, SelfSignedKey)
	if selfSignedCovers(certPath, keyPath, names, time.Now()) {
		return certPath, keyPath, nil
	}
	certPEM, keyPEM, err := newSelfSigned(names, time.Now())
	if err != nil {
		return "", "", fmt.Errorf("self-signed certificate: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", fmt.Errorf("self-signed certificate: %w", err)
	}
	// The key first: a crash between the two writes leaves a pair that does
	// not match, which the next call replaces.
	if err := atomicfile.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return "", "", fmt.Errorf("self-signed certificate: %w", err)
	}
	if err := atomicfile.WriteFile(certPath, certPEM, 0o644); err != nil {
		return "", "", fmt.Errorf("self-signed certificate: %w", err)
	}
	return certPath, keyPath, nil
}

// selfSignedCovers reports whether the pair on disk can be kept.
func selfSignedCovers(certPath, keyPath string, names []string, now time.Time) bool {
	pair, err := tls.LoadX509KeyPair(certPath, keyPath) // also checks they match
	if err != nil {
		return false
	}
	leaf := pair.Leaf
	if leaf == nil || now.Before(leaf.NotBefore) || now.Add(selfSignedRenewBefore).After(leaf.NotAfter) {
		return false
	}
	dns, ips := splitNames(names)
	sameIPs := slices.EqualFunc(ips, leaf.IPAddresses, func(a, b net.IP) bool { return a.Equal(b) })
	return slices.Equal(dns, leaf.DNSNames) && sameIPs
}

func splitNames(names []string) (dns []string, ips []net.IP) {
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, n)
		}
	}
	return dns, ips
}

func newSelfSigned(names []string, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	dns, ips := splitNames(names)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: names[0], Organization: []string{"drover development"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(selfSignedValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              dns,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	return certPEM, keyPEM, nil
}
