package lbdrain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/drover-dev/drover/internal/atomicfile"
)

// healthCheck drains through the LB's own health checks: nginx answers the
// health endpoint 503 while Dir/drain exists, the LB marks the node down
// after UnhealthyThreshold failed checks and up after HealthyThreshold good
// ones.
type healthCheck struct {
	hc       HealthCheckConfig
	timeout  time.Duration
	inflight *inflightWaiter
	log      *slog.Logger
}

func newHealthCheck(cfg Config, log *slog.Logger) *healthCheck {
	hc := cfg.HealthCheck
	if hc.Margin == 0 {
		hc.Margin = hc.CheckInterval
	}
	return &healthCheck{hc: hc, timeout: cfg.DrainTimeout, inflight: newInflightWaiter(cfg.StatusURL), log: log}
}

func (d *healthCheck) drainFile() string { return filepath.Join(d.hc.Dir, "drain") }

// fallWindow is how long the LB takes at most to mark the node down once its
// checks fail; riseWindow, to mark it up once they pass.
func (d *healthCheck) fallWindow() time.Duration {
	return d.hc.CheckInterval*time.Duration(d.hc.UnhealthyThreshold) + d.hc.Margin
}

func (d *healthCheck) riseWindow() time.Duration {
	return d.hc.CheckInterval*time.Duration(d.hc.HealthyThreshold) + d.hc.Margin
}

// Drain creates the drain file (or finds it: its modification time says
// when the LB started failing the node), waits the LB's fall window, checks
// in the health log that nginx answered the LB 503, then waits for in-flight
// requests.
func (d *healthCheck) Drain(ctx context.Context) error {
	since, created, err := d.createDrainFile()
	if err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	d.log.Info("drain file in place; waiting for the LB to mark the node down", "file", d.drainFile(), "window", d.fallWindow())
	var w *healthWatch
	if d.hc.AccessLog != "" {
		if w, err = watchHealthLog(d.hc.AccessLog, since); err != nil {
			return fmt.Errorf("drain: %w", err)
		}
	}
	if err := sleepUntil(ctx, since.Add(d.fallWindow())); err != nil {
		return fmt.Errorf("drain: wait for the LB to mark the node down: %w", err)
	}
	if w != nil {
		if err := w.poll(); err != nil {
			return fmt.Errorf("drain: %w", err)
		}
		if ok := w.answered(true); len(ok) > 0 {
			if created { // the node is not out: do not claim it is
				_ = os.Remove(d.drainFile())
			}
			return fmt.Errorf("drain: the health endpoint still answers the LB 200 with %s present (does nginx's health location test it?): %s",
				d.drainFile(), strings.Join(ok, ", "))
		}
		if len(w.sources) == 0 {
			d.log.Warn("no LB health check seen in the fall window; is the LB polling the health endpoint?", "log", d.hc.AccessLog)
		}
	}
	if _, err := d.inflight.wait(ctx, d.timeout, d.log); err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	return nil
}

// createDrainFile puts Dir/drain in place atomically and returns when it
// appeared and whether this call created it; an existing file is left as it
// is.
func (d *healthCheck) createDrainFile() (since time.Time, created bool, err error) {
	path := d.drainFile()
	if fi, err := os.Stat(path); err == nil {
		return fi.ModTime(), false, nil
	}
	tmp, err := os.CreateTemp(d.hc.Dir, ".drain-*")
	if err != nil {
		return time.Time{}, false, err
	}
	defer os.Remove(tmp.Name())
	_, err = fmt.Fprintf(tmp, "drained by drover at %s\n", time.Now().UTC().Format(time.RFC3339))
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return time.Time{}, false, err
	}
	now := time.Now()
	if err := os.Rename(tmp.Name(), path); err != nil {
		return time.Time{}, false, err
	}
	return now, true, atomicfile.SyncDir(d.hc.Dir)
}

// Undrain removes the drain file and waits until the LB's checks were seen
// answered 200 HealthyThreshold times from every checking address, or the
// rise window passed without any check seen. When the file was already gone
// (a second call, a restart), checks logged during the last rise window
// count; without a log, the whole window is waited again.
func (d *healthCheck) Undrain(ctx context.Context) error {
	since := time.Now()
	err := os.Remove(d.drainFile())
	switch {
	case errors.Is(err, os.ErrNotExist) && d.hc.AccessLog != "":
		since = since.Add(-d.riseWindow())
	case errors.Is(err, os.ErrNotExist):
		// Nothing says when it went: wait the whole window.
	case err != nil:
		return fmt.Errorf("undrain: %w", err)
	default:
		if err := atomicfile.SyncDir(d.hc.Dir); err != nil {
			return fmt.Errorf("undrain: %w", err)
		}
	}
	if err := waitSeenHealthy(ctx, d.hc.AccessLog, since, d.hc.HealthyThreshold, d.riseWindow(), d.log); err != nil {
		return fmt.Errorf("undrain: %w", err)
	}
	return nil
}

// Drained reports whether the drain file exists.
func (d *healthCheck) Drained(context.Context) (bool, error) {
	_, err := os.Stat(d.drainFile())
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("drained: %w", err)
	}
}

// sleepUntil waits until t or until ctx ends.
func sleepUntil(ctx context.Context, t time.Time) error {
	return sleepCtx(ctx, time.Until(t))
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}
