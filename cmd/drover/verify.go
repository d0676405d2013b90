package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/drover-dev/drover/cluster"
	"github.com/drover-dev/drover/gitsource"
	"github.com/drover-dev/drover/internal/atomicfile"
	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/spec"
)

// sigVerifier is node.yaml's repo.verify as reconcile sees it: gitsource
// checks the signatures, and a refused commit is the revision's fault.
type sigVerifier struct {
	repo *gitsource.Repo
	cfg  spec.RepoVerify
	// signersFile records who signed each accepted revision, newest last.
	signersFile string
}

// signerRecord is one line of the signers file.
type signerRecord struct {
	Rev    string `json:"rev"`
	Signer string `json:"signer"`
}

// maxSigners bounds the signers file: far more than the releases kept.
const maxSigners = 200

// newSigVerifier loads the keys once to fail at start on a broken file;
// nil cfg means the git server is trusted.
func newSigVerifier(repo *gitsource.Repo, cfg *spec.RepoVerify, stateDir string) (*sigVerifier, error) {
	if cfg == nil {
		return nil, nil
	}
	if _, err := gitsource.LoadTrust(cfg.OpenPGPKeyring, cfg.SSHAllowedSigners); err != nil {
		return nil, err
	}
	return &sigVerifier{repo: repo, cfg: *cfg, signersFile: layout.New(stateDir).Signers()}, nil
}

// Verify re-reads the key files at every revision, so that adding or
// removing a key takes effect without restarting the agent. A key file
// that no longer loads is the node's fault, not the revision's: retried.
func (v *sigVerifier) Verify(ctx context.Context, rev, live string) (string, error) {
	trust, err := gitsource.LoadTrust(v.cfg.OpenPGPKeyring, v.cfg.SSHAllowedSigners)
	if err != nil {
		return "", err
	}
	// A refused signature is a *gitsource.SignatureError, which says it
	// is the revision's fault (RevisionFault): halted, not retried.
	signer, err := v.repo.Verify(ctx, gitsource.VerifyConfig{Trust: trust, All: v.cfg.Require == spec.RequireAll}, rev, live)
	if err != nil {
		return signer, err
	}
	return signer, v.record(rev, signer)
}

func (v *sigVerifier) records() []signerRecord {
	var rs []signerRecord
	if data, err := os.ReadFile(v.signersFile); err == nil {
		json.Unmarshal(data, &rs)
	}
	return rs
}

func (v *sigVerifier) record(rev, signer string) error {
	rs := slices.DeleteFunc(v.records(), func(r signerRecord) bool { return r.Rev == rev })
	rs = append(rs, signerRecord{Rev: rev, Signer: signer})
	if len(rs) > maxSigners {
		rs = rs[len(rs)-maxSigners:]
	}
	data, err := json.Marshal(rs)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(v.signersFile, data, 0o644)
}

// Signer is who signed rev, from the signers file.
func (v *sigVerifier) Signer(rev string) string {
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

// verifyHead is validate --verify: HEAD of dir's repository must be signed
// by a key node.yaml allows.
func verifyHead(dir, nodeFile string, cfg *spec.Node) (string, error) {
	rv := cfg.Repo.Verify
	if rv == nil {
		return "", fmt.Errorf("%s: repo.verify: not set, so there is no key to check HEAD against", nodeFile)
	}
	trust, err := gitsource.LoadTrust(rv.OpenPGPKeyring, rv.SSHAllowedSigners)
	if err != nil {
		return "", err
	}
	rev, signer, err := gitsource.VerifyHead(dir, trust)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("HEAD %s: signed by %s", rev[:12], signer), nil
}

// printSigners is status's line per live revision saying who signed it
// (with repo.verify), once per revision however many nodes run it.
func printSigners(w io.Writer, nodes []cluster.NodeStatus) {
	done := map[string]bool{}
	for _, n := range nodes {
		if n.Signer != "" && !done[n.Rev] {
			done[n.Rev] = true
			fmt.Fprintf(w, "%s signed by %s\n", shortRev(n.Rev), n.Signer)
		}
	}
}

// planSignature is what plan says of rev's signature with repo.verify:
// who signed it, or why the agent will refuse it. It checks rev itself
// only: the CLI's store is not deepened for require: all.
func planSignature(ctx context.Context, cfg *spec.Node, repo *gitsource.Repo, rev string) string {
	rv := cfg.Repo.Verify
	if rv == nil {
		return ""
	}
	trust, err := gitsource.LoadTrust(rv.OpenPGPKeyring, rv.SSHAllowedSigners)
	if err != nil {
		return "cannot check: " + err.Error()
	}
	signer, err := repo.Verify(ctx, gitsource.VerifyConfig{Trust: trust}, rev, "")
	if err != nil {
		return "REFUSED: " + err.Error()
	}
	return "signed by " + signer
}
