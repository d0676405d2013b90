package gitsource

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/drover-dev/drover/internal/signtest"
)

// TestVerifierRecordsSignersAndRereadsKeys: an accepted revision's signer
// is kept for the status; the key files are read again at every revision,
// so a key added to allowed_signers counts without a restart and a removed
// one stops counting; a refused revision is the revision's fault.
func TestVerifierRecordsSignersAndRereadsKeys(t *testing.T) {
	k := newKeys(t)
	u := newUpstream(t)
	r := openRepo(t, Config{URL: u.fileURL()}, nil)
	signers := filepath.Join(t.TempDir(), "signers.json")
	allowed := filepath.Join(k.dir, "allowed_signers")
	v, err := NewVerifier(r, VerifierConfig{OpenPGPKeyring: filepath.Join(k.dir, "keyring.asc"), SSHAllowedSigners: allowed, SignersFile: signers})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	verify := func(rev string) (string, error) {
		t.Helper()
		if err := r.Fetch(ctx, rev); err != nil {
			t.Fatal(err)
		}
		return v.Verify(ctx, rev, "")
	}

	u.write("a", "1", 0o644)
	a := u.signedCommit(k.ssh.GitArgs(), "alice")
	if signer, err := verify(a); err != nil || !strings.Contains(signer, "alice@example.com") {
		t.Fatalf("alice's commit: %q, %v", signer, err)
	}
	if got := v.Signer(a); !strings.Contains(got, "alice@example.com") {
		t.Errorf("Signer(a) = %q, want alice's key", got)
	}

	carol := signtest.NewSSH(t, "carol@example.com")
	u.write("a", "2", 0o644)
	c := u.signedCommit(carol.GitArgs(), "carol")
	_, err = verify(c)
	refused(t, err, c)
	if got := v.Signer(c); got != "" {
		t.Errorf("a refused revision has signer %q", got)
	}
	writeText(t, allowed, k.ssh.AllowedSigner()+carol.AllowedSigner())
	if signer, err := verify(c); err != nil || !strings.Contains(signer, "carol@example.com") {
		t.Fatalf("carol's commit once her key is allowed: %q, %v", signer, err)
	}
	writeText(t, allowed, carol.AllowedSigner())
	_, err = verify(a)
	refused(t, err, a)
	// What was recorded stays: the status says who signed a release live.
	if got := v.Signer(a); !strings.Contains(got, "alice@example.com") {
		t.Errorf("Signer(a) after alice's key went: %q", got)
	}
	if v.Signer("") != "" {
		t.Error("the signer of no revision")
	}
}
