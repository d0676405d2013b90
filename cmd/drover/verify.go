package main

import (
	"fmt"
	"io"

	"github.com/drover-dev/drover/cluster"
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
