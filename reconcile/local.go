package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/drover-dev/drover/internal/atomicfile"
	"github.com/drover-dev/drover/internal/layout"

	"github.com/drover-dev/drover/spec"
)

// The single-node forms of the cluster's collaborators (`cluster: none`):
// one node needs no lock, has no load balancer to leave and keeps its
// registry in its state dir.

type localLock struct{}

func (localLock) Acquire(ctx context.Context, _ string, _ int) (context.Context, func(context.Context) error, error) {
	return ctx, func(context.Context) error { return nil }, nil
}

type noCapacityLimit struct{}

func (noCapacityLimit) WaitCapacity(context.Context, int, func(string)) error { return nil }

type noDrain struct{}

func (noDrain) Drain(context.Context, time.Duration) error { return nil }
func (noDrain) Undrain(context.Context) error              { return nil }

type noMigrations struct{}

func (noMigrations) Migrate(context.Context, string, *spec.Spec, fs.FS) error { return nil }
func (noMigrations) Check(*spec.Spec, fs.FS) error                            { return nil }

// FileRegistry is the registry of a single node: its status and the halted
// revisions are JSON files in the state dir, read by `drover status`.
type FileRegistry struct {
	Dir string
	mu  sync.Mutex
}

// Halt is one halted revision.
type Halt struct {
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// Report writes the node's status.
func (r *FileRegistry) Report(_ context.Context, st Status) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(layout.New(r.Dir).Status(), data, 0o644)
}

// Halted says whether rev is in the halted file.
func (r *FileRegistry) Halted(_ context.Context, rev string) (string, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h, err := r.read()
	if err != nil {
		return "", false, err
	}
	if e, ok := h[rev]; ok {
		return e.Reason, true, nil
	}
	return "", false, nil
}

// Halt adds rev to the halted file.
func (r *FileRegistry) Halt(_ context.Context, rev, reason string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	h, err := r.read()
	if err != nil {
		return err
	}
	h[rev] = Halt{Reason: reason, At: time.Now().UTC()}
	return r.write(h)
}

// Clear removes rev from the halted file (an operator's decision).
func (r *FileRegistry) Clear(rev string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	h, err := r.read()
	if err != nil {
		return err
	}
	delete(h, rev)
	return r.write(h)
}

// HaltedAll returns every halted revision.
func (r *FileRegistry) HaltedAll() (map[string]Halt, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.read()
}

// ReadStatus returns the last status the node wrote.
func (r *FileRegistry) ReadStatus() (Status, error) {
	var st Status
	data, err := os.ReadFile(layout.New(r.Dir).Status())
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(data, &st)
}

func (r *FileRegistry) read() (map[string]Halt, error) {
	h := map[string]Halt{}
	data, err := os.ReadFile(layout.New(r.Dir).Halted())
	if errors.Is(err, os.ErrNotExist) {
		return h, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, &h); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Base(layout.New(r.Dir).Halted()), err)
	}
	return h, nil
}

func (r *FileRegistry) write(h map[string]Halt) error {
	data, err := json.MarshalIndent(h, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(layout.New(r.Dir).Halted(), data, 0o644)
}
