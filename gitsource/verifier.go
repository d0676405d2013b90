package gitsource

import (
	"context"
	"encoding/json"
	"os"
	"slices"

	"github.com/drover-dev/drover/internal/atomicfile"
)

// VerifierConfig is node.yaml's repo.verify as a Verifier takes it.
type VerifierConfig struct {
	// OpenPGPKeyring and SSHAllowedSigners are the key files (either may
	// be ""); they are read again at every revision.
	OpenPGPKeyring, SSHAllowedSigners string
	// RequireAll checks every commit since the live release, not only the
	// revision itself.
	RequireAll bool
	// SignersFile records who signed each accepted revision
	// (STATE/signers.json).
	SignersFile string
}

// Verifier checks each revision's signature for the rollout
// (reconcile.Verifier): the repo checks the signatures, a refused commit is
// the revision's fault (*SignatureError says so), and who signed each
// accepted revision is kept for the node's status.
type Verifier struct {
	repo *Repo
	cfg  VerifierConfig
}

// signerRecord is one entry of the signers file.
type signerRecord struct {
	Rev    string `json:"rev"`
	Signer string `json:"signer"`
}

// maxSigners bounds the signers file: far more than the releases kept.
const maxSigners = 200

// NewVerifier loads the keys once, so that a broken file fails the agent
// at start.
func NewVerifier(repo *Repo, cfg VerifierConfig) (*Verifier, error) {
	if _, err := LoadTrust(cfg.OpenPGPKeyring, cfg.SSHAllowedSigners); err != nil {
		return nil, err
	}
	return &Verifier{repo: repo, cfg: cfg}, nil
}

// Verify checks rev (and, with RequireAll, every commit since live) and
// returns who signed it. It re-reads the key files each time, so that
// adding or removing a key takes effect without restarting the agent; a
// key file that no longer loads is the node's fault, not the revision's,
// and is retried.
func (v *Verifier) Verify(ctx context.Context, rev, live string) (string, error) {
	trust, err := LoadTrust(v.cfg.OpenPGPKeyring, v.cfg.SSHAllowedSigners)
	if err != nil {
		return "", err
	}
	signer, err := v.repo.Verify(ctx, VerifyConfig{Trust: trust, All: v.cfg.RequireAll}, rev, live)
	if err != nil {
		return signer, err
	}
	return signer, v.record(rev, signer)
}

// Signer is who signed rev, from the signers file ("" when unknown).
func (v *Verifier) Signer(rev string) string {
	if rev == "" {
		return ""
	}
	for _, r := range v.records() {
		if r.Rev == rev {
			return r.Signer
		}
	}
	return ""
}

func (v *Verifier) records() []signerRecord {
	var rs []signerRecord
	if data, err := os.ReadFile(v.cfg.SignersFile); err == nil {
		json.Unmarshal(data, &rs) // a damaged file forgets the signers, nothing else
	}
	return rs
}

func (v *Verifier) record(rev, signer string) error {
	rs := slices.DeleteFunc(v.records(), func(r signerRecord) bool { return r.Rev == rev })
	rs = append(rs, signerRecord{Rev: rev, Signer: signer})
	if len(rs) > maxSigners {
		rs = rs[len(rs)-maxSigners:]
	}
	data, err := json.Marshal(rs)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(v.cfg.SignersFile, data, 0o644)
}
