package spec

import (
	"strings"
	"testing"
)

func TestNodeRepoVerifyAndSecrets(t *testing.T) {
	good := "repo:\n  url: /srv/repo\n  verify: {sshAllowedSigners: keys/allowed_signers, openpgpKeyring: /etc/drover/ring.asc}\nsecrets: {identityFile: age.key}\n"
	n, err := ParseNode("node.yaml", []byte(good), "/etc/drover")
	if err != nil {
		t.Fatal(err)
	}
	if v := n.Repo.Verify; v.Require != RequireTip || v.SSHAllowedSigners != "/etc/drover/keys/allowed_signers" || v.OpenPGPKeyring != "/etc/drover/ring.asc" {
		t.Fatalf("verify decoded as %+v", v)
	}
	if n.Secrets.IdentityFile != "/etc/drover/age.key" {
		t.Fatalf("secrets decoded as %+v", n.Secrets)
	}
	bad := "repo:\n  url: /srv/repo\n  verify:\n    require: some\n    gpgKeys: x\nsecrets: {}\n"
	_, err = ParseNode("node.yaml", []byte(bad), "/")
	for _, w := range []string{
		`node.yaml:4:14: repo.verify.require: "some" is not tip or all`,
		"node.yaml:4:5: repo.verify: give openpgpKeyring and/or sshAllowedSigners",
		"node.yaml:5:5: ", "gpgKeys",
		"secrets.identityFile: is required",
	} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in:\n%v", w, err)
		}
	}
}

func TestWorkerSecretEnvMustStayInTheRepo(t *testing.T) {
	good := base + "    secretEnv: secrets/api.env.age\n"
	sp, err := Parse("drover.yaml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if sp.Workers[0].SecretEnv != "secrets/api.env.age" {
		t.Fatalf("secretEnv decoded as %q", sp.Workers[0].SecretEnv)
	}
	for _, bad := range []string{"../elsewhere.age", "/etc/drover/api.env.age"} {
		_, err := Parse("drover.yaml", []byte(base+"    secretEnv: "+bad+"\n"))
		if err == nil || !strings.Contains(err.Error(), "drover.yaml:13:16: workers[0].secretEnv: ") {
			t.Errorf("secretEnv %s: %v", bad, err)
		}
	}
}
