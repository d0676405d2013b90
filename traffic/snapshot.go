package traffic

import (
	"sort"
	"time"
)

// Snapshot is a node's figures as it publishes them for the cluster: the
// totals of each kept minute (so another node can sum the same minutes as
// its own window) and, over the last P99Window, the p99 and each target's
// counts. It is small: at most Minutes minutes and MaxTargets targets.
type Snapshot struct {
	Node    string            `json:"node"`
	Rev     string            `json:"rev"`
	At      time.Time         `json:"at"`
	Since   time.Time         `json:"since"`
	Minutes []Minute          `json:"minutes,omitempty"`
	P99     time.Duration     `json:"p99"`
	Targets map[string]Target `json:"targets,omitempty"`
}

// Minute is the totals of one minute.
type Minute struct {
	// Start is the minute's start in unix minutes.
	Start int64 `json:"t"`
	Counts
}

// MaxTargets bounds the targets of a Snapshot.
const MaxTargets = 64

// P99Window is the window of a Snapshot's p99 and targets.
const P99Window = 5 * time.Minute

// Snapshot returns the counter's figures at now, for node.
func (c *Counter) Snapshot(node string, now time.Time) Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	// One lock for the figures and the rest: a Reset in between would
	// publish the new revision with the old one's figures.
	f := c.figuresLocked(now.Add(-P99Window), now)
	s := Snapshot{Node: node, Rev: c.rev, At: now, Since: c.since, P99: f.P99}
	lo := now.Unix()/60 - Minutes + 1
	sums := map[int64]Counts{}
	for _, tg := range c.byTarget {
		for i := range tg.minutes {
			m := &tg.minutes[i]
			if m.start < lo || m.Requests == 0 {
				continue
			}
			cs := sums[m.start]
			cs.Requests += m.Requests
			cs.Errors += m.Errors
			sums[m.start] = cs
		}
	}
	for t, cs := range sums {
		s.Minutes = append(s.Minutes, Minute{Start: t, Counts: cs})
	}
	sort.Slice(s.Minutes, func(i, j int) bool { return s.Minutes[i].Start < s.Minutes[j].Start })
	for name, t := range f.Targets {
		if len(s.Targets) == MaxTargets {
			break
		}
		if s.Targets == nil {
			s.Targets = map[string]Target{}
		}
		s.Targets[name] = t
	}
	return s
}

// Between sums the minutes of s that start in [from's minute, to's minute].
func (s Snapshot) Between(from, to time.Time) Counts {
	lo, hi := from.Unix()/60, to.Unix()/60
	var c Counts
	for _, m := range s.Minutes {
		if m.Start >= lo && m.Start <= hi {
			c.Requests += m.Requests
			c.Errors += m.Errors
		}
	}
	return c
}

// Bound cuts what a decoded Snapshot (read from Redis: untrusted) may
// hold to what a real one holds.
func (s *Snapshot) Bound() {
	if len(s.Minutes) > Minutes {
		s.Minutes = s.Minutes[len(s.Minutes)-Minutes:]
	}
	if len(s.Targets) > MaxTargets {
		s.Targets = nil
	}
}
