package reconcile

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/drover-dev/drover/internal/atomicfile"
)

// journal records, before the node's live state starts to change, which
// release it is leaving and which it is going to, so that an agent killed at
// any instant can tell on restart whether the node may be half of each, and
// put it back on one release. It is a small JSON file written atomically.
type journal struct {
	path string
}

// entry is the content of the journal while a change is in flight.
type entry struct {
	// From is the release live before the change ("" on a first deploy).
	From string `json:"from"`
	// To is the release being put live.
	To   string `json:"to"`
	Step Step   `json:"step"`
	// Drained is true once the node asked the LB to drain it, until it
	// asked to undrain: a restarted agent must not leave it out silently.
	Drained bool `json:"drained"`
	// Verified is the release that passed its checks and is re-joining the
	// LB (Step undraining): To after a rollout, From after a rollback.
	Verified string    `json:"verified,omitempty"`
	Started  time.Time `json:"started"`
	// Handover is "overlap" when the new release's instances were started
	// beside the old ones (handover.go); FromWorkers and ToWorkers then
	// say where each release's instances run, so that a restarted agent
	// puts the node on exactly one of them.
	Handover    string     `json:"handover,omitempty"`
	FromWorkers *placement `json:"fromWorkers,omitempty"`
	ToWorkers   *placement `json:"toWorkers,omitempty"`
	// How often agents stopped in this revision's changes is counted
	// apart (crashes.go): Recover clears the journal.
	// Held is a change that failed with rollout.onFailure: halt: the
	// node stays drained on To for inspection, and a restarted agent
	// (a package upgrade, a reboot) keeps it so instead of recovering;
	// the next revision rolls out from there.
	Held bool `json:"held,omitempty"`
}

// read returns the entry in flight, or nil when the journal is clear.
func (j journal) read() (*entry, error) {
	data, err := os.ReadFile(j.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read journal: %w", err)
	}
	var e entry
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("journal %s is corrupt (%v); inspect it, then remove it to let the agent start", j.path, err)
	}
	return &e, nil
}

func (j journal) write(e *entry) error {
	data, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(j.path, data, 0o644); err != nil {
		return fmt.Errorf("write journal: %w", err)
	}
	return nil
}

func (j journal) clear() error {
	if err := os.Remove(j.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("clear journal: %w", err)
	}
	return atomicfile.SyncDir(filepath.Dir(j.path))
}
