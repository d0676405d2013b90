package cluster

import (
	"context"
	"log/slog"
	"time"

	"github.com/drover-dev/drover/nodestate"
)

// HistoryWriter is what a HistoryRecorder writes to: the cluster's History,
// or a FileHistory without a cluster.
type HistoryWriter interface {
	Seen(ctx context.Context, meta RevisionMeta) error
	Node(ctx context.Context, rev string, run NodeRun) error
	HaltRev(ctx context.Context, h Halt) error
}

// CommitLookup returns what a revision's commit is: its Author, Committer
// and Subject (the rest is ignored). It returns meta rather than a
// gitsource.Commit so that cluster does not depend on the git client.
type CommitLookup func(ctx context.Context, rev string) (RevisionMeta, error)

// HistoryRecorder writes what this node does with each revision into the
// history, from the node's status changes (Observe) and halts (Halt). It
// is not safe for concurrent use: its caller hands it one change at a
// time, in order, as the rollout reports them.
type HistoryRecorder struct {
	hist   HistoryWriter
	node   string
	commit CommitLookup
	signer func(rev string) string
	log    *slog.Logger

	// known: revisions whose commit details this recorder wrote; seen:
	// those it wrote without them (the lookup failed; it is tried again
	// at each change, written only once it succeeds); turn: the node's
	// turn so far, the same reading of the statuses as the metrics' and
	// the alerts'. Rollout goroutine only.
	known, seen map[string]bool
	turn        nodestate.TurnTracker
	// pending are the writes that failed, oldest first (do).
	pending []func(context.Context) error
}

// NewHistoryRecorder returns a recorder of node's runs into hist. commit
// looks up a revision's commit details; signer, when not nil, says who
// signed a revision (repo.verify).
func NewHistoryRecorder(hist HistoryWriter, node string, commit CommitLookup, signer func(rev string) string, log *slog.Logger) *HistoryRecorder {
	return &HistoryRecorder{hist: hist, node: node, commit: commit, signer: signer, log: log, known: map[string]bool{}, seen: map[string]bool{}}
}

// historyTimeout bounds each history write: a slow Redis must not hold up
// a rollout for the sake of its record.
const historyTimeout = 2 * time.Second

// Observe takes the node's status change from prev to cur.
func (h *HistoryRecorder) Observe(ctx context.Context, prev, cur nodestate.Status) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), historyTimeout)
	defer cancel()
	h.flush(ctx)
	now := time.Now().UTC()
	if t := cur.Target; t != "" && !h.known[t] {
		// FirstSeen is now, not when a write kept for a retry lands.
		meta := RevisionMeta{Rev: t, FirstSeen: now}
		if c, err := h.commit(ctx, t); err == nil {
			meta.Author, meta.Committer, meta.Subject = c.Author, c.Committer, c.Subject
			if h.signer != nil {
				meta.Signature = h.signer(t)
			}
			h.known[t] = true
		}
		if h.known[t] || !h.seen[t] {
			h.seen[t] = true
			h.do(ctx, func(ctx context.Context) error { return h.hist.Seen(ctx, meta) })
		}
	}
	if end, ok := h.turn.Observe(prev, cur, now); ok {
		h.record(ctx, end, now)
		return
	}
	// A revision refused before the node left the LB (a bad spec or
	// artifact at prepare, a failed migration): the node never switched,
	// so its run is a failure with nothing rolled back. A check that
	// failed on the new release is not recorded here: the turn's end
	// (rolled back, or the way back failing too) says what became of it.
	if cur.Step == nodestate.StepFailed && cur.Target != "" && cur.Rev != cur.Target &&
		prev.Step != nodestate.StepRollingBack && prev.Step != cur.Step {
		h.do(ctx, func(ctx context.Context) error {
			return h.hist.Node(ctx, cur.Target, NodeRun{Node: h.node, Failed: now, Error: cur.Error})
		})
	}
}

// record writes the run of a turn that ended. A turn that ended with no
// rollout (an error while preparing or waiting) leaves no run: the
// revision is tried again, or its halt is recorded by Halt.
func (h *HistoryRecorder) record(ctx context.Context, end nodestate.TurnEnd, now time.Time) {
	if end.Target == "" {
		return
	}
	run := NodeRun{Node: h.node, Drained: end.Drained, Error: end.Error}
	switch end.Outcome {
	case nodestate.TurnLive:
		run.Live, run.From, run.Error = now, end.From, ""
	case nodestate.TurnRolledBack, nodestate.TurnLockLost:
		// The lock lost: the node went back to the release it left and
		// will try the revision again; the old release did not go live
		// anew, so nothing is recorded for it.
		run.Failed, run.RolledBack, run.From = now, true, end.From
	case nodestate.TurnFailed, nodestate.TurnRefused:
		run.Failed = now
	default:
		return
	}
	h.do(ctx, func(ctx context.Context) error { return h.hist.Node(ctx, end.Target, run) })
}

// Halt records that this node halted rev for reason.
func (h *HistoryRecorder) Halt(ctx context.Context, rev, reason string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), historyTimeout)
	defer cancel()
	h.do(ctx, func(ctx context.Context) error {
		return h.hist.HaltRev(ctx, Halt{Rev: rev, Reason: reason, Node: h.node, At: time.Now().UTC()})
	})
}

// maxPending bounds the history writes kept while Redis is unreachable.
const maxPending = 200

// do runs a history write after those still pending, in order; a write
// that fails (Redis failing over, say) is kept and tried again at the next
// status change or poll, so the record of what happened during an outage
// is not lost. Writes are idempotent, so a retry of one that did land
// is harmless.
func (h *HistoryRecorder) do(ctx context.Context, write func(context.Context) error) {
	h.pending = append(h.pending, write)
	if len(h.pending) > maxPending {
		h.log.Warn("history writes pending too long; dropping the oldest", "dropped", len(h.pending)-maxPending)
		h.pending = h.pending[len(h.pending)-maxPending:]
	}
	h.flush(ctx)
}

func (h *HistoryRecorder) flush(ctx context.Context) {
	for len(h.pending) > 0 {
		if err := h.pending[0](ctx); err != nil {
			h.log.Warn("record history; will retry", "pending", len(h.pending), "err", err)
			return
		}
		h.pending = h.pending[1:]
	}
}
