package lbdrain

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/drover-dev/drover/internal/healthlog"
)

// HealthLogFormat is the log_format of the health location's access log,
// the convention shared with the nginx config drover renders (package
// internal/healthlog holds it, so that nginxconf need not import lbdrain):
//
//	log_format drover_health '$msec $status $remote_addr';
//	location = /healthz { access_log /var/log/nginx/drover-health.log drover_health; ... }
//
// Each line says when nginx answered, what, and to which checker. Drivers
// read the lines written since a drain change to see the LB's checks reach
// the node: the LB has seen the node healthy once every checking address got
// 200 HealthyThreshold times in a row (a cloud LB checks from several
// addresses, each counting on its own). Lines in any other format are
// skipped. Lines of a rotated-away file may be missed; then the driver falls
// back to the computed window, which is never worse than not observing.
const HealthLogFormat = healthlog.Format

// tailWindow is how far back in the log a watch looks for lines written
// since its start time (an Undrain after a crash looks back one window).
const tailWindow = 256 << 10

// healthWatch follows the health access log and keeps, per checking
// address, the last status and how many times in a row it was answered.
type healthWatch struct {
	path    string
	since   time.Time
	offset  int64
	ino     uint64
	partial []byte // the last line, until its newline is written
	// midLine: offset may be inside a line, so the first one read is dropped.
	midLine bool
	sources map[string]*streak
	// known counts the requests of each address in the lookback before
	// since: a drain waits for each regular checker (twice or more: not a
	// person's one curl) to see the node fail.
	knownSince time.Time
	known      map[string]int
	// lines counts the complete lines read (every health request nginx
	// logged), for the quiet-counter rule.
	lines int64
}

type streak struct {
	status int
	count  int
	last   time.Time
}

// watchHealthLog starts following path for lines logged at or after since.
func watchHealthLog(path string, since time.Time) (*healthWatch, error) {
	return watchHealthLogKnown(path, since, 0)
}

// watchHealthLogKnown is watchHealthLog that also records the addresses
// that checked the node during lookback before since.
func watchHealthLogKnown(path string, since time.Time, lookback time.Duration) (*healthWatch, error) {
	since = since.Truncate(time.Millisecond)
	w := &healthWatch{path: path, since: since, knownSince: since.Add(-lookback), sources: map[string]*streak{}, known: map[string]int{}}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return w, nil // nginx creates it at its next start; read from 0 then
	case err != nil:
		return nil, fmt.Errorf("health log: %w", err)
	}
	w.ino = inode(fi)
	if fi.Size() > tailWindow {
		w.offset, w.midLine = fi.Size()-tailWindow, true
	}
	return w, w.poll()
}

func inode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

// poll reads what was appended since the last poll; a replaced or truncated
// file is read from its start.
func (w *healthWatch) poll() error {
	f, err := os.Open(w.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("health log: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("health log: %w", err)
	}
	if ino := inode(fi); ino != w.ino || fi.Size() < w.offset {
		w.ino, w.offset, w.partial, w.midLine = ino, 0, nil, false
	}
	if fi.Size() == w.offset {
		return nil
	}
	b, err := io.ReadAll(io.NewSectionReader(f, w.offset, fi.Size()-w.offset))
	if err != nil {
		return fmt.Errorf("health log: %w", err)
	}
	w.offset += int64(len(b))
	data := append(w.partial, b...)
	end := bytes.LastIndexByte(data, '\n')
	if end < 0 {
		w.partial = data
		return nil
	}
	lines := strings.Split(string(data[:end]), "\n")
	w.partial = append([]byte(nil), data[end+1:]...)
	if w.midLine {
		lines, w.midLine = lines[1:], false
	}
	w.lines += int64(len(lines))
	for _, l := range lines {
		w.add(l)
	}
	return nil
}

func (w *healthWatch) add(line string) {
	f := strings.Fields(line)
	if len(f) < 3 {
		return
	}
	t, ok := parseMsec(f[0])
	status, err := strconv.Atoi(f[1])
	if !ok || err != nil {
		return
	}
	if t.Before(w.since) {
		if !t.Before(w.knownSince) {
			w.known[f[2]]++
		}
		return
	}
	s := w.sources[f[2]]
	if s == nil {
		s = &streak{}
		w.sources[f[2]] = s
	}
	if (s.status == 200) != (status == 200) || s.count == 0 {
		s.count = 0
	}
	s.status, s.last = status, t
	s.count++
}

// parseMsec reads nginx's $msec: seconds with a millisecond fraction.
func parseMsec(s string) (time.Time, bool) {
	sec, frac, _ := strings.Cut(s, ".")
	n, err := strconv.ParseInt(sec, 10, 64)
	if err != nil || len(frac) > 3 {
		return time.Time{}, false
	}
	ms := 0
	if frac != "" {
		if ms, err = strconv.Atoi((frac + "00")[:3]); err != nil {
			return time.Time{}, false
		}
	}
	return time.Unix(n, int64(ms)*int64(time.Millisecond)), true
}

// healthy reports whether every checking address seen got 200 at least n
// times in a row (and at least one was seen).
func (w *healthWatch) healthy(n int) bool {
	for _, s := range w.sources {
		if s.status != 200 || s.count < n {
			return false
		}
	}
	return len(w.sources) > 0
}

// regularChecks is how often an address must have checked the node in the
// lookback to count as one of the LB's checkers.
const regularChecks = 2

// regulars is how many of the LB's checkers were known before since.
func (w *healthWatch) regulars() int {
	n := 0
	for _, c := range w.known {
		if c >= regularChecks {
			n++
		}
	}
	return n
}

// seenDown reports whether every checking address, those seen since the
// watch began and those known from before it, got a non-200 answer at
// least n times in a row: the LB's own rule for marking the node down,
// seen from the node.
func (w *healthWatch) seenDown(n int) bool {
	for src, n := range w.known {
		if n >= regularChecks && w.sources[src] == nil {
			return false
		}
	}
	for _, s := range w.sources {
		if s.status == 200 || s.count < n {
			return false
		}
	}
	return len(w.sources) > 0
}

// answered lists the checking addresses whose last answer was (ok) or was not
// (!ok) 200, for errors and logs.
func (w *healthWatch) answered(ok bool) []string {
	var out []string
	for src, s := range w.sources {
		if (s.status == 200) == ok {
			out = append(out, fmt.Sprintf("%s: %d ×%d", src, s.status, s.count))
		}
	}
	sort.Strings(out)
	return out
}

// waitSeenHealthy returns once the LB's checks were answered 200 threshold
// times in a row since `since` from every checking address, or when window
// passes: then it returns an error if the checks were answered otherwise (the
// LB does not see the node healthy), and nil with a warning if no check was
// seen at all (not observable: the LB has had its full window). Without a
// log it waits the window.
//
// Checks logged since `since` count toward success, but the window always
// runs from now: when since is in the past (a node that was never drained,
// or undrained before a restart), the checks of that past may predate the
// node turning healthy (nginx's health endpoint answers 503 until the
// release is verified), and must not fail it.
func waitSeenHealthy(ctx context.Context, logPath string, since time.Time, threshold int, window time.Duration, log *slog.Logger) error {
	start := time.Now()
	timer := time.NewTimer(window)
	defer timer.Stop()
	if logPath == "" {
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the LB's health checks: %w", ctx.Err())
		case <-timer.C:
			log.Info("LB health checks not observed (no health access log); waited the LB's rise window", "took", time.Since(start).Round(time.Millisecond))
			return nil
		}
	}
	w, err := watchHealthLog(logPath, since)
	if err != nil {
		return err
	}
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		if w.healthy(threshold) {
			log.Info("LB health checks answered 200", "times", threshold, "checkers", len(w.sources), "took", time.Since(start).Round(time.Millisecond))
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the LB's health checks: %w (seen: %v)", ctx.Err(), w.answered(true))
		case <-timer.C:
			if err := w.poll(); err != nil {
				return err
			}
			if w.healthy(threshold) {
				continue
			}
			if bad := w.answered(false); len(bad) > 0 {
				return fmt.Errorf("LB health checks were answered with errors after %s: %s", window, strings.Join(bad, ", "))
			}
			log.Warn("LB health checks not seen often enough; the LB's rise window passed, going on",
				"seen", strings.Join(w.answered(true), ", "), "want", threshold, "took", time.Since(start).Round(time.Millisecond))
			return nil
		case <-tick.C:
			if err := w.poll(); err != nil {
				return err
			}
		}
	}
}
