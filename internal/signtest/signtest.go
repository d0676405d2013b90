// Package signtest makes real signing keys for tests: OpenPGP keys with gpg
// in a throwaway GNUPGHOME and SSH keys with ssh-keygen, and the git -c
// options that make `git commit` sign with them. Everything lives in
// temporary directories removed (and gpg-agent stopped) when the test ends.
// A missing gpg or ssh-keygen fails the test with the command that installs
// it: tests never skip for want of a binary.
package signtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/command"
)

func need(t testing.TB, bin string) {
	t.Helper()
	if _, err := exec.LookPath(bin); err != nil {
		t.Fatalf("%s not found: run `make setup` (scripts/setup.sh installs it)", bin)
	}
}

func run(t testing.TB, env []string, argv ...string) string {
	t.Helper()
	out, err := command.Run(context.Background(), command.Cmd{Argv: argv, Env: env, Timeout: 60 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// GPG is an OpenPGP signing key in its own GNUPGHOME.
type GPG struct {
	Home        string
	Fingerprint string
	// Program is a gpg wrapper for git's gpg.program: it pins the home
	// (and the faked clock of an expired key).
	Program string
}

// PastTime is the faked clock NewExpiredGPG makes and uses its key at.
const PastTime = "20200101T000000"

// NewGPG generates an ed25519 signing key for uid ("Name <email>") that
// never expires.
func NewGPG(t testing.TB, uid string) *GPG { return newGPG(t, uid, "", "never") }

// NewExpiredGPG generates a key valid for one day from PastTime: it signs
// with gpg's clock faked to then, so its signatures are good but the key
// has long expired.
func NewExpiredGPG(t testing.TB, uid string) *GPG { return newGPG(t, uid, PastTime, "1d") }

func newGPG(t testing.TB, uid, faked, expire string) *GPG {
	t.Helper()
	need(t, "gpg")
	need(t, "gpgconf")
	// gpg-agent's socket path must stay short: a TempDir under a long test
	// name would overflow sun_path.
	home, err := os.MkdirTemp("", "gpg")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(home, 0o700)
	t.Cleanup(func() {
		exec.Command("gpgconf", "--homedir", home, "--kill", "all").Run()
		// Where /run/user/<uid> exists, gpg keeps the sockets there.
		exec.Command("gpgconf", "--homedir", home, "--remove-socketdir").Run()
		os.RemoveAll(home)
	})
	args := []string{"gpg", "--homedir", home, "--batch", "--pinentry-mode", "loopback", "--passphrase", ""}
	if faked != "" {
		args = append(args, "--faked-system-time", faked+"!")
	}
	run(t, nil, append(args, "--quick-gen-key", uid, "ed25519", "sign", expire)...)
	colons := run(t, nil, "gpg", "--homedir", home, "--batch", "--with-colons", "--list-keys", uid)
	g := &GPG{Home: home}
	for _, l := range strings.Split(colons, "\n") {
		if f := strings.Split(l, ":"); f[0] == "fpr" && g.Fingerprint == "" {
			g.Fingerprint = f[9]
		}
	}
	if g.Fingerprint == "" {
		t.Fatalf("no fingerprint in gpg's listing:\n%s", colons)
	}
	g.Program = filepath.Join(home, "gpg-for-git")
	script := "#!/bin/sh\nexec gpg --homedir '" + home + "' --batch --pinentry-mode loopback --passphrase ''"
	if faked != "" {
		script += " --faked-system-time '" + faked + "!'"
	}
	script += ` "$@"` + "\n"
	if err := os.WriteFile(g.Program, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return g
}

// PublicKey is the key's armored public key block.
func (g *GPG) PublicKey(t testing.TB) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "pub.asc")
	run(t, nil, "gpg", "--homedir", g.Home, "--batch", "--armor", "--output", out, "--export", g.Fingerprint)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Revoke imports the revocation certificate gpg made with the key, so that
// PublicKey exports the key revoked. Sign before revoking: gpg refuses to
// sign with a revoked key.
func (g *GPG) Revoke(t testing.TB) {
	t.Helper()
	cert, err := os.ReadFile(filepath.Join(g.Home, "openpgp-revocs.d", g.Fingerprint+".rev"))
	if err != nil {
		t.Fatal(err)
	}
	// gpg guards the certificate against an accidental import with a
	// leading ':' on its armor line.
	armored := strings.Replace(string(cert), ":-----BEGIN PGP PUBLIC KEY BLOCK-----", "-----BEGIN PGP PUBLIC KEY BLOCK-----", 1)
	file := filepath.Join(t.TempDir(), "revoke.asc")
	if err := os.WriteFile(file, []byte(armored), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, nil, "gpg", "--homedir", g.Home, "--batch", "--import", file)
}

// GitArgs are the git options that make a commit signed by this key.
func (g *GPG) GitArgs() []string {
	return []string{"-c", "gpg.format=openpgp", "-c", "gpg.program=" + g.Program,
		"-c", "user.signingkey=" + g.Fingerprint, "-c", "commit.gpgsign=true"}
}

// SSH is an ed25519 SSH signing key.
type SSH struct {
	KeyFile   string
	Public    string // "ssh-ed25519 AAAA… comment"
	Principal string
}

// NewSSH generates an SSH key for principal (e.g. an e-mail address).
func NewSSH(t testing.TB, principal string) *SSH {
	t.Helper()
	need(t, "ssh-keygen")
	key := filepath.Join(t.TempDir(), "id_ed25519")
	run(t, nil, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", principal, "-f", key)
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	return &SSH{KeyFile: key, Public: strings.TrimSpace(string(pub)), Principal: principal}
}

// AllowedSigner is the key's line for an allowed_signers file.
func (s *SSH) AllowedSigner() string {
	return fmt.Sprintf("%s namespaces=\"git\" %s\n", s.Principal, s.Public)
}

// GitArgs are the git options that make a commit signed by this key.
func (s *SSH) GitArgs() []string {
	return []string{"-c", "gpg.format=ssh", "-c", "user.signingkey=" + s.KeyFile, "-c", "commit.gpgsign=true"}
}
