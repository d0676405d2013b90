// Package metrics exports what a node's agent does to Prometheus: the live
// revision, rollouts and their outcomes, how long each step took, the
// drained window, the lock wait, halts, the guard's verdict and the repo
// polls. It learns all of it from the statuses the node reports
// (nodestate.Status) and the halts it records, so reconcile knows nothing
// of it; Serve puts the registry on a node-local listener.
//
// The names follow Prometheus's conventions: drover_…_seconds for
// durations (histograms), _total for counters, _timestamp_seconds for
// moments (alert on time() minus it), _info for a label-carrying gauge of 1.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/drover-dev/drover/nodestate"
)

// Outcomes of a rollout, the outcome label of drover_rollouts_total
// (nodestate.TurnOutcome says what each means).
const (
	OutcomeLive       = string(nodestate.TurnLive)
	OutcomeRolledBack = string(nodestate.TurnRolledBack)
	OutcomeFailed     = string(nodestate.TurnFailed)
	OutcomeLockLost   = string(nodestate.TurnLockLost)
	OutcomeRefused    = string(nodestate.TurnRefused)
)

// steps are every step a node reports, for the state-set gauge.
var steps = []nodestate.Step{
	nodestate.StepIdle, nodestate.StepPreparing, nodestate.StepWaiting, nodestate.StepMigrating, nodestate.StepStarting,
	nodestate.StepDraining, nodestate.StepSwitching, nodestate.StepVerifying, nodestate.StepUndraining,
	nodestate.StepRollingBack, nodestate.StepFailed, nodestate.StepPaused, nodestate.StepCanary,
}

var healths = []nodestate.Health{nodestate.HealthOK, nodestate.HealthFailing, nodestate.HealthOut, nodestate.HealthDegraded}

// Metrics is one node's metrics.
type Metrics struct {
	reg  *prometheus.Registry
	node string

	live        *prometheus.GaugeVec
	rollouts    *prometheus.CounterVec
	stepSeconds *prometheus.HistogramVec
	rollout     prometheus.Histogram
	drained     prometheus.Histogram
	lockWait    prometheus.Histogram
	step        *prometheus.GaugeVec
	health      *prometheus.GaugeVec
	halts       prometheus.Counter
	pollOK      prometheus.Gauge
	pollErrors  prometheus.Counter
	fetchErrors prometheus.Counter

	mu sync.Mutex
	// turn says when a turn ends, how and how long it was drained;
	// waitingAt is since when the node waits for the lock (zero: not now).
	turn      nodestate.TurnTracker
	waitingAt time.Time
	liveRev   string
}

// durations are the histograms' buckets: 10 ms to about 11 minutes.
var durations = prometheus.ExponentialBuckets(0.01, 2, 17)

// New returns the metrics of node, with Go's and the process's own.
func New(node string) *Metrics {
	reg := prometheus.NewRegistry()
	c := prometheus.Labels{"node": node}
	f := func(o prometheus.Opts) prometheus.Opts { o.ConstLabels = c; return o }
	m := &Metrics{
		reg: reg, node: node,
		live: prometheus.NewGaugeVec(prometheus.GaugeOpts(f(prometheus.Opts{Name: "drover_live_revision_info",
			Help: "The revision this node serves (value 1, revision in the label)."})), []string{"revision"}),
		rollouts: prometheus.NewCounterVec(prometheus.CounterOpts(f(prometheus.Opts{Name: "drover_rollouts_total",
			Help: "Rollouts of a revision on this node, by outcome: live, rolled_back, failed, lock_lost, refused."})), []string{"outcome"}),
		stepSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "drover_step_duration_seconds", ConstLabels: c,
			Help: "How long each step of a rollout took (the step left).", Buckets: durations}, []string{"step"}),
		rollout: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "drover_rollout_duration_seconds", ConstLabels: c,
			Help: "From the start of preparing a revision to this node serving it, lock wait included.", Buckets: durations}),
		drained: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "drover_drained_seconds", ConstLabels: c,
			Help: "How long this node was out of the load balancer for a rollout (drain to back in).", Buckets: durations}),
		lockWait: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "drover_lock_wait_seconds", ConstLabels: c,
			Help: "How long this node waited for the rollout lock.", Buckets: durations}),
		step: prometheus.NewGaugeVec(prometheus.GaugeOpts(f(prometheus.Opts{Name: "drover_step",
			Help: "The node's current step (1 for the current one, 0 for the others)."})), []string{"step"}),
		health: prometheus.NewGaugeVec(prometheus.GaugeOpts(f(prometheus.Opts{Name: "drover_guard_health",
			Help: "The steady-state guard's verdict (1 for the current one: healthy, failing, out, degraded; all 0 before its first)."})), []string{"health"}),
		halts: prometheus.NewCounter(prometheus.CounterOpts(f(prometheus.Opts{Name: "drover_halts_total",
			Help: "Revisions this node halted (its rollout or preparation of them failed)."}))),
		pollOK: prometheus.NewGauge(prometheus.GaugeOpts(f(prometheus.Opts{Name: "drover_last_successful_poll_timestamp_seconds",
			Help: "When the agent last polled the repo without an error (Unix time)."}))),
		pollErrors: prometheus.NewCounter(prometheus.CounterOpts(f(prometheus.Opts{Name: "drover_poll_errors_total",
			Help: "Polls of the repo that failed."}))),
		fetchErrors: prometheus.NewCounter(prometheus.CounterOpts(f(prometheus.Opts{Name: "drover_fetch_errors_total",
			Help: "Fetches of a revision that failed (retried with backoff)."}))),
	}
	reg.MustRegister(m.live, m.rollouts, m.stepSeconds, m.rollout, m.drained, m.lockWait, m.step, m.health,
		m.halts, m.pollOK, m.pollErrors, m.fetchErrors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Every outcome exists from the start, so rate() sees the first one.
	for _, o := range nodestate.TurnOutcomes {
		m.rollouts.WithLabelValues(string(o))
	}
	m.setStep(nodestate.StepIdle)
	return m
}

// Registry is the Prometheus registry (for tests and other handlers).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in Prometheus's text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

func (m *Metrics) setStep(s nodestate.Step) {
	for _, x := range steps {
		v := 0.0
		if x == s {
			v = 1
		}
		m.step.WithLabelValues(string(x)).Set(v)
	}
}

// Halt counts a halt by this node.
func (m *Metrics) Halt(context.Context, string, string) { m.halts.Inc() }

// Observe takes the node's status change from prev to cur (the same
// status again is a heartbeat or a poll).
func (m *Metrics) Observe(_ context.Context, prev, cur nodestate.Status) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if cur.Rev != m.liveRev {
		if m.liveRev != "" {
			m.live.DeleteLabelValues(m.liveRev)
		}
		if cur.Rev != "" {
			m.live.WithLabelValues(cur.Rev).Set(1)
		}
		m.liveRev = cur.Rev
	}
	for _, h := range healths {
		v := 0.0
		if h == cur.Health {
			v = 1
		}
		m.health.WithLabelValues(string(h)).Set(v)
	}
	polled := !cur.Seen.IsZero() && cur.Seen.After(prev.Seen)
	switch {
	case polled && strings.HasPrefix(cur.Error, "poll repo:"):
		m.pollErrors.Inc()
	case polled:
		m.pollOK.Set(float64(cur.Seen.UnixNano()) / 1e9)
	}
	if prev.Step == cur.Step && prev.Target == cur.Target && prev.Rev == cur.Rev && prev.Error == cur.Error {
		return
	}
	if cur.Error != prev.Error && strings.HasPrefix(cur.Error, "fetch ") {
		m.fetchErrors.Inc()
	}
	m.setStep(cur.Step)
	if prev.Step != cur.Step && !prev.Since.IsZero() && !cur.Since.Before(prev.Since) {
		m.stepSeconds.WithLabelValues(string(prev.Step)).Observe(cur.Since.Sub(prev.Since).Seconds())
	}
	// One rollout at a time runs on a node, so one clock of each kind.
	now := cur.Since
	switch cur.Step {
	case nodestate.StepWaiting:
		if prev.Step == nodestate.StepPreparing {
			m.waitingAt = now
		}
	case nodestate.StepMigrating:
		if !m.waitingAt.IsZero() {
			m.lockWait.Observe(now.Sub(m.waitingAt).Seconds())
			m.waitingAt = time.Time{}
		}
	}
	end, ok := m.turn.Observe(prev, cur, now)
	if !ok {
		return
	}
	m.waitingAt = time.Time{}
	if end.WasDrained {
		m.drained.Observe(end.Drained.Seconds())
	}
	if end.HasRollout {
		m.rollout.Observe(end.Rollout.Seconds())
	}
	if end.Outcome != nodestate.TurnNone {
		m.rollouts.WithLabelValues(string(end.Outcome)).Inc()
	}
}

// Serve listens on addr now (so that a taken port fails the agent's start)
// and serves GET /metrics until ctx ends; stop waits for the server.
func Serve(ctx context.Context, addr string, m *Metrics, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener", "err", err)
		}
	}()
	stopWatch := context.AfterFunc(ctx, func() { _ = srv.Close() })
	log.Info("serving metrics", "addr", ln.Addr().String())
	return func() {
		stopWatch()
		_ = srv.Close()
		<-done
	}, nil
}
