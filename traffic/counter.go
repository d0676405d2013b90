package traffic

import (
	"sort"
	"sync"
	"time"
)

// Minutes is how many one-minute buckets a Counter keeps.
const Minutes = 15

// Counts are the figures of some requests.
type Counts struct {
	Requests uint64 `json:"n"`
	Errors   uint64 `json:"e"`
}

// Baseline is what the nodes still on the old revision saw: their totals
// over the canary's minutes, and each target's (site's or worker's) counts
// over their last P99Window.
type Baseline struct {
	Total   Counts
	Targets map[string]Counts
}

// ErrorRate is Errors/Requests, 0 without requests.
func (c Counts) ErrorRate() float64 {
	if c.Requests == 0 {
		return 0
	}
	return float64(c.Errors) / float64(c.Requests)
}

type minute struct {
	start int64 // unix minute
	Counts
	hist Histogram
}

type target struct {
	minutes [Minutes]minute
}

// Counter keeps the figures of one node's live release. It is safe for
// concurrent use.
type Counter struct {
	mu        sync.Mutex
	rev       string
	since     time.Time
	targets   *Targets
	byTarget  map[string]*target
	malformed uint64
	ignored   uint64
}

// NewCounter returns an empty counter that names targets with t.
func NewCounter(t *Targets) *Counter {
	return &Counter{targets: t, byTarget: map[string]*target{}}
}

// Reset starts counting for revision rev with targets t (nil keeps the
// current ones) from now: what the previous release answered is dropped.
func (c *Counter) Reset(rev string, t *Targets, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.resetLocked(rev, t, now)
}

func (c *Counter) resetLocked(rev string, t *Targets, now time.Time) {
	c.rev, c.since = rev, now
	if t != nil {
		c.targets = t
	}
	c.byTarget = map[string]*target{}
}

// Revision is the revision being counted and since when.
func (c *Counter) Revision() (string, time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rev, c.since
}

// AddLine parses and counts one line; a malformed one is counted as such.
func (c *Counter) AddLine(b []byte) {
	e, ok := ParseLine(b)
	if !ok {
		c.mu.Lock()
		c.malformed++
		c.mu.Unlock()
		return
	}
	c.Add(e)
}

// Add counts one request. Requests of no target, from before the
// revision's start, or older than the kept minutes are ignored.
func (c *Counter) Add(e Entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	name := ""
	if c.targets != nil {
		name = c.targets.Of(e)
	}
	if name == "" || e.Time.Before(c.since) {
		c.ignored++
		return
	}
	tg := c.byTarget[name]
	if tg == nil {
		tg = &target{}
		c.byTarget[name] = tg
	}
	m := e.Time.Unix() / 60
	b := &tg.minutes[m%Minutes]
	if b.start != m {
		if b.start > m {
			c.ignored++ // older than the kept minutes
			return
		}
		*b = minute{start: m}
	}
	b.Requests++
	if e.Status >= 500 {
		b.Errors++
	}
	b.hist.Add(e.Latency)
}

// Figures are a node's counts over a window, in total and per target.
type Figures struct {
	Rev   string    `json:"rev"`
	From  time.Time `json:"from"`
	To    time.Time `json:"to"`
	Total Counts    `json:"total"`
	// P99 is the 99th percentile of the total's latency (a bucket's upper
	// bound; see Histogram.Quantile).
	P99     time.Duration     `json:"p99"`
	Targets map[string]Target `json:"targets,omitempty"`
	// Malformed and Ignored count lines dropped since the start.
	Malformed uint64 `json:"malformed,omitempty"`
	Ignored   uint64 `json:"ignored,omitempty"`
}

// Target is one site's or worker's figures.
type Target struct {
	Counts
	P99 time.Duration `json:"p99"`
}

// Figures sums the minutes that start at or after from (truncated to the
// minute) and before to; from is moved to the revision's start when earlier.
func (c *Counter) Figures(from, to time.Time) Figures {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.figuresLocked(from, to)
}

func (c *Counter) figuresLocked(from, to time.Time) Figures {
	if from.Before(c.since) {
		from = c.since
	}
	lo, hi := from.Unix()/60, to.Unix()/60
	f := Figures{Rev: c.rev, From: from, To: to, Malformed: c.malformed, Ignored: c.ignored}
	var all Histogram
	names := make([]string, 0, len(c.byTarget))
	for n := range c.byTarget {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		var tc Counts
		var h Histogram
		for i := range c.byTarget[n].minutes {
			m := &c.byTarget[n].minutes[i]
			if m.start < lo || m.start > hi || m.Requests == 0 {
				continue
			}
			tc.Requests += m.Requests
			tc.Errors += m.Errors
			h.Merge(&m.hist)
		}
		if tc.Requests == 0 {
			continue
		}
		if f.Targets == nil {
			f.Targets = map[string]Target{}
		}
		f.Targets[n] = Target{Counts: tc, P99: h.Quantile(0.99)}
		f.Total.Requests += tc.Requests
		f.Total.Errors += tc.Errors
		all.Merge(&h)
	}
	f.P99 = all.Quantile(0.99)
	return f
}

// Live is Reset unless rev is already the revision counted: checked and
// reset under one lock, since the canary and the publisher both call it
// (a second reset would move since and drop the canary's first minutes).
func (c *Counter) Live(rev string, t *Targets, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rev != rev {
		c.resetLocked(rev, t, now)
	}
}
