package spec

// RepoVerify is node.yaml's repo.verify: with it the git server is not
// trusted, and a revision goes live only when signed by a key listed here.
type RepoVerify struct {
	// OpenPGPKeyring is a file of armored OpenPGP public keys.
	OpenPGPKeyring string `yaml:"openpgpKeyring,omitempty" json:"openpgpKeyring,omitempty"`
	// SSHAllowedSigners is a file in ssh-keygen's allowed_signers format.
	SSHAllowedSigners string `yaml:"sshAllowedSigners,omitempty" json:"sshAllowedSigners,omitempty"`
	// Require is "tip" (the revision itself must be signed, the default)
	// or "all" (every commit since the live revision must be).
	Require string `yaml:"require,omitempty" json:"require,omitempty"`
}

// Verify requirements.
const (
	RequireTip = "tip"
	RequireAll = "all"
)

// NodeSecrets is node.yaml's secrets: how this node decrypts the age files
// a spec's workers name in secretEnv.
type NodeSecrets struct {
	// IdentityFile holds this node's age identity (AGE-SECRET-KEY-1…); it
	// must be mode 0600 or stricter.
	IdentityFile string `yaml:"identityFile,omitempty" json:"identityFile"`
}

func (v *validator) repoVerify(rv *RepoVerify) {
	if rv == nil {
		return
	}
	if rv.Require == "" {
		rv.Require = RequireTip
	}
	if rv.OpenPGPKeyring == "" && rv.SSHAllowedSigners == "" {
		v.fail("repo.verify", "give openpgpKeyring and/or sshAllowedSigners: without a key no revision could go live")
	}
	if rv.Require != RequireTip && rv.Require != RequireAll {
		v.fail("repo.verify.require", "%q is not tip or all", rv.Require)
	}
}

func (v *validator) nodeSecrets(s *NodeSecrets) {
	if s != nil && s.IdentityFile == "" {
		v.fail("secrets.identityFile", "is required: a file holding this node's age identity")
	}
}
