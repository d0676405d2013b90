package main

import (
	"fmt"

	"github.com/drover-dev/drover/gitsource"
	"github.com/drover-dev/drover/spec"
)

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
