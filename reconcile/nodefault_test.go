package reconcile

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/spec"
)

// A node that fails under the rollout (its systemd gone, as when the host
// shuts down: systemd stops before the agent) must not halt the revision
// for the whole cluster: the revision is good, the node is not. Seen in the
// lab's scenario b, where killing a node mid-switch halted a good revision
// on every node.

// downErr is what units returns when systemd does not answer.
type downErr struct{}

func (downErr) Error() string {
	return "connect to systemd at /run/systemd/private: connection refused"
}
func (downErr) NodeFault() bool { return true }

// faultySup fails Apply of the release failOn with err, and answers Ping
// with ping.
type faultySup struct {
	recSup
	failOn string
	err    error
	ping   error
}

func (s faultySup) Apply(ctx context.Context, ws []spec.Worker, dir string) error {
	if cur, _ := s.rel.Current(); cur == s.failOn {
		return s.err
	}
	return s.recSup.Apply(ctx, ws, dir)
}

func (s faultySup) Ping(context.Context) error { return s.ping }

func TestNodeFaultDoesNotHaltTheRevision(t *testing.T) {
	for _, c := range []struct {
		name      string
		applyErr  error // Apply of bbbb
		ping      error
		unhealthy bool // bbbb's worker fails its checks
		wantHalt  bool
	}{
		{name: "supervisor unreachable during the switch", applyErr: downErr{}},
		{name: "checks fail and the supervisor is gone", unhealthy: true, ping: errors.New("connection refused")},
		// The control: the same failed checks with systemd answering are
		// the release's fault, and halt it.
		{name: "checks fail on a healthy node", unhealthy: true, wantHalt: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRecoverRig(t, "aaaa", true, nil)
			reg := &memRegistry{}
			r.n.d.Registry = reg
			parts := &recParts{log: r.log, rel: r.rel, applied: "aaaa"}
			r.n.d.Supervisor = faultySup{recSup: recSup{parts}, failOn: "bbbb", err: c.applyErr, ping: c.ping}
			r.n.d.Web = recWeb{parts}
			if c.unhealthy {
				r.new.mode.Store("fail")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			out, err := r.n.Sync(ctx)
			if err == nil || out.Applied {
				t.Fatalf("rollout on a failing node: %+v, %v; want an error", out, err)
			}
			halts := reg.halted()
			if c.wantHalt {
				if len(halts) != 1 || !strings.HasPrefix(halts[0], "bbbb: ") {
					t.Fatalf("halts %q, want bbbb halted", halts)
				}
				return
			}
			if len(halts) > 0 {
				t.Fatalf("a node fault halted the revision: %q (err %v)", halts, err)
			}
			if !strings.Contains(err.Error(), "not revision bbbb") {
				t.Errorf("err = %v, want it to say the node failed, not the revision", err)
			}
			if cur, _ := r.rel.Current(); cur != "aaaa" || !out.RolledBack {
				t.Errorf("live %s, rolled back %v; want the node back on aaaa", cur, out.RolledBack)
			}
			if e := r.journalStep(t); e != nil {
				t.Errorf("journal left: %+v", e)
			}
			if _, ok := r.n.retry["bbbb"]; !ok {
				t.Error("bbbb not backed off: the node would retry at once")
			}
			if st := r.n.Status(); st.Step != StepIdle || st.Error == "" {
				t.Errorf("status %+v, want idle with the node's error", st)
			}
		})
	}
}
