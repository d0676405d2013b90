// Package nodestate is the words a node's agent and the cluster share about
// a node: the steps of its rollout, the status it reports, the guard's
// verdict on its health, a revision's canary record and an operator's pin.
// The agent (reconcile) writes them, the cluster (cluster) keeps and reads
// them, the metrics and the CLI show them; the rule of which nodes count
// as out of service lives here too, and when a node's turn ends and how
// (TurnTracker), so that no one of those packages decides either alone. It imports nothing of drover's, so every package may use
// it without importing another.
package nodestate

import "time"

// Step names a step of a node's rollout. They are written to the journal,
// the node's status and the events, so they are part of drover's contract.
type Step string

// The steps, in rollout order.
const (
	StepIdle        Step = "idle"
	StepPreparing   Step = "preparing"
	StepWaiting     Step = "waiting" // for the rollout lock or capacity
	StepMigrating   Step = "migrating"
	StepStarting    Step = "starting" // the new release's instances, beside the live ones (overlap)
	StepDraining    Step = "draining"
	StepSwitching   Step = "switching"
	StepVerifying   Step = "verifying"
	StepRollingBack Step = "rolling-back"
	StepUndraining  Step = "undraining"
	StepFailed      Step = "failed"
	StepPaused      Step = "paused"
)

// StepCanary is a node serving a revision as the canary, in service.
const StepCanary Step = "canary"

// drained says whether a node at step s may be out of the load balancer.
func (s Step) drained() bool {
	switch s {
	case StepDraining, StepSwitching, StepVerifying, StepRollingBack, StepUndraining:
		return true
	}
	return false
}

// Health is the guard's verdict on the node; it is part of the node's
// status and of drover's contract.
type Health string

// The guard's verdicts.
const (
	// HealthUnknown: no verdict yet (the guard is off or has not run).
	HealthUnknown Health = ""
	// HealthOK: the live release passes every check.
	HealthOK Health = "healthy"
	// HealthFailing: checks fail, not yet UnhealthyAfter rounds in a row;
	// the node is still in the LB.
	HealthFailing Health = "failing"
	// HealthOut: the guard took the node out of the LB.
	HealthOut Health = "out"
	// HealthDegraded: checks fail but the node stays in the LB, because
	// taking it out would leave more than maxUnavailable nodes out (when
	// every node fails alike, an LB with no healthy node serves nobody).
	HealthDegraded Health = "degraded"
)

// Status is what a node says about itself.
type Status struct {
	Node string `json:"node"`
	// Rev is the live release.
	Rev string `json:"rev"`
	// Target is the revision the node is moving to, if any.
	Target string    `json:"target,omitempty"`
	Step   Step      `json:"step"`
	Error  string    `json:"error,omitempty"`
	Since  time.Time `json:"since"`
	// Seen is when the node last checked the repo.
	Seen time.Time `json:"seen"`
	// Health is the guard's verdict between rollouts, HealthWhy the
	// failing check and why, HealthSince when the verdict last changed.
	Health      Health    `json:"health,omitempty"`
	HealthWhy   string    `json:"healthWhy,omitempty"`
	HealthSince time.Time `json:"healthSince,omitzero"`
	// Signer signed the live release (with repo.verify).
	Signer string `json:"signer,omitempty"`
	// Canary is the canary this node runs or waits for, in one line
	// (Canary.Summary).
	Canary string `json:"canary,omitempty"`
}

// OutOfService reports whether a node that says s counts against the
// rollout's maxUnavailable, and why: it failed its rollout, the guard took
// it out, or it is at a step during which it may be out of the load
// balancer. A node whose agent went silent counts too, but only the
// cluster, which sees the heartbeats, can tell that.
func (s Status) OutOfService() (why string, out bool) {
	switch {
	case s.Step == StepFailed:
		return "failed", true
	case s.Health == HealthOut:
		return "out (guard: " + s.HealthWhy + ")", true
	case s.Step.drained():
		return string(s.Step), true
	}
	return "", false
}

// NodeStatus is a registered node as the cluster sees it: what it says
// (Status) and whether its heartbeat holds. It lives here, not in cluster,
// so that packages which read the cluster's nodes (notify's Alerter) need
// not import cluster.
type NodeStatus struct {
	Status
	// Beat is the node's last heartbeat, by its own clock.
	Beat time.Time `json:"beat"`
	// Alive is true while the heartbeat has not expired.
	Alive bool `json:"alive"`
}

// OutOfService reports whether the node counts against maxUnavailable,
// and why: silent (its heartbeat expired), or out by what it says itself
// (Status.OutOfService).
func (n NodeStatus) OutOfService() (why string, out bool) {
	if !n.Alive {
		return "silent since " + n.Beat.Local().Format(time.TimeOnly), true
	}
	return n.Status.OutOfService()
}

// Pin is a revision an operator chose (drover pin, drover rollback) instead
// of the branch head. A pinned revision rolls out exactly like a new commit:
// prepared before the lock, one node at a time, drained, verified,
// undrained. Migrations are never run backwards: a pin to an older revision
// keeps the schema its newer revisions migrated to.
type Pin struct {
	Rev    string    `json:"rev"`
	Reason string    `json:"reason,omitempty"`
	By     string    `json:"by"`
	At     time.Time `json:"at"`
}
