package reconcile

import (
	"context"
	"fmt"
)

// Verifier decides whether a fetched revision may go live at all, before
// anything is prepared: with node.yaml's repo.verify, only revisions signed
// by an allowed key may. It is optional (nil: every revision may).
type Verifier interface {
	// Verify returns who signed rev. live is the live release ("" for
	// none), where a check of the whole range since the last verified
	// revision starts. A refusal (unsigned, bad signature, unknown,
	// revoked or expired key) must be marked with BadRevision; any other
	// error (a fetch of history that failed) is retried with backoff.
	Verify(ctx context.Context, rev, live string) (signer string, err error)
	// Signer is who signed rev when Verify accepted it ("" when unknown),
	// for the status; it survives the agent's restarts.
	Signer(rev string) string
}

// verifySignature runs the Verifier, if any, on a fetched rev.
func (n *Node) verifySignature(ctx context.Context, rev string) error {
	if n.d.Verifier == nil {
		return nil
	}
	live, err := n.d.Releases.Current()
	if err != nil {
		return fmt.Errorf("live release: %w", err)
	}
	signer, err := n.d.Verifier.Verify(ctx, rev, live)
	if err != nil {
		return fmt.Errorf("verify signature of %s: %w", short(rev), err)
	}
	n.log.Info("signature verified", "rev", short(rev), "signer", signer)
	return nil
}
