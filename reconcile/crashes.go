package reconcile

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/drover-dev/drover/internal/atomicfile"
)

// maxCrashes is how many times an agent may stop mid-change putting one
// revision live on a node before Recover halts the revision instead of
// letting the next sync try it again. A revision that kills the agent (a
// worker that exhausts the node's memory, an nginx config that wedges the
// host) would otherwise be retried for ever, each try a drained window.
// It stays well above what an operator's restarts produce: the lab's
// agent-killed-at-each-step scenario reaches 3 on one node.
const maxCrashes = 5

// crashes counts, in a small JSON file of the state dir, how often an agent
// stopped mid-change putting a revision live. The journal cannot: Recover
// clears it. One revision is counted at a time (a change to another one
// starts afresh), and the count is dropped once the revision is live.
type crashes struct {
	path string
}

type crashCount struct {
	Rev   string `json:"rev"`
	Count int    `json:"count"`
	// Step is where the last agent stopped, At when Recover found it.
	Step Step      `json:"step"`
	At   time.Time `json:"at"`
}

// add counts one more stop of the agent in e's change and returns the count.
func (c crashes) add(e *entry, now time.Time) (crashCount, error) {
	cc := c.read()
	if cc.Rev != e.To {
		cc = crashCount{Rev: e.To}
	}
	cc.Count++
	cc.Step, cc.At = e.Step, now
	data, err := json.Marshal(cc)
	if err != nil {
		return cc, err
	}
	if err := atomicfile.WriteFile(c.path, data, 0o644); err != nil {
		return cc, fmt.Errorf("count the agent's stop mid-change: %w", err)
	}
	return cc, nil
}

// read returns the count kept; an unreadable file counts as none (it only
// ever holds back a retry).
func (c crashes) read() crashCount {
	var cc crashCount
	data, err := os.ReadFile(c.path)
	if err == nil && len(data) <= 4096 {
		_ = json.Unmarshal(data, &cc)
	}
	return cc
}

// clear drops the count of rev, which went live.
func (c crashes) clear(rev string) error {
	if c.read().Rev != rev {
		return nil
	}
	if err := os.Remove(c.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// error is what the halt of a revision that stopped the agent too often
// says.
func (cc crashCount) error() error {
	return fmt.Errorf("the agent stopped %d times while putting %s live on this node (the last during %s); halted rather than tried again: the agent's log and the journal (journalctl -u drover) say what stopped it",
		cc.Count, short(cc.Rev), cc.Step)
}
