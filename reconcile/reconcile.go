// Package reconcile is a node's rollout state machine: the only package that
// knows the order of the steps. For each new revision of the config repo it
// prepares the release off the critical path, then takes its turn (lock,
// migrations, drain), switches sites, nginx and workers, verifies health,
// and either re-joins or rolls back to the release it left. A crash journal
// lets an agent killed at any instant put the node back on one release.
//
// Every collaborator is a small interface declared here; the agent wires in
// gitsource, artifacts, nginxconf, units, cluster, lbdrain and migrate.
package reconcile

import (
	"context"
	"io/fs"
	"time"

	"github.com/drover-dev/drover/spec"
)

// Source is the config repo.
type Source interface {
	// Remote returns the commit the watched branch points at, cheaply.
	Remote(ctx context.Context) (string, error)
	// Fetch makes rev available locally.
	Fetch(ctx context.Context, rev string) error
	// Tree returns dir of rev's tree.
	Tree(ctx context.Context, rev, dir string) (fs.FS, error)
}

// Releases is the release store on this node.
type Releases interface {
	// Prepare materializes rev (sites, bundles, install steps) without
	// touching the live release; it is idempotent.
	Prepare(ctx context.Context, rev string, specBytes []byte, sp *spec.Spec, fsys fs.FS) error
	// Current is the live release ("" for none).
	Current() (string, error)
	// Switch atomically makes rev the live release.
	Switch(rev string) error
	// SpecOf returns the drover.yaml bytes a release was prepared with.
	SpecOf(rev string) ([]byte, error)
	// Prune removes old releases, keeping the newest keep.
	Prune(ctx context.Context, keep int) error
}

// WebServer is nginx, seen from the rollout.
type WebServer interface {
	// Check renders the config for sp and tests it without touching the
	// live config.
	Check(ctx context.Context, sp *spec.Spec) error
	// Apply installs the config for sp and reloads; on failure the live
	// config is unchanged.
	Apply(ctx context.Context, sp *spec.Spec) error
}

// Supervisor runs the workers of the live release.
type Supervisor interface {
	// Apply brings the running workers to exactly ws, restarting each
	// instance on the live release and waiting until it is healthy.
	Apply(ctx context.Context, ws []spec.Worker, liveDir string) error
}

// Lock is the cluster's rollout lock.
type Lock interface {
	// Acquire waits for one of slots slots to upgrade this node to rev. The
	// returned context is cancelled when the lock is lost; the node must
	// then go back to a safe state.
	Acquire(ctx context.Context, rev string, slots int) (held context.Context, release func(context.Context) error, err error)
}

// Capacity guards invariant 1: it returns when this node may leave service
// (counting itself, at most maxUnavailable registered nodes are out), and
// calls waiting with the reason while it cannot.
type Capacity interface {
	WaitCapacity(ctx context.Context, maxUnavailable int, waiting func(reason string)) error
}

// Drainer takes this node out of the load balancer and back.
type Drainer interface {
	// Drain returns once the LB sends no new requests and the in-flight
	// ones finished, or inflight (the spec's drainTimeout) passed.
	Drain(ctx context.Context, inflight time.Duration) error
	// Undrain returns once the LB sends the node traffic again.
	Undrain(ctx context.Context) error
}

// drainReporter is a Drainer that says why its last Drain went on at its
// bound ("" when it did not); the rollout records it as an event.
type drainReporter interface {
	LastDrainIncomplete() string
}

// Migrator runs a revision's schema migrations exactly once cluster-wide.
type Migrator interface {
	// Check loads and checks rev's migration files without touching the
	// database, during prepare: a bad file halts the revision before the
	// node waits for its turn.
	Check(sp *spec.Spec, fsys fs.FS) error
	Migrate(ctx context.Context, rev string, sp *spec.Spec, fsys fs.FS) error
}

// Registry is where a node reports itself and learns which revisions are
// halted. The single-node registry keeps both in the state dir.
type Registry interface {
	// Report publishes the node's state.
	Report(ctx context.Context, st Status) error
	// Halted says whether rev must not be applied, and why.
	Halted(ctx context.Context, rev string) (reason string, halted bool, err error)
	// Halt marks rev failed for every node.
	Halt(ctx context.Context, rev, reason string) error
}
