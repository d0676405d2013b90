package reconcile

import (
	"testing"
	"time"

	"github.com/drover-dev/drover/health"
)

// BenchmarkGuardRound is one round of the guard on a healthy node: the probe
// of a worker instance (a real HTTP server on loopback, over the kept-alive
// connection), the verdict and the drift comparison, with the other parts in
// memory. The whole idle agent's guard cost, with nginx and the sites, is
// BenchmarkAgentIdle's drover against its noguard variant.
func BenchmarkGuardRound(b *testing.B) {
	gc := GuardConfig{Interval: time.Hour, UnhealthyAfter: 3, HealthyAfter: 3, RestartAfter: time.Hour}
	r := newGuardRig(b, gc, true)
	g := &guard{failingSince: map[string]time.Time{}, prober: health.NewProber()}
	defer g.prober.Close()
	b.ReportAllocs()
	for b.Loop() {
		r.n.guardRound(b.Context(), gc, g)
	}
	if st := r.n.Status(); st.Health != HealthOK {
		b.Fatalf("health %q after the rounds: %s", st.Health, st.HealthWhy)
	}
}
