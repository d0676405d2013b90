package nodestate

import "testing"

// The steps during which a node may be out of the load balancer, a failed
// rollout and the guard's out count against maxUnavailable; the others do
// not, whatever else the node says.
func TestOutOfService(t *testing.T) {
	out := map[Step]bool{StepFailed: true, StepDraining: true, StepSwitching: true, StepVerifying: true,
		StepRollingBack: true, StepUndraining: true}
	for _, step := range []Step{StepIdle, StepPreparing, StepWaiting, StepMigrating, StepStarting, StepDraining,
		StepSwitching, StepVerifying, StepRollingBack, StepUndraining, StepFailed, StepPaused, StepCanary} {
		why, isOut := Status{Step: step, Health: HealthDegraded}.OutOfService()
		if isOut != out[step] || isOut && why != string(step) {
			t.Errorf("%s: OutOfService = %q, %v; want out %v", step, why, isOut, out[step])
		}
	}
	if why, isOut := (Status{Step: StepIdle, Health: HealthOut, HealthWhy: "web: 502"}).OutOfService(); !isOut || why != "out (guard: web: 502)" {
		t.Errorf("taken out by the guard: OutOfService = %q, %v", why, isOut)
	}
}
