//go:build e2e

package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/drover-dev/drover/cluster"
	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/internal/signtest"
	"github.com/drover-dev/drover/reconcile"
)

// signWith makes the node's config repo sign its next commits with git's
// options args (from signtest), or not at all when args is nil.
func (n *testNode) signWith(args []string) {
	n.t.Helper()
	n.git("-C", n.repo, "config", "commit.gpgsign", "false")
	for i := 1; i < len(args); i += 2 {
		k, v, _ := strings.Cut(args[i], "=")
		n.git("-C", n.repo, "config", k, v)
	}
}

// forgeTree points main at a copy of rev's commit, signature and all, whose
// tree is content's: what a compromised git server could serve.
func (n *testNode) forgeTree(rev, blog string) string {
	n.t.Helper()
	n.write("repo/sites/blog/index.html", blog+"\n")
	n.git("-C", n.repo, "add", "-A")
	tree := n.git("-C", n.repo, "write-tree")
	raw := n.git("-C", n.repo, "cat-file", "commit", rev)
	oldTree := n.git("-C", n.repo, "rev-parse", rev+"^{tree}")
	cmd := exec.Command("git", "-C", n.repo, "hash-object", "-t", "commit", "-w", "--stdin")
	cmd.Stdin = strings.NewReader(strings.Replace(raw, "tree "+oldTree, "tree "+tree, 1) + "\n")
	out, err := cmd.Output()
	if err != nil {
		n.t.Fatal(err)
	}
	forged := strings.TrimSpace(string(out))
	n.git("-C", n.repo, "update-ref", "refs/heads/main", forged)
	n.git("-C", n.repo, "reset", "-q", "--hard", forged)
	return forged
}

// waitHalted waits until rev is halted and checks that the halt says why,
// that nothing of it was prepared, and that the node still serves blog and
// version.
func (n *testNode) waitHalted(rev, blog, version string, why ...string) {
	n.t.Helper()
	n.waitFor(rev[:12]+" halted", func(st reconcile.Status) bool {
		return st.Target == rev && st.Step == reconcile.StepFailed || strings.Contains(st.Error, "revision "+rev[:12]+" is halted")
	})
	halted, _ := os.ReadFile(layout.New(n.state).Halted())
	for _, w := range append([]string{rev, "verify signature of " + rev[:12]}, why...) {
		if !strings.Contains(string(halted), w) {
			n.t.Errorf("halted.json does not say %q:\n%s", w, halted)
		}
	}
	// Halted before prepare: no release was materialized for it.
	if _, err := os.Stat(filepath.Join(n.state, "releases", rev)); err == nil {
		n.t.Errorf("a release of the refused revision %s was prepared", rev[:12])
	}
	n.serves(blog, version)
}

func TestAgentGoesLiveOnlyWithAllowedSignatures(t *testing.T) {
	t.Parallel() // the agent mostly waits on its LB's checks: tests share the CPUs
	n := newTestNode(t)
	alice := signtest.NewSSH(t, "alice@example.com")
	bob := signtest.NewGPG(t, "Bob Builder <bob@example.com>")
	old := signtest.NewExpiredGPG(t, "Old Timer <old@example.com>")
	n.write("allowed_signers", alice.AllowedSigner())
	n.write("ring.asc", bob.PublicKey(t)+old.PublicKey(t))
	verify := "./repo, verify: {sshAllowedSigners: allowed_signers, openpgpKeyring: ring.asc, require: %s}"
	n.configure("test", strings.Replace(verify, "%s", "tip", 1), "")

	n.signWith(alice.GitArgs())
	a := n.commit("blog A", "api A")
	n.startAgent()
	n.waitLive(a)
	n.serves("blog A", "api A")
	if !strings.Contains(n.agentLog.String(), "signer=\"alice@example.com (SSH SHA256:") {
		t.Errorf("the agent did not log the SSH signer of A")
	}

	n.signWith(bob.GitArgs())
	b := n.commit("blog B", "api B")
	n.waitLive(b)
	n.serves("blog B", "api B")

	n.signWith(nil)
	c := n.commit("blog C", "api C")
	n.waitHalted(c, "blog B", "api B", "unsigned")
	if plan := runCLI(t, "plan", "--config", n.config); !strings.Contains(plan, "signature: REFUSED: commit "+c[:12]+": unsigned") {
		t.Errorf("drover plan does not say the revision is refused:\n%s", plan)
	}

	mallory := signtest.NewSSH(t, "mallory@example.com")
	n.signWith(mallory.GitArgs())
	d := n.commit("blog D", "api D")
	n.waitHalted(d, "blog B", "api B", "key not in the allowed signers", "SSH key SHA256:")

	n.signWith(alice.GitArgs())
	e0 := n.commit("blog E", "api E")
	e := n.forgeTree(e0, "blog E forged")
	n.waitHalted(e, "blog B", "api B", "bad signature", "alice@example.com")

	n.signWith(old.GitArgs())
	f := n.commit("blog F", "api F")
	n.waitHalted(f, "blog B", "api B", "Old Timer", "key expired")

	n.signWith(bob.GitArgs())
	g := n.commit("blog G", "api G")
	n.waitLive(g)
	n.serves("blog G", "api G")
	if st := runCLI(t, "status", "--config", n.config); !strings.Contains(st, "signer   Bob Builder <bob@example.com> (OpenPGP "+bob.Fingerprint+")") {
		t.Errorf("drover status does not show the live revision's signer:\n%s", st)
	}
	// The history names the signer of each revision that went live, and
	// none for those refused.
	var hist []cluster.Revision
	if err := json.Unmarshal([]byte(runCLI(t, "history", "--config", n.config, "-o", "json")), &hist); err != nil {
		t.Fatal(err)
	}
	signers := map[string]string{}
	for _, r := range hist {
		signers[r.Rev] = r.Signature
	}
	for rev, want := range map[string]string{a: "alice@example.com (SSH SHA256:", b: "Bob Builder <bob@example.com> (OpenPGP " + bob.Fingerprint + ")",
		g: "Bob Builder <bob@example.com>", c: "", d: ""} {
		if got, ok := signers[rev]; !ok || !strings.HasPrefix(got, want) || (want == "" && got != "") {
			t.Errorf("history: revision %s signed by %q (listed: %v), want %q", rev[:12], got, ok, want)
		}
	}
	if text := runCLI(t, "history", "--config", n.config); !strings.Contains(text, "alice@example.com (SSH SHA256:") {
		t.Errorf("drover history does not show the signers:\n%s", text)
	}

	// require: all: an unsigned commit under a signed tip halts the tip,
	// naming the unsigned commit.
	n.stopAgent(syscall.SIGTERM)
	n.configure("test", strings.Replace(verify, "%s", "all", 1), "")
	n.startAgent()
	n.waitLive(g)
	n.signWith(nil)
	h := n.commit("blog H", "api H")
	n.signWith(alice.GitArgs())
	i := n.commit("blog I", "api I")
	n.waitHalted(i, "blog G", "api G", "commit "+h[:12]+": unsigned")
	if n.status().Rev != g {
		t.Fatalf("live revision %s, want G %s", n.status().Rev, g)
	}
}

func TestValidateVerifyChecksHEADsSignature(t *testing.T) {
	n := newTestNode(t)
	alice := signtest.NewSSH(t, "alice@example.com")
	n.write("allowed_signers", alice.AllowedSigner())
	n.configure("test", "./repo, verify: {sshAllowedSigners: allowed_signers}", "")
	n.signWith(alice.GitArgs())
	a := n.commit("blog A", "api A")
	out := runCLI(t, "validate", "--verify", "--node", n.config, n.repo)
	if !strings.Contains(out, "HEAD "+a[:12]+": signed by alice@example.com (SSH SHA256:") {
		t.Errorf("validate --verify of a signed HEAD said:\n%s", out)
	}

	n.signWith(nil)
	b := n.commit("blog B", "api B")
	cmd := exec.Command(droverBin, "validate", "--verify", "--node", n.config, n.repo)
	got, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(string(got), "commit "+b[:12]+": unsigned") {
		t.Errorf("validate --verify of an unsigned HEAD: %v\n%s", err, got)
	}
}
