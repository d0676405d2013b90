package lbdrain

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// The quiet-counter rule: a drain ends only when no request has reached
// nginx for one LB check interval, measured after the LB was seen to stop.
// In-flight counts alone are not enough: a request the LB routed just
// before it marked the node down may still be on its way (queued in the
// LB, in a TCP or TLS handshake, which stub_status does not count as
// Reading or Writing), and would be served by whatever runs after the
// switch.
//
// nginx's stub_status `requests` counts every request, drover's own
// included: each status read counts itself, and the LB's health checks
// count too. Those are subtracted: the status reads by number, the health
// checks by the lines of the health access log. Every error of that
// bookkeeping errs towards "not quiet" (a longer drain), never towards a
// request missed:
//
//   - a span is only judged between two reads that saw nothing in flight,
//     so no request straddles its start or end half-counted;
//   - the log is read after the span's first status read (a check that
//     started after it but was logged before the log read is subtracted
//     from nothing: +1, not quiet) and before its last one (a check counted
//     by the last read but logged after the log read is not subtracted:
//     +1, not quiet).

// counterSample is one status read with the health log's line count just
// before and just after it.
type counterSample struct {
	at        time.Time
	requests  int64
	reads     int64 // status reads made so far, this one included
	logBefore int64
	logAfter  int64
}

// quietResult says how a quiet wait ended.
type quietResult struct {
	quiet    bool          // false: deadline passed first
	inflight int64         // at the last read
	unquiet  int64         // requests not drover's own in the last span
	span     time.Duration // the quiet span reached
}

// waitQuiet samples nginx every poll until nothing has been in flight at
// both ends of a span of at least window during which the request counter
// grew only by drover's own status reads and the health checks hw logged
// (hw nil: none expected, as when the LB stopped checking the node). It
// returns at deadline with quiet false (the caller warns and goes on), and
// an error when ctx ends or the status page was never readable.
func (w *inflightWaiter) waitQuiet(ctx context.Context, hw *healthWatch, window time.Duration, deadline time.Time) (quietResult, error) {
	var (
		res     quietResult
		anchor  *counterSample
		reads   int64
		lastErr error
		readOK  bool
	)
	logLines := func() (int64, error) {
		if hw == nil {
			return 0, nil
		}
		if err := hw.poll(); err != nil {
			return 0, err
		}
		return hw.lines, nil
	}
	for {
		before, err := logLines()
		if err != nil {
			return res, err
		}
		s, err := w.read(ctx)
		if err == nil {
			reads++
			readOK = true
			after, lerr := logLines()
			if lerr != nil {
				return res, lerr
			}
			cur := &counterSample{at: time.Now(), requests: s.Requests, reads: reads, logBefore: before, logAfter: after}
			res.inflight = s.InFlight()
			switch {
			case res.inflight > 0:
				anchor = nil // a request is being served: no span starts or ends here
			case anchor == nil:
				anchor = cur
			default:
				others := (cur.requests - anchor.requests) - (cur.reads - anchor.reads) - (cur.logBefore - anchor.logAfter)
				if others > 0 {
					res.unquiet = others
					anchor = cur // requests arrived: the span starts again from here
					break
				}
				if res.span = cur.at.Sub(anchor.at); res.span >= window {
					res.quiet = true
					return res, nil
				}
			}
		} else if ctx.Err() == nil {
			lastErr = err
		}
		if time.Now().After(deadline) {
			if !readOK && lastErr != nil {
				return res, fmt.Errorf("nginx status unreadable until the drain timeout: %w", lastErr)
			}
			return res, nil
		}
		if err := sleepCtx(ctx, w.poll); err != nil {
			return res, fmt.Errorf("wait for nginx to go quiet: %w", err)
		}
	}
}

// quiet waits for the quiet-counter rule and logs how it ended; a deadline
// passed is a warning, not an error: the LB already routes nothing new by
// every other sign, and a deploy must not wait forever on one slow client.
func (w *inflightWaiter) quiet(ctx context.Context, hw *healthWatch, window time.Duration, deadline time.Time, log *slog.Logger, out *outcome) error {
	if w == nil {
		return nil // no StatusURL: nothing to read
	}
	start := time.Now()
	res, err := w.waitQuiet(ctx, hw, window, deadline)
	if err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	took := time.Since(start).Round(time.Millisecond)
	if res.quiet {
		log.Info("no request reached nginx for one LB check interval and none is in flight", "window", window, "took", took)
		return nil
	}
	log.Warn("drain timeout passed before nginx was quiet for one LB check interval; going on",
		"inflight", res.inflight, "arrived", res.unquiet, "quiet", res.span.Round(time.Millisecond), "window", window, "took", took)
	out.set(fmt.Sprintf("nginx was not quiet for one LB check interval (%s) by the drain timeout: %d in flight, %d arrived in the last span", window, res.inflight, res.unquiet))
	return nil
}

// outcome is what a driver's last Drain could not prove before its bound,
// for Incomplete.
type outcome struct {
	mu     sync.Mutex
	reason string
}

func (o *outcome) reset() { o.set("") }

func (o *outcome) set(reason string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.reason = reason
}

func (o *outcome) incompleteReason() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.reason
}

// inflightLeft records an in-flight wait that ended at its bound.
func (o *outcome) inflightLeft(n int64) {
	if n > 0 {
		o.set(fmt.Sprintf("%d requests still in flight at the drain timeout", n))
	}
}

// Incomplete says why d's last Drain went on at its bound before every
// sign of the LB's stop was seen, or "" when it did not: the node is out
// as far as the driver could tell, and the caller records it (an event
// in drover status), since a deploy that keeps hitting the bound has a
// drainTimeout or LB setting to fix.
func Incomplete(d Driver) string {
	if o, ok := d.(interface{ incompleteReason() string }); ok {
		return o.incompleteReason()
	}
	return ""
}
