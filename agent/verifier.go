package agent

import (
	"github.com/drover-dev/drover/gitsource"
	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/spec"
)

// newSigVerifier is node.yaml's repo.verify as reconcile's Verifier; nil
// without it (the git server is trusted).
func newSigVerifier(repo *gitsource.Repo, cfg *spec.RepoVerify, stateDir string) (*gitsource.Verifier, error) {
	if cfg == nil {
		return nil, nil
	}
	return gitsource.NewVerifier(repo, gitsource.VerifierConfig{
		OpenPGPKeyring: cfg.OpenPGPKeyring, SSHAllowedSigners: cfg.SSHAllowedSigners,
		RequireAll: cfg.Require == spec.RequireAll, SignersFile: layout.New(stateDir).Signers(),
	})
}
