package reconcile

import "github.com/drover-dev/drover/nodestate"

// The words this package shares with the cluster about a node live in
// package nodestate; these are their names here, so that the state machine
// reads in its own words.

// Step names a step of a node's rollout (nodestate.Step).
type Step = nodestate.Step

// The steps, in rollout order.
const (
	StepIdle        = nodestate.StepIdle
	StepPreparing   = nodestate.StepPreparing
	StepWaiting     = nodestate.StepWaiting
	StepMigrating   = nodestate.StepMigrating
	StepStarting    = nodestate.StepStarting
	StepDraining    = nodestate.StepDraining
	StepSwitching   = nodestate.StepSwitching
	StepVerifying   = nodestate.StepVerifying
	StepRollingBack = nodestate.StepRollingBack
	StepUndraining  = nodestate.StepUndraining
	StepFailed      = nodestate.StepFailed
	StepPaused      = nodestate.StepPaused
	StepCanary      = nodestate.StepCanary
)

// Status is what a node says about itself (nodestate.Status).
type Status = nodestate.Status

// Health is the guard's verdict on the node (nodestate.Health).
type Health = nodestate.Health

// The guard's verdicts.
const (
	HealthUnknown  = nodestate.HealthUnknown
	HealthOK       = nodestate.HealthOK
	HealthFailing  = nodestate.HealthFailing
	HealthOut      = nodestate.HealthOut
	HealthDegraded = nodestate.HealthDegraded
)

// Canary is a revision's canary record (nodestate.Canary).
type Canary = nodestate.Canary

// CanaryState is where a canary record is (nodestate.CanaryState).
type CanaryState = nodestate.CanaryState

// The canary record's states.
const (
	CanaryObserving = nodestate.CanaryObserving
	CanaryPassed    = nodestate.CanaryPassed
	CanaryPromoted  = nodestate.CanaryPromoted
	CanaryFailed    = nodestate.CanaryFailed
	CanaryAborted   = nodestate.CanaryAborted
)

// Pin is a revision an operator chose instead of the branch head
// (nodestate.Pin).
type Pin = nodestate.Pin

// pct writes a rate as the canary's summary does.
func pct(r float64) string { return nodestate.FormatRate(r) }
