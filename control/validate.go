package control

import (
	"fmt"
	"path/filepath"

	"github.com/drover-dev/drover/gitsource"
	"github.com/drover-dev/drover/migrate"
	"github.com/drover-dev/drover/secretenv"
	"github.com/drover-dev/drover/spec"
)

// Validation is what drover validate found in a config directory.
type Validation struct {
	File     string     // DIR/drover.yaml
	Spec     *spec.Spec // nil when it did not load
	Problems []error    // each names its file, line and field
	// Warnings are the migrations' destructive statements: reported, not
	// refused, since workers of the previous revision still run against
	// the new schema during a rollout.
	Warnings []string
	Signed   string // with verify: "HEAD rev: signed by who"
}

// Validate checks dir (a checkout of the directory holding drover.yaml)
// as an agent would before it prepares a release: drover.yaml against
// node.yaml's policy (the default one when nodeFile is ""), the workers'
// secretEnv files (encrypted, inside dir) and the migrations. With verify,
// HEAD of dir's repository must also be signed by a key of node.yaml's
// repo.verify.
func Validate(dir, nodeFile string, verify bool) Validation {
	v := Validation{File: filepath.Join(dir, spec.FileName)}
	var node *spec.Node
	policy := spec.DefaultPolicy()
	if nodeFile != "" {
		var err error
		if node, err = spec.LoadNode(nodeFile); err != nil {
			v.Problems = append(v.Problems, err)
		} else {
			policy = node.Policy
		}
	}
	sp, err := spec.LoadDir(dir, policy)
	if err != nil {
		v.Problems = append(v.Problems, err)
	}
	if sp != nil {
		v.Spec = sp
		v.Problems = append(v.Problems, secretenv.CheckFiles(v.File, dir, sp)...)
	}
	if sp != nil && sp.Migrations != nil {
		if v.Warnings, err = migrate.LintDir(dir, sp); err != nil {
			v.Problems = append(v.Problems, err)
		}
	}
	if node != nil && verify {
		if v.Signed, err = verifyHead(dir, nodeFile, node); err != nil {
			v.Problems = append(v.Problems, err)
		}
	}
	return v
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
