package lbdrain

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Drainer is the rollout's drain driver (it satisfies reconcile.Drainer).
// The in-flight timeout is each call's (the revision's
// rollout.drainTimeout), so the driver is rebuilt when a revision changes
// it.
type Drainer struct {
	base Config
	log  *slog.Logger

	mu      sync.Mutex
	driver  Driver
	timeout time.Duration
}

// maxHealthLog is the size past which the health log is emptied after an
// undrain: only the lines since the last drain change are ever read.
const maxHealthLog = 8 << 20

// NewDrainer returns the Drainer of cfg, whose DrainTimeout is the one of
// calls that give none. It builds the driver now, so that a bad lb section
// fails at start. log nil discards its warnings.
func NewDrainer(cfg Config, log *slog.Logger) (*Drainer, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Drainer{base: cfg, log: log}
	if _, err := l.get(cfg.DrainTimeout); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *Drainer) get(timeout time.Duration) (Driver, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.driver != nil && (timeout == 0 || timeout == l.timeout) {
		return l.driver, nil
	}
	c := l.base
	if timeout > 0 {
		c.DrainTimeout = timeout
	}
	d, err := New(c, l.log)
	if err != nil {
		return nil, fmt.Errorf("lb: %w", err)
	}
	l.driver, l.timeout = d, c.DrainTimeout
	return d, nil
}

// Drain drains with the in-flight timeout inflight (0: the last one).
func (l *Drainer) Drain(ctx context.Context, inflight time.Duration) error {
	d, err := l.get(inflight)
	if err != nil {
		return err
	}
	return d.Drain(ctx)
}

// LastDrainIncomplete says why the last drain went on at its bound, for
// the rollout's event.
func (l *Drainer) LastDrainIncomplete() string {
	l.mu.Lock()
	d := l.driver
	l.mu.Unlock()
	if d == nil {
		return ""
	}
	return Incomplete(d)
}

// Undrain puts the node back, then empties the health log once it is past
// maxHealthLog.
func (l *Drainer) Undrain(ctx context.Context) error {
	d, err := l.get(0)
	if err != nil {
		return err
	}
	if err := d.Undrain(ctx); err != nil {
		return err
	}
	if log := l.base.HealthCheck.AccessLog; log != "" {
		if fi, err := os.Stat(log); err == nil && fi.Size() > maxHealthLog {
			if err := os.Truncate(log, 0); err != nil {
				l.log.Warn("truncate health log", "err", err)
			}
		}
	}
	return nil
}

// Drained says whether the node is out of the LB now.
func (l *Drainer) Drained(ctx context.Context) (bool, error) {
	d, err := l.get(0)
	if err != nil {
		return false, err
	}
	return d.Drained(ctx)
}
