package sdnotify

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/drover-dev/drover/nodestate"
)

// fakeLoop is the reconcile node as the notifier sees it, moved by the test.
type fakeLoop struct {
	mu sync.Mutex
	st nodestate.Status
}

func (l *fakeLoop) Status() nodestate.Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st
}

func (l *fakeLoop) set(f func(*nodestate.Status)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f(&l.st)
}

type sent struct {
	at    time.Time
	state string
}

type recorder struct {
	mu   sync.Mutex
	msgs []sent
}

func (r *recorder) send(state string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, sent{time.Now(), state})
	return nil
}

// count counts messages equal to state sent in (from, to].
func (r *recorder) count(state string, from, to time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.msgs {
		if m.state == state && m.at.After(from) && !m.at.After(to) {
			n++
		}
	}
	return n
}

func (r *recorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, m := range r.msgs {
		out = append(out, m.state)
	}
	return out
}

// TestNotifierFeedsTheWatchdogWhileTheLoopMoves drives the notifier through
// an idle loop, a step that takes most of an hour, a loop that stopped
// moving, and the agent's stop, on synctest's clock.
func TestNotifierFeedsTheWatchdogWhileTheLoopMoves(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const watchdog, stallAfter = 2 * time.Second, time.Hour
		start := time.Now()
		loop := &fakeLoop{st: nodestate.Status{Step: nodestate.StepIdle, Rev: revA, Since: start}}
		rec := &recorder{}
		s := newNotifier(rec.send, loop.Status, slog.New(slog.NewTextHandler(t.Output(), nil)), watchdog, stallAfter)
		ctx, cancel := context.WithCancel(t.Context())
		s.start(ctx)
		s.Ready()

		// An idle loop polls every 10 s: one ping per second for 2 min.
		for range 12 {
			time.Sleep(10 * time.Second)
			loop.set(func(st *nodestate.Status) { st.Seen = time.Now() })
		}
		if got := rec.count("WATCHDOG=1", start, time.Now()); got < 119 || got > 121 {
			t.Errorf("idle loop: %d pings in 2 min, want one a second (120)", got)
		}

		// A step that takes 55 minutes without a poll (a long install)
		// is not a stall: the pings go on to its end.
		loop.set(func(st *nodestate.Status) {
			st.Step, st.Target, st.Since = nodestate.StepPreparing, revB, time.Now()
		})
		stepStart := time.Now()
		time.Sleep(55 * time.Minute)
		if got := rec.count("WATCHDOG=1", time.Now().Add(-time.Minute), time.Now()); got < 59 {
			t.Errorf("55 minutes into a step: %d pings in the last minute, want 60", got)
		}

		// Nothing moved for longer than stallAfter: the pings stop.
		time.Sleep(10 * time.Minute)
		if got := rec.count("WATCHDOG=1", stepStart.Add(stallAfter+time.Second), time.Now()); got != 0 {
			t.Errorf("a loop stuck for %s still fed the watchdog %d times", time.Since(stepStart), got)
		}

		// The step ends: the loop moves, the pings resume.
		loop.set(func(st *nodestate.Status) { st.Step, st.Since = nodestate.StepSwitching, time.Now() })
		resumed := time.Now()
		time.Sleep(5 * time.Second)
		if got := rec.count("WATCHDOG=1", resumed, time.Now()); got < 4 {
			t.Errorf("after the loop moved again: %d pings in 5 s, want 5", got)
		}

		cancel() // SIGTERM
		synctest.Wait()
		select {
		case <-s.done:
		default:
			t.Fatal("the notifier's goroutine outlived the agent's context")
		}
		s.Stop() // the agent's deferred Stop after its context ended

		msgs := rec.all()
		if msgs[len(msgs)-1] != "STOPPING=1\nSTATUS=stopping" || strings.Count(strings.Join(msgs, "\n"), "STOPPING=1") != 1 {
			t.Errorf("want STOPPING=1 once, as the last message; got the last %q", msgs[max(0, len(msgs)-3):])
		}
		var statuses []string
		for _, m := range msgs {
			if v, ok := strings.CutPrefix(m, "STATUS="); ok {
				statuses = append(statuses, v)
			}
		}
		want := []string{"idle on aaaaaaaaaaaa", "preparing bbbbbbbbbbbb (live aaaaaaaaaaaa)", "switching bbbbbbbbbbbb (live aaaaaaaaaaaa)"}
		if strings.Join(statuses, "|") != strings.Join(want, "|") {
			t.Errorf("STATUS lines: %q, want each change once: %q", statuses, want)
		}
		if ready := rec.count("READY=1\nSTATUS=idle on aaaaaaaaaaaa", start.Add(-1), start); ready != 1 {
			t.Errorf("READY=1 with the status sent %d times at start, want once", ready)
		}
	})
}

// TestNotifierSpeaksSdNotify reads what the notifier sends on a real
// NOTIFY_SOCKET, the way systemd gets it.
func TestNotifierSpeaksSdNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "100000")
	t.Setenv("WATCHDOG_PID", fmt.Sprint(os.Getpid()))

	loop := &fakeLoop{st: nodestate.Status{Step: nodestate.StepIdle, Rev: revA, Since: time.Now()}}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	s := Start(ctx, slog.New(slog.NewTextHandler(t.Output(), nil)), loop.Status, time.Second)
	defer s.Stop()
	s.Ready()

	read := func(want string) {
		t.Helper()
		buf := make([]byte, 4096)
		var got []string
		for {
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, err := conn.Read(buf)
			if err != nil {
				t.Fatalf("waiting for %q: %v; got %q", want, err, got)
			}
			got = append(got, string(buf[:n]))
			if strings.Contains(string(buf[:n]), want) {
				return
			}
		}
	}
	read("READY=1\nSTATUS=idle on aaaaaaaaaaaa")
	read("WATCHDOG=1")
	read("WATCHDOG=1")
	loop.set(func(st *nodestate.Status) { st.Step, st.Target, st.Since = nodestate.StepVerifying, revB, time.Now() })
	read("STATUS=verifying bbbbbbbbbbbb (live aaaaaaaaaaaa)")
	cancel()
	read("STOPPING=1")
}

func TestNotifierIsSilentWithoutSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	s := Start(t.Context(), slog.New(slog.DiscardHandler), func() nodestate.Status {
		t.Fatal("a notifier without NOTIFY_SOCKET read the status")
		return nodestate.Status{}
	}, time.Second)
	s.Ready()
	s.Stop()
	if s.done != nil {
		t.Fatal("a notifier without NOTIFY_SOCKET started a goroutine")
	}
}
