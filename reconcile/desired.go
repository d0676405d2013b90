package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/drover-dev/drover/internal/atomicfile"
	"github.com/drover-dev/drover/internal/layout"
)

// Pinner says whether the cluster is pinned. The single-node form is the
// FileRegistry (layout.Pin in the state dir); cluster.Cluster keeps it in Redis.
type Pinner interface {
	Pinned(ctx context.Context) (Pin, bool, error)
}

// Pinned reads the state dir's pin.
func (r *FileRegistry) Pinned(context.Context) (Pin, bool, error) {
	var p Pin
	data, err := os.ReadFile(layout.New(r.Dir).Pin())
	if errors.Is(err, os.ErrNotExist) {
		return p, false, nil
	}
	if err != nil {
		return p, false, fmt.Errorf("read pin: %w", err)
	}
	if err := json.Unmarshal(data, &p); err != nil || p.Rev == "" {
		// A pin that cannot be read must not silently become "follow the
		// branch": the node stays where it is until the file is fixed.
		return p, false, fmt.Errorf("read pin: %s is not a pin (%v)", filepath.Base(layout.New(r.Dir).Pin()), err)
	}
	return p, true, nil
}

// SetPin writes the state dir's pin.
func (r *FileRegistry) SetPin(p Pin) error {
	data, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(layout.New(r.Dir).Pin(), data, 0o644); err != nil {
		return fmt.Errorf("pin %s: %w", short(p.Rev), err)
	}
	return nil
}

// Unpin removes the state dir's pin.
func (r *FileRegistry) Unpin() error {
	if err := os.Remove(layout.New(r.Dir).Pin()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("unpin: %w", err)
	}
	return nil
}

// desired returns the revision the node must be on: the pin when one is
// set, else head (the branch). pollErr is Remote's error: a pinned node does
// not need the forge to go back to a revision it has, so a failing poll
// stops only a node that follows the branch. A pin that cannot be read is
// an error, never a reason to follow the branch.
func (n *Node) desired(ctx context.Context, head string, pollErr error) (rev string, pinned bool, err error) {
	p, pinned, err := n.d.Pinner.Pinned(ctx)
	if err != nil {
		return "", false, fmt.Errorf("read pin: %w", err)
	}
	if !pinned {
		return head, false, pollErr
	}
	if pollErr != nil {
		n.log.Warn("repo poll failed; staying on the pin", "pin", short(p.Rev), "err", pollErr)
	}
	return p.Rev, true, nil
}

// prepareAhead prepares head while the cluster is pinned to another
// revision: it is fetched, checked and materialized, but not applied, so
// that unpin rolls it out without the slow part. Each head is prepared
// once; a failure backs off like any preparation, and a revision fault
// halts it as it would unpinned.
func (n *Node) prepareAhead(ctx context.Context, head string) {
	cur, err := n.d.Releases.Current()
	if err != nil || head == "" || head == cur || head == n.ahead {
		return
	}
	if _, halted, err := n.d.Registry.Halted(ctx, head); err != nil || halted {
		return
	}
	if r, ok := n.retry[head]; ok && time.Now().Before(r.next) {
		return
	}
	n.setStep(ctx, StepPreparing, head, nil)
	if _, _, err := n.prepare(ctx, head); err != nil {
		if IsBadRevision(err) {
			// Halt it as an unpinned node would, but the node still
			// serves the pin: it is idle, not failed.
			n.log.Error("branch head failed its preparation; halting it", "rev", short(head), "err", err)
			if herr := n.d.Registry.Halt(context.WithoutCancel(ctx), head, err.Error()); herr != nil {
				n.log.Error("halt revision", "rev", short(head), "err", herr)
			}
			n.setStep(ctx, StepIdle, "", err)
			return
		}
		n.backoff(head)
		n.setStep(ctx, StepIdle, "", fmt.Errorf("prepare the branch head %s while pinned: %w", short(head), err))
		return
	}
	delete(n.retry, head)
	n.ahead = head
	n.setStep(ctx, StepIdle, "", nil)
	n.log.Info("branch head prepared; not applied while pinned", "rev", short(head))
}
