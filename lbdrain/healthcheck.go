package lbdrain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/drover-dev/drover/internal/atomicfile"
	"github.com/drover-dev/drover/internal/layout"
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
	outcome
}

func newHealthCheck(cfg Config, log *slog.Logger) *healthCheck {
	hc := cfg.HealthCheck
	if hc.Margin == 0 {
		hc.Margin = hc.CheckInterval
	}
	return &healthCheck{hc: hc, timeout: cfg.DrainTimeout, inflight: newInflightWaiter(cfg.StatusURL), log: log}
}

func (d *healthCheck) drainFile() string { return layout.DrainFile(d.hc.Dir) }

// fallWindow is how long the LB takes at most to mark the node down once its
// checks fail; riseWindow, to mark it up once they pass.
func (d *healthCheck) fallWindow() time.Duration {
	return d.hc.CheckInterval*time.Duration(d.hc.UnhealthyThreshold) + d.hc.Margin
}

func (d *healthCheck) riseWindow() time.Duration {
	return d.hc.CheckInterval*time.Duration(d.hc.HealthyThreshold) + d.hc.Margin
}

// Drain creates the drain file (or finds it: its modification time says
// when the LB started failing the node), then waits until the LB has
// stopped sending requests, by three signs together: the health log shows
// UnhealthyThreshold consecutive non-200 answers to every checking address
// (those seen since the drain and those seen checking just before it), no
// request other than drover's own reached nginx for one check interval
// after that, and none is in flight (see waitQuiet). Without a health log
// neither the LB's checks nor its own requests can be told apart, so the
// LB's fall window is waited and then the in-flight count. The whole wait
// is bounded by the fall window plus DrainTimeout: past it, Drain warns and
// goes on.
func (d *healthCheck) Drain(ctx context.Context) error {
	d.reset()
	since, created, err := d.createDrainFile()
	if err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	fallEnd := since.Add(d.fallWindow())
	deadline := later(fallEnd, time.Now()).Add(d.timeout)
	d.log.Info("drain file in place; waiting for the LB to mark the node down", "file", d.drainFile(), "window", d.fallWindow())
	if d.hc.AccessLog == "" {
		if err := sleepUntil(ctx, fallEnd); err != nil {
			return fmt.Errorf("drain: wait for the LB to mark the node down: %w", err)
		}
		n, err := d.inflight.wait(ctx, time.Until(deadline), d.log)
		if err != nil {
			return fmt.Errorf("drain: %w", err)
		}
		d.inflightLeft(n)
		return nil
	}
	w, err := watchHealthLogKnown(d.hc.AccessLog, since, 4*d.fallWindow())
	if err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	if err := d.waitSeenDown(ctx, w, since, fallEnd, deadline, created); err != nil {
		return err
	}
	return d.inflight.quiet(ctx, w, d.hc.CheckInterval, deadline, d.log, &d.outcome)
}

// waitSeenDown returns once the health log shows every checker answered
// non-200 UnhealthyThreshold times in a row. Past the fall window, a
// checker still answered 200 is an error (nginx ignores the drain file),
// and no checker seen at all is a warning (not observable; the window is
// all there is); past deadline, a warning.
func (d *healthCheck) waitSeenDown(ctx context.Context, w *healthWatch, since, fallEnd, deadline time.Time, created bool) error {
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := w.poll(); err != nil {
			return fmt.Errorf("drain: %w", err)
		}
		now := time.Now()
		switch {
		case w.seenDown(d.hc.UnhealthyThreshold):
			d.log.Info("LB health checks answered 503", "times", d.hc.UnhealthyThreshold, "checkers", len(w.sources), "took", now.Sub(since).Round(time.Millisecond))
			return nil
		case now.Before(fallEnd):
		case len(w.answered(true)) > 0:
			if created { // the node is not out: do not claim it is
				_ = os.Remove(d.drainFile())
			}
			return fmt.Errorf("drain: the health endpoint still answers the LB 200 with %s present (does nginx's health location test it?): %s",
				d.drainFile(), strings.Join(w.answered(true), ", "))
		case len(w.sources) == 0 && w.regulars() == 0:
			d.log.Warn("no LB health check seen in the fall window; is the LB polling the health endpoint?", "log", d.hc.AccessLog)
			return nil
		case now.After(deadline):
			d.log.Warn("drain timeout passed before every LB checker was seen failing the node; going on",
				"seen", strings.Join(w.answered(false), ", "), "want", d.hc.UnhealthyThreshold, "took", now.Sub(since).Round(time.Millisecond))
			d.set(fmt.Sprintf("not every LB checker was seen failing the node %d times by the drain timeout (seen: %s)", d.hc.UnhealthyThreshold, strings.Join(w.answered(false), ", ")))
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("drain: wait for the LB to mark the node down: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// later is the later of a and b.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
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
