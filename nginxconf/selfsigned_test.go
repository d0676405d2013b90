package nginxconf

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestEnsureSelfSigned(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	names := []string{"app.test", "*.docs.test", "127.0.0.1"}
	cert, key, err := EnsureSelfSigned(dir, names)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf := pair.Leaf
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("key is %T, want ECDSA P-256", leaf.PublicKey)
	}
	if !slices.Equal(leaf.DNSNames, []string{"app.test", "*.docs.test"}) || len(leaf.IPAddresses) != 1 {
		t.Errorf("certificate names %v %v", leaf.DNSNames, leaf.IPAddresses)
	}
	for _, host := range []string{"app.test", "a.docs.test", "127.0.0.1"} {
		if err := leaf.VerifyHostname(host); err != nil {
			t.Errorf("certificate does not cover %s: %v", host, err)
		}
	}
	if fi, _ := os.Stat(key); fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v, want 0600", fi.Mode().Perm())
	}
	certPEM, _ := os.ReadFile(cert)

	// The same names: the files are kept.
	if _, _, err := EnsureSelfSigned(dir, names); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(cert); !bytes.Equal(again, certPEM) {
		t.Error("a valid certificate was replaced")
	}

	// Other names: a new certificate.
	if _, _, err := EnsureSelfSigned(dir, []string{"other.test"}); err != nil {
		t.Fatal(err)
	}
	pair, err = tls.LoadX509KeyPair(cert, key)
	if err != nil || !slices.Equal(pair.Leaf.DNSNames, []string{"other.test"}) {
		t.Errorf("after a change of names: %v %v", err, pair.Leaf.DNSNames)
	}

	// A key that does not match (a crash between the two writes): replaced.
	otherDir := filepath.Join(t.TempDir(), "other")
	_, otherKey, _ := EnsureSelfSigned(otherDir, []string{"other.test"})
	keyPEM, _ := os.ReadFile(otherKey)
	writeFile(t, key, string(keyPEM))
	if _, _, err := EnsureSelfSigned(dir, []string{"other.test"}); err != nil {
		t.Fatal(err)
	}
	if _, err := tls.LoadX509KeyPair(cert, key); err != nil {
		t.Errorf("a mismatched pair was kept: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("%d files in the directory, want the certificate and the key", len(entries))
	}
}
