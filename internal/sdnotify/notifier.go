// Package sdnotify is the agent's side of systemd's notify protocol
// (sd_notify(3)) and the one-line status it publishes there, which `drover
// idle` (the package upgrade's "between rollouts?") reads back through
// systemctl: the two ends of that line live here together.
package sdnotify

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/drover-dev/drover/internal/revid"
	"github.com/drover-dev/drover/nodestate"
)

// Notifier speaks systemd's notify protocol (sd_notify(3)) for an agent run
// as a Type=notify service: READY=1 once the agent runs its loop, STATUS=
// with the node's step and revision whenever that changes, WATCHDOG=1 at half
// of WatchdogSec while the loop shows signs of life, and STOPPING=1 when the
// agent stops. Without NOTIFY_SOCKET in the environment it does nothing and
// starts no goroutine.
//
// The watchdog is fed only while the loop makes progress, so a wedged agent
// (a deadlock, a call that never returns) is restarted by systemd; after the
// restart, Recover finishes or undoes the change it was in (DESIGN.md,
// invariant 4). But a step can rightly take minutes (an install, a health
// deadline, the wait for the rollout lock), and every step has its own
// deadline inside reconcile, so a slow step is not a stall: the Notifier
// withholds pings only when neither the step (Status.Since) nor the polls
// (Status.Seen) moved for stallAfter, which is longer than any step may take.
// systemd's watchdog signal is SIGABRT, on which Go prints the goroutines'
// stacks (all of them with GOTRACEBACK=all, as examples/systemd sets), so
// such a restart leaves its reason in the journal.
type Notifier struct {
	send       func(state string) error
	status     func() nodestate.Status
	log        *slog.Logger
	watchdog   time.Duration // WatchdogSec; 0 when systemd watches nothing
	stallAfter time.Duration

	stop      context.CancelFunc
	done      chan struct{}
	readyOnce sync.Once
	stalled   bool // run's goroutine only
}

// statusEvery is how often the Notifier looks at the node's status for a
// change worth a STATUS= line.
const statusEvery = time.Second

// minStallAfter bounds the longest step: longer than the default progress
// deadline (10m, lock wait included) plus default install timeouts (5m per
// worker) of a handful of workers.
const minStallAfter = time.Hour

// Start returns the agent's Notifier; its goroutine stops when ctx
// ends or Stop is called, and says STOPPING=1 as it goes. poll is the repo
// poll interval: an idle loop shows life once per poll.
func Start(ctx context.Context, log *slog.Logger, status func() nodestate.Status, poll time.Duration) *Notifier {
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return &Notifier{} // not run by systemd as a Type=notify service
	}
	wd, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("systemd watchdog settings", "err", err)
	}
	s := newNotifier(func(state string) error {
		_, err := daemon.SdNotify(false, state)
		return err
	}, status, log, wd, max(minStallAfter, 3*poll))
	s.start(ctx)
	if wd > 0 {
		log.Info("systemd watchdog", "every", wd/2, "stallAfter", s.stallAfter)
	}
	return s
}

func newNotifier(send func(string) error, status func() nodestate.Status, log *slog.Logger, watchdog, stallAfter time.Duration) *Notifier {
	return &Notifier{send: send, status: status, log: log, watchdog: watchdog, stallAfter: stallAfter}
}

func (s *Notifier) start(ctx context.Context) {
	ctx, s.stop = context.WithCancel(ctx)
	s.done = make(chan struct{})
	go s.run(ctx)
}

// Ready tells systemd that the agent is up; only the first call counts.
func (s *Notifier) Ready() {
	if s.send == nil {
		return
	}
	s.readyOnce.Do(func() {
		s.notify("READY=1\nSTATUS=" + StatusText(s.status()))
	})
}

// Stop says STOPPING=1 (if the agent's context has not already made it) and
// waits for the Notifier's goroutine to end.
func (s *Notifier) Stop() {
	if s.send == nil {
		return
	}
	s.stop()
	<-s.done
}

func (s *Notifier) run(ctx context.Context) {
	defer close(s.done)
	defer s.stopping()
	statusTick := time.NewTicker(statusEvery)
	defer statusTick.Stop()
	var ping <-chan time.Time
	if s.watchdog > 0 {
		t := time.NewTicker(s.watchdog / 2)
		defer t.Stop()
		ping = t.C
		s.feed()
	}
	last := ""
	for {
		if text := StatusText(s.status()); text != last {
			s.notify("STATUS=" + text)
			last = text
		}
		select {
		case <-ctx.Done():
			return
		case <-statusTick.C:
		case <-ping:
			s.feed()
		}
	}
}

// feed sends WATCHDOG=1 if the loop showed life within stallAfter, and says
// once why it stopped feeding otherwise.
func (s *Notifier) feed() {
	st := s.status()
	last := st.Since
	if st.Seen.After(last) {
		last = st.Seen
	}
	if idle := time.Since(last); idle > s.stallAfter {
		if !s.stalled {
			s.log.Error("the agent's loop made no progress; withholding the watchdog so that systemd restarts the agent",
				"step", st.Step, "rev", revid.Short(st.Target), "for", idle.Round(time.Second))
		}
		s.stalled = true
		return
	}
	s.stalled = false
	s.notify("WATCHDOG=1")
}

func (s *Notifier) stopping() {
	s.notify("STOPPING=1\nSTATUS=stopping")
}

func (s *Notifier) notify(state string) {
	if err := s.send(state); err != nil {
		s.log.Warn("notify systemd", "state", strings.ReplaceAll(state, "\n", " "), "err", err)
	}
}
