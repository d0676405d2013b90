package gitsource

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/drover-dev/drover/internal/signtest"
)

// signedCommit commits everything with git's signing options args (nil:
// unsigned) and pushes it to main.
func (u *upstream) signedCommit(args []string, msg string) string {
	u.t.Helper()
	git(u.t, u.work, "add", "-A")
	git(u.t, u.work, append(append([]string(nil), args...), "commit", "-q", "--allow-empty", "-m", msg)...)
	git(u.t, u.work, "push", "-q", "-f", "origin", "HEAD:main")
	return git(u.t, u.work, "rev-parse", "HEAD")
}

// keys are one allowed SSH key, one allowed OpenPGP key, and a Trust
// listing both.
type keys struct {
	ssh   *signtest.SSH
	gpg   *signtest.GPG
	trust *Trust
	dir   string
}

func newKeys(t testing.TB) *keys {
	t.Helper()
	k := &keys{ssh: signtest.NewSSH(t, "alice@example.com"), gpg: signtest.NewGPG(t, "Bob Builder <bob@example.com>"), dir: t.TempDir()}
	writeText(t, filepath.Join(k.dir, "allowed_signers"), "# the team\n"+k.ssh.AllowedSigner())
	writeText(t, filepath.Join(k.dir, "keyring.asc"), k.gpg.PublicKey(t))
	trust, err := LoadTrust(filepath.Join(k.dir, "keyring.asc"), filepath.Join(k.dir, "allowed_signers"))
	if err != nil {
		t.Fatal(err)
	}
	k.trust = trust
	return k
}

func writeText(t testing.TB, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func fetchAndVerify(t *testing.T, r *Repo, cfg VerifyConfig, rev, live string) (string, error) {
	t.Helper()
	ctx := context.Background()
	if err := r.Fetch(ctx, rev); err != nil {
		t.Fatal(err)
	}
	return r.Verify(ctx, cfg, rev, live)
}

// refused asserts err is a SignatureError about commit rev whose message
// holds every one of want.
func refused(t *testing.T, err error, rev string, want ...string) {
	t.Helper()
	var se *SignatureError
	if !errors.As(err, &se) {
		t.Fatalf("want a SignatureError for %s, got %v", rev[:12], err)
	}
	if se.Commit != rev {
		t.Errorf("error names commit %s, want %s", se.Commit, rev)
	}
	// reconcile.IsBadRevision halts what says so; gitsource cannot import
	// reconcile, so the method is asked for directly.
	var rf interface{ RevisionFault() bool }
	if !errors.As(err, &rf) || !rf.RevisionFault() {
		t.Errorf("a refused signature does not say it is the revision's fault: %v", err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
}

func TestVerifyAcceptsAllowedSSHAndOpenPGPSignatures(t *testing.T) {
	k := newKeys(t)
	u := newUpstream(t)
	r := openRepo(t, Config{URL: u.fileURL()}, nil)
	cfg := VerifyConfig{Trust: k.trust}

	u.write("a", "1", 0o644)
	rev := u.signedCommit(k.ssh.GitArgs(), "ssh signed")
	signer, err := fetchAndVerify(t, r, cfg, rev, "")
	if err != nil {
		t.Fatalf("ssh-signed commit refused: %v", err)
	}
	if !strings.Contains(signer, "alice@example.com") || !strings.Contains(signer, "SHA256:") {
		t.Errorf("signer %q does not name the principal and the key", signer)
	}

	u.write("a", "2", 0o644)
	rev = u.signedCommit(k.gpg.GitArgs(), "openpgp signed")
	signer, err = fetchAndVerify(t, r, cfg, rev, "")
	if err != nil {
		t.Fatalf("openpgp-signed commit refused: %v", err)
	}
	if !strings.Contains(signer, "Bob Builder <bob@example.com>") || !strings.Contains(signer, k.gpg.Fingerprint) {
		t.Errorf("signer %q does not name the key's identity and fingerprint %s", signer, k.gpg.Fingerprint)
	}
}

func TestVerifyRefusesUnsignedUnknownTamperedAndExpired(t *testing.T) {
	k := newKeys(t)
	u := newUpstream(t)
	r := openRepo(t, Config{URL: u.fileURL()}, nil)
	cfg := VerifyConfig{Trust: k.trust}

	t.Run("unsigned", func(t *testing.T) {
		u.write("a", "unsigned", 0o644)
		rev := u.signedCommit(nil, "unsigned")
		_, err := fetchAndVerify(t, r, cfg, rev, "")
		refused(t, err, rev, rev[:12], "unsigned")
	})
	t.Run("unknown ssh key", func(t *testing.T) {
		mallory := signtest.NewSSH(t, "mallory@example.com")
		u.write("a", "mallory", 0o644)
		rev := u.signedCommit(mallory.GitArgs(), "by mallory")
		_, err := fetchAndVerify(t, r, cfg, rev, "")
		refused(t, err, rev, "not in the allowed signers", "SHA256:")
	})
	t.Run("unknown openpgp key", func(t *testing.T) {
		eve := signtest.NewGPG(t, "Eve <eve@example.com>")
		u.write("a", "eve", 0o644)
		rev := u.signedCommit(eve.GitArgs(), "by eve")
		_, err := fetchAndVerify(t, r, cfg, rev, "")
		refused(t, err, rev, "not in the openpgp keyring", eve.Fingerprint[len(eve.Fingerprint)-16:])
	})
	t.Run("tree swapped under a valid signature", func(t *testing.T) {
		for _, signer := range [][]string{k.ssh.GitArgs(), k.gpg.GitArgs()} {
			u.write("a", "innocent", 0o644)
			good := u.signedCommit(signer, "reviewed change")
			u.write("a", "evil", 0o644)
			git(t, u.work, "add", "-A")
			evilTree := git(t, u.work, "write-tree")
			raw := git(t, u.work, "cat-file", "commit", good)
			goodTree := git(t, u.work, "rev-parse", good+"^{tree}")
			forged := strings.Replace(raw, "tree "+goodTree, "tree "+evilTree, 1) + "\n"
			cmd := exec.Command("git", "hash-object", "-t", "commit", "-w", "--stdin")
			cmd.Dir, cmd.Env, cmd.Stdin = u.work, gitEnv, strings.NewReader(forged)
			out, err := cmd.Output()
			if err != nil {
				t.Fatal(err)
			}
			rev := strings.TrimSpace(string(out))
			git(t, u.work, "push", "-q", "-f", "origin", rev+":refs/heads/main")
			_, err = fetchAndVerify(t, r, cfg, rev, "")
			refused(t, err, rev, "bad signature")
			git(t, u.work, "reset", "-q", "--hard", good)
		}
	})
	t.Run("expired openpgp key", func(t *testing.T) {
		old := signtest.NewExpiredGPG(t, "Old Timer <old@example.com>")
		ring := filepath.Join(t.TempDir(), "ring.asc")
		writeText(t, ring, k.gpg.PublicKey(t)+old.PublicKey(t))
		trust, err := LoadTrust(ring, "")
		if err != nil {
			t.Fatal(err)
		}
		u.write("a", "old", 0o644)
		rev := u.signedCommit(old.GitArgs(), "signed by an expired key")
		_, err = fetchAndVerify(t, r, VerifyConfig{Trust: trust}, rev, "")
		refused(t, err, rev, "expired", "Old Timer")
	})
	t.Run("revoked openpgp key", func(t *testing.T) {
		gone := signtest.NewGPG(t, "Gone Away <gone@example.com>")
		u.write("a", "gone", 0o644)
		rev := u.signedCommit(gone.GitArgs(), "signed before the key was revoked")
		gone.Revoke(t)
		ring := filepath.Join(t.TempDir(), "ring.asc")
		writeText(t, ring, gone.PublicKey(t))
		trust, err := LoadTrust(ring, "")
		if err != nil {
			t.Fatal(err)
		}
		_, err = fetchAndVerify(t, r, VerifyConfig{Trust: trust}, rev, "")
		refused(t, err, rev, "revoked", "Gone Away")
	})
	t.Run("ssh key past valid-before", func(t *testing.T) {
		signers := filepath.Join(t.TempDir(), "allowed_signers")
		writeText(t, signers, k.ssh.Principal+` valid-before="20200101" `+k.ssh.Public+"\n")
		trust, err := LoadTrust("", signers)
		if err != nil {
			t.Fatal(err)
		}
		u.write("a", "late", 0o644)
		rev := u.signedCommit(k.ssh.GitArgs(), "signed after the key's end")
		_, err = fetchAndVerify(t, r, VerifyConfig{Trust: trust}, rev, "")
		refused(t, err, rev, "expired", "alice@example.com")
	})
}

func TestVerifyRequireAllRefusesAnUnsignedCommitInTheMiddle(t *testing.T) {
	k := newKeys(t)
	u := newUpstream(t)
	r := openRepo(t, Config{URL: u.fileURL()}, nil)
	all := VerifyConfig{Trust: k.trust, All: true}

	// History from before signing began: a first deploy checks only the
	// revision itself.
	u.write("a", "-1", 0o644)
	u.signedCommit(nil, "before signatures were required")
	u.write("a", "0", 0o644)
	live := u.signedCommit(k.ssh.GitArgs(), "live")
	if _, err := fetchAndVerify(t, r, all, live, ""); err != nil {
		t.Fatalf("first deploy of a signed revision over older unsigned history: %v", err)
	}
	// 40 commits: deeper than the first deepening (16), so the store is
	// deepened twice; one unsigned commit sits in the middle.
	var middle string
	for i := range 40 {
		u.write("a", string(rune('a'+i%26)), 0o644)
		if i == 20 {
			middle = u.signedCommit(nil, "sneaked in")
			continue
		}
		signer := k.ssh.GitArgs()
		if i%2 == 1 {
			signer = k.gpg.GitArgs()
		}
		u.signedCommit(signer, "signed")
	}
	tip := git(t, u.work, "rev-parse", "HEAD")
	if _, err := fetchAndVerify(t, r, VerifyConfig{Trust: k.trust}, tip, live); err != nil {
		t.Fatalf("require tip refused a signed tip: %v", err)
	}
	_, err := fetchAndVerify(t, r, all, tip, live)
	refused(t, err, middle, middle[:12], "unsigned")

	// A signed fix on top of a range still holding the unsigned commit is
	// refused too; once the unsigned commit is gone (history rewritten
	// with it signed), the range passes.
	git(t, u.work, "rebase", "-q", "--exec", "git "+strings.Join(k.ssh.GitArgs(), " ")+" commit -q --amend --no-edit", live)
	git(t, u.work, "push", "-q", "-f", "origin", "HEAD:main")
	tip = git(t, u.work, "rev-parse", "HEAD")
	if _, err := fetchAndVerify(t, r, all, tip, live); err != nil {
		t.Fatalf("a wholly signed range was refused: %v", err)
	}
	// The next revision's range stops at the commits verified so far.
	u.write("b", "1", 0o644)
	next := u.signedCommit(k.gpg.GitArgs(), "next")
	if _, err := fetchAndVerify(t, r, all, next, ""); err != nil {
		t.Fatalf("a revision on top of verified history was refused: %v", err)
	}
}

func TestLoadTrustNamesTheBadLine(t *testing.T) {
	dir := t.TempDir()
	signers := filepath.Join(dir, "allowed_signers")
	writeText(t, signers, "# ok\nalice@example.com ssh-ed25519 notbase64\nbob@example.com cert-authority ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE8T4sN0aDyt8jA0bHxSP7dq1yvSu0QTv/YkrtA2wJPq\n")
	_, err := LoadTrust("", signers)
	if err == nil {
		t.Fatal("a broken allowed_signers file was accepted")
	}
	for _, want := range []string{signers + ":2:", signers + ":3:", "cert-authority"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	ring := filepath.Join(dir, "ring.asc")
	writeText(t, ring, "not a key\n")
	if _, err := LoadTrust(ring, ""); err == nil || !strings.Contains(err.Error(), ring) {
		t.Errorf("a broken keyring: got %v, want an error naming %s", err, ring)
	}
	if _, err := LoadTrust("", ""); err == nil {
		t.Error("no keys at all was accepted")
	}
}

// sshSign signs data with ssh-keygen -Y sign in namespace ns and returns
// the armored signature.
func sshSign(t *testing.T, key, ns string, data []byte) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "data")
	writeText(t, f, string(data))
	if out, err := exec.Command("ssh-keygen", "-q", "-Y", "sign", "-n", ns, "-f", key, f).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen -Y sign: %v\n%s", err, out)
	}
	sig, err := os.ReadFile(f + ".sig")
	if err != nil {
		t.Fatal(err)
	}
	return string(sig)
}

func TestSSHSIGAgainstSSHKeygen(t *testing.T) {
	ed := signtest.NewSSH(t, "ed@example.com")
	rsaKey := filepath.Join(t.TempDir(), "id_rsa")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-C", "rsa@example.com", "-f", rsaKey).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	rsaPub, _ := os.ReadFile(rsaKey + ".pub")
	signers := filepath.Join(t.TempDir(), "allowed_signers")
	writeText(t, signers, ed.AllowedSigner()+"rsa@example.com "+string(rsaPub))
	trust, err := LoadTrust("", signers)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nauthor a <a@b> 1 +0000\ncommitter a <a@b> 1 +0000\n\nm\n")
	for _, c := range []struct {
		key, ns string
		msg     []byte
		want    string // "" for accepted
	}{
		{ed.KeyFile, "git", msg, ""},
		{rsaKey, "git", msg, ""},
		{ed.KeyFile, "file", msg, `signed for namespace "file", not "git"`},
		{ed.KeyFile, "git", append([]byte("x"), msg...), "bad signature"},
	} {
		sig := sshSign(t, c.key, c.ns, c.msg)
		signer, err := trust.check(signedCommit{hash: strings.Repeat("0", 40), sig: strings.TrimSpace(sig), msg: msg})
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s signature in %s refused: %v", filepath.Base(c.key), c.ns, err)
		case c.want == "" && !strings.Contains(signer, "@example.com (SSH SHA256:"):
			t.Errorf("signer %q", signer)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s signature in %s over %.1q: got %v, want %q", filepath.Base(c.key), c.ns, c.msg, err, c.want)
		}
	}
}

// A branch forked from history older than the first verified revision
// (unsigned, from before signatures were required) and merged later: its
// fork point and older commits are the live revision's history, not the
// range, and are not asked for signatures; an unsigned commit on the branch
// itself still is.
func TestVerifyRequireAllStopsAtTheLiveHistoryOfAMergedBranch(t *testing.T) {
	k := newKeys(t)
	u := newUpstream(t)
	r := openRepo(t, Config{URL: u.fileURL()}, nil)
	all := VerifyConfig{Trust: k.trust, All: true}
	for i := range 3 {
		u.write("old", strconv.Itoa(i), 0o644)
		u.signedCommit(nil, "unsigned, before signatures were required")
	}
	fork := git(t, u.work, "rev-parse", "HEAD")
	// The branch's commits are made first, so they are older than live.
	git(t, u.work, "checkout", "-q", "-b", "feature")
	u.write("f", "1", 0o644)
	git(t, u.work, "add", "-A")
	git(t, u.work, append(k.gpg.GitArgs(), "commit", "-q", "-m", "feature, signed")...)
	signedBranch := git(t, u.work, "rev-parse", "HEAD")
	u.write("f", "2", 0o644)
	git(t, u.work, "add", "-A")
	git(t, u.work, "commit", "-q", "-m", "feature, unsigned")
	unsignedBranch := git(t, u.work, "rev-parse", "HEAD")
	git(t, u.work, "checkout", "-q", "main")

	u.write("main", "1", 0o644)
	live := u.signedCommit(k.ssh.GitArgs(), "live: the first verified revision")
	if _, err := fetchAndVerify(t, r, all, live, ""); err != nil {
		t.Fatal(err)
	}
	merge := func(branch string) string {
		git(t, u.work, "reset", "-q", "--hard", live)
		git(t, u.work, append(k.ssh.GitArgs(), "merge", "-q", "--no-ff", "-m", "merge", branch)...)
		git(t, u.work, "push", "-q", "-f", "origin", "HEAD:main")
		return git(t, u.work, "rev-parse", "HEAD")
	}
	if _, err := fetchAndVerify(t, r, all, merge(signedBranch), live); err != nil {
		t.Fatalf("a signed branch forked from unsigned live history was refused: %v", err)
	}
	_, err := fetchAndVerify(t, r, all, merge(unsignedBranch), live)
	refused(t, err, unsignedBranch, "unsigned")
	if strings.Contains(err.Error(), fork[:12]) {
		t.Errorf("the fork point, live history, was blamed: %v", err)
	}
}
