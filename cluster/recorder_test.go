package cluster

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	"github.com/drover-dev/drover/nodestate"
)

// TestHistoryRecorderRuns feeds the recorder the statuses a node reports
// for each way a turn ends and checks the run it records for each revision
// in a real FileHistory: the same reading of the statuses as the metrics'.
func TestHistoryRecorderRuns(t *testing.T) {
	type st = nodestate.Status
	forward := func(from, to string) []st {
		return []st{
			{Step: nodestate.StepIdle, Rev: from},
			{Step: nodestate.StepPreparing, Rev: from, Target: to},
			{Step: nodestate.StepWaiting, Rev: from, Target: to},
			{Step: nodestate.StepMigrating, Rev: from, Target: to},
			{Step: nodestate.StepDraining, Rev: from, Target: to},
			{Step: nodestate.StepSwitching, Rev: from, Target: to},
		}
	}
	for _, c := range []struct {
		name  string
		steps []st
		// want is each revision's run on the node ("" for none).
		want map[string]string
	}{
		{"live", append(forward("A", "B"),
			st{Step: nodestate.StepVerifying, Rev: "B", Target: "B"},
			st{Step: nodestate.StepUndraining, Rev: "B", Target: "B"},
			st{Step: nodestate.StepIdle, Rev: "B"}),
			map[string]string{"A": "", "B": "live from A, drained"}},
		// The lock lost mid-turn: the node goes back to A, which did not
		// go live anew (a run for it would also bring A back into a
		// history that lost it in a Redis failover, as first seen now).
		{"lock lost", append(forward("A", "B"),
			st{Step: nodestate.StepRollingBack, Rev: "B", Target: "A"},
			st{Step: nodestate.StepIdle, Rev: "A", Error: "rollout lock lost during switching"}),
			map[string]string{"A": "", "B": "failed, rolled back to A, drained"}},
		{"failed check rolled back", append(forward("A", "B"),
			st{Step: nodestate.StepVerifying, Rev: "B", Target: "B"},
			st{Step: nodestate.StepFailed, Rev: "B", Target: "B", Error: "check web: 502"},
			st{Step: nodestate.StepRollingBack, Rev: "B", Target: "A"},
			st{Step: nodestate.StepFailed, Rev: "A", Target: "B", Error: "check web: 502"}),
			map[string]string{"A": "", "B": "failed, rolled back to A, drained"}},
		// Refused at prepare: nothing switched, nothing rolled back.
		{"refused at prepare", []st{
			{Step: nodestate.StepIdle, Rev: "A"},
			{Step: nodestate.StepPreparing, Rev: "A", Target: "B"},
			{Step: nodestate.StepFailed, Rev: "A", Target: "B", Error: "drover.yaml:3: bad"}},
			map[string]string{"A": "", "B": "failed"}},
		{"overlap refused before the drain", []st{
			{Step: nodestate.StepIdle, Rev: "A"},
			{Step: nodestate.StepPreparing, Rev: "A", Target: "B"},
			{Step: nodestate.StepStarting, Rev: "A", Target: "B"},
			{Step: nodestate.StepFailed, Rev: "A", Target: "B", Error: "never healthy"}},
			map[string]string{"A": "", "B": "failed"}},
		// A fetch error leaves no run: the revision is tried again.
		{"prepare error", []st{
			{Step: nodestate.StepIdle, Rev: "A"},
			{Step: nodestate.StepPreparing, Rev: "A", Target: "B"},
			{Step: nodestate.StepIdle, Rev: "A", Error: "fetch: timeout"}},
			map[string]string{"A": "", "B": ""}},
	} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				hist := &FileHistory{Dir: t.TempDir(), NodeName: "n1"}
				rec := NewHistoryRecorder(hist, "n1",
					func(context.Context, string) (RevisionMeta, error) {
						return RevisionMeta{}, errors.New("not fetched")
					}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
				ctx := context.Background()
				prev := c.steps[0]
				for _, cur := range c.steps[1:] {
					rec.Observe(ctx, prev, cur)
					prev = cur
					time.Sleep(time.Second) // the bubble's clock: each step takes a second
				}
				revs, err := hist.List(ctx, 0)
				if err != nil {
					t.Fatal(err)
				}
				got := map[string]string{"A": "", "B": ""}
				for _, rv := range revs {
					for _, run := range rv.Nodes {
						got[rv.Rev] = describeRun(run)
					}
				}
				for rev, w := range c.want {
					if got[rev] != w {
						t.Errorf("%s's run: %q, want %q", rev, got[rev], w)
					}
				}
			})
		})
	}
}

func describeRun(r NodeRun) string {
	s := ""
	switch {
	case !r.Live.IsZero():
		s = "live"
		if r.From != "" {
			s += " from " + r.From
		}
	case !r.Failed.IsZero():
		s = "failed"
		if r.RolledBack {
			s += ", rolled back to " + r.From
		}
	default:
		s = "seen"
	}
	if r.Drained > 0 {
		s += ", drained"
	}
	return s
}

// countingHistory is a FileHistory that counts its Seen writes.
type countingHistory struct {
	*FileHistory
	seen int
}

func (c *countingHistory) Seen(ctx context.Context, meta RevisionMeta) error {
	c.seen++
	return c.FileHistory.Seen(ctx, meta)
}

// TestHistoryRecorderFirstSeen: a revision is first seen when the node
// first reports it, even if its commit details come steps later (the
// lookup failed at first), and a failing lookup does not rewrite the
// revision at every step.
func TestHistoryRecorderFirstSeen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hist := &countingHistory{FileHistory: &FileHistory{Dir: t.TempDir(), NodeName: "n1"}}
		fetched := false
		rec := NewHistoryRecorder(hist, "n1",
			func(context.Context, string) (RevisionMeta, error) {
				if !fetched {
					return RevisionMeta{}, errors.New("not fetched")
				}
				return RevisionMeta{Author: "ann", Subject: "v2"}, nil
			}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
		ctx := context.Background()
		start := time.Now().UTC()
		prev := nodestate.Status{Step: nodestate.StepIdle, Rev: "A"}
		for i, step := range []nodestate.Step{nodestate.StepPreparing, nodestate.StepWaiting, nodestate.StepMigrating, nodestate.StepDraining} {
			fetched = i == 3
			cur := nodestate.Status{Step: step, Rev: "A", Target: "B"}
			rec.Observe(ctx, prev, cur)
			prev = cur
			time.Sleep(time.Second)
		}
		if hist.seen != 2 {
			t.Errorf("%d Seen writes, want 2: one when B came, one when its details did", hist.seen)
		}
		revs, err := hist.List(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(revs) != 1 || revs[0].Rev != "B" {
			t.Fatalf("history %+v, want B only", revs)
		}
		if got := revs[0]; !got.FirstSeen.Equal(start) || got.Subject != "v2" {
			t.Errorf("B first seen %s with subject %q, want %s (its first report) and v2", got.FirstSeen, got.Subject, start)
		}
	})
}
