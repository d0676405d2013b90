package cluster

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/drover-dev/drover/internal/atomicfile"
	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/nodestate"
)

// The history is a durable record of every revision the cluster saw: what
// it was (commit, author, signature), when it was first seen, what each node
// did with it, and what operators did about it. It outlives the event
// stream, which keeps only the last steps: HistoryKeep revisions are kept,
// the oldest first seen dropped first. In Redis it is
//
//	history            sorted set: revision → first seen (Unix ms)
//	history:<rev>      hash: meta → JSON RevisionMeta, node:<name> → JSON
//	                   NodeRun, halt → JSON Halt, action:<unix ns> → JSON Action,
//	                   canary → JSON nodestate.Canary (its last decision)
//
// so that nodes writing at once each write their own field; without a
// cluster it is FileHistory's history.json in the state dir.

// DefaultHistoryKeep is how many revisions the history keeps.
const DefaultHistoryKeep = 500

// RevisionMeta is what a revision is, recorded once by the first node that
// sees it.
type RevisionMeta struct {
	Rev       string    `json:"rev"`
	Author    string    `json:"author,omitempty"`
	Committer string    `json:"committer,omitempty"`
	Subject   string    `json:"subject,omitempty"`
	Signature string    `json:"signature,omitempty"` // the signer with repo.verify; "" unchecked
	FirstSeen time.Time `json:"firstSeen"`
	SeenBy    string    `json:"seenBy,omitempty"`
}

func (m RevisionMeta) known() bool { return m.Author != "" || m.Subject != "" }

// NodeRun is what one node did with a revision, its last attempt.
type NodeRun struct {
	Node string `json:"node"`
	// Started is when the node began its turn (drained); Live when it went
	// live on the revision; Failed when its rollout failed (Error).
	Started time.Time `json:"started,omitzero"`
	Live    time.Time `json:"live,omitzero"`
	Failed  time.Time `json:"failed,omitzero"`
	Error   string    `json:"error,omitempty"`
	// Drained is how long the node was out of the LB for this revision.
	Drained time.Duration `json:"drainedNs,omitempty"`
	// RolledBack: the revision failed and the node went back to From.
	RolledBack bool   `json:"rolledBack,omitempty"`
	From       string `json:"from,omitempty"`
}

// Action is an operator's act on a revision: pinned, unpinned, cleared,
// paused, resumed.
type Action struct {
	At     time.Time `json:"at"`
	By     string    `json:"by"`
	What   string    `json:"what"`
	Reason string    `json:"reason,omitempty"`
}

// Revision is one revision of the history as read.
type Revision struct {
	RevisionMeta
	Nodes   []NodeRun `json:"nodes"`
	Halt    *Halt     `json:"halt,omitempty"`
	Actions []Action  `json:"actions,omitempty"`
	// Canary is the decision of the revision's canary, if it had one.
	Canary *nodestate.Canary `json:"canary,omitempty"`
	// Outcome is live, live (pinned), halted, rolled back, superseded or
	// pending (seen, not applied: e.g. while pinned), derived by Outcomes.
	Outcome string `json:"outcome"`
}

// lastLive is when the revision last went live on a node.
func (r Revision) lastLive() time.Time {
	var t time.Time
	for _, n := range r.Nodes {
		if n.Live.After(t) {
			t = n.Live
		}
	}
	return t
}

// Outcomes derives each revision's outcome. The revision that went live
// last is live (pinned while a pin on it stands); one that went live before
// was rolled back when an older revision went live after it, else
// superseded; a halt not cleared since is the outcome whatever else
// happened; a revision seen and never live is superseded when a newer one
// went live, else pending (waiting for its turn, or prepared while pinned).
func Outcomes(revs []Revision) {
	cur := current(revs)
	for i := range revs {
		r := &revs[i]
		pinned, cleared := false, false
		for _, a := range r.Actions {
			switch a.What {
			case "pinned":
				pinned = true
			case "unpinned":
				pinned = false
			case "cleared":
				cleared = r.Halt != nil && a.At.After(r.Halt.At)
			}
		}
		live := r.lastLive()
		switch {
		case r.Halt != nil && !cleared:
			r.Outcome = "halted: " + firstLine(r.Halt.Reason)
		case cur != nil && r.Rev == cur.Rev && pinned:
			r.Outcome = "live (pinned)"
		case cur != nil && r.Rev == cur.Rev:
			r.Outcome = "live"
		case !live.IsZero() && wentBack(revs, r, live):
			r.Outcome = "rolled back"
		case !live.IsZero(), cur != nil && cur.FirstSeen.After(r.FirstSeen):
			r.Outcome = "superseded"
		default:
			r.Outcome = "pending"
		}
	}
}

// wentBack says whether a revision first seen before r went live after r
// last did (at live): the cluster was rolled back from r.
func wentBack(revs []Revision, r *Revision, live time.Time) bool {
	for _, o := range revs {
		if o.FirstSeen.Before(r.FirstSeen) && o.lastLive().After(live) {
			return true
		}
	}
	return false
}

// current is the revision that went live last.
func current(revs []Revision) *Revision {
	var cur *Revision
	for i := range revs {
		if t := revs[i].lastLive(); !t.IsZero() && (cur == nil || t.After(cur.lastLive())) {
			cur = &revs[i]
		}
	}
	return cur
}

// CurrentLive is the revision that went live last ("" for none).
func CurrentLive(revs []Revision) string {
	if cur := current(revs); cur != nil {
		return cur.Rev
	}
	return ""
}

// PreviousLive is the revision live before the current one (the last to go
// live other than it, not halted): what drover rollback goes back to.
func PreviousLive(revs []Revision) string {
	cur := current(revs)
	if cur == nil {
		return ""
	}
	var prev *Revision
	for i := range revs {
		r := &revs[i]
		if r.Rev == cur.Rev || r.Halt != nil || r.lastLive().IsZero() {
			continue
		}
		if prev == nil || r.lastLive().After(prev.lastLive()) {
			prev = r
		}
	}
	if prev == nil {
		return ""
	}
	return prev.Rev
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// History is the Redis history of the cluster, kept for keep revisions.
type History struct {
	c    *Cluster
	keep int
}

// History returns the cluster's history, keeping keep revisions (0:
// DefaultHistoryKeep).
func (c *Cluster) History(keep int) *History {
	if keep <= 0 {
		keep = DefaultHistoryKeep
	}
	return &History{c: c, keep: keep}
}

func (h *History) revKey(rev string) string { return h.c.key("history", rev) }

// Seen records meta for a revision seen for the first time; a revision
// already recorded keeps its first record. The oldest revisions past keep
// are dropped.
func (h *History) Seen(ctx context.Context, meta RevisionMeta) error {
	if meta.FirstSeen.IsZero() {
		meta.FirstSeen = time.Now().UTC()
	}
	if meta.SeenBy == "" {
		meta.SeenBy = h.c.node
	}
	data, err := json.Marshal(meta)
	if err != nil {
		return err
	}
	r := h.c.data()
	added, err := r.ZAddNX(ctx, h.c.key("history"), redis.Z{Score: float64(meta.FirstSeen.UnixMilli()), Member: meta.Rev}).Result()
	if err != nil {
		return fmt.Errorf("history: record %s: %w", short(meta.Rev), err)
	}
	// The commit's details are known once it is fetched; the first node
	// that knows them records them.
	if meta.known() {
		if err := r.HSetNX(ctx, h.revKey(meta.Rev), "meta", data).Err(); err != nil {
			return fmt.Errorf("history: record %s: %w", short(meta.Rev), err)
		}
	}
	if added == 0 {
		return nil
	}
	return h.trim(ctx)
}

// trim drops the revisions first seen longest ago past keep.
func (h *History) trim(ctx context.Context) error {
	r := h.c.data()
	n, err := r.ZCard(ctx, h.c.key("history")).Result()
	if err != nil || n <= int64(h.keep) {
		return err
	}
	old, err := r.ZRange(ctx, h.c.key("history"), 0, n-int64(h.keep)-1).Result()
	if err != nil {
		return fmt.Errorf("history: trim: %w", err)
	}
	_, err = r.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, rev := range old {
			p.Del(ctx, h.revKey(rev))
			p.ZRem(ctx, h.c.key("history"), rev)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("history: trim: %w", err)
	}
	return nil
}

// Node records what a node did with rev (its last attempt replaces the
// one before).
func (h *History) Node(ctx context.Context, rev string, run NodeRun) error {
	if err := h.ensure(ctx, rev, run.first()); err != nil {
		return err
	}
	data, err := json.Marshal(run)
	if err != nil {
		return err
	}
	if err := h.c.data().HSet(ctx, h.revKey(rev), "node:"+run.Node, data).Err(); err != nil {
		return fmt.Errorf("history: node %s on %s: %w", run.Node, short(rev), err)
	}
	return nil
}

// HaltRev records rev's halt; the history keeps it after drover clear.
func (h *History) HaltRev(ctx context.Context, halt Halt) error {
	if err := h.ensure(ctx, halt.Rev, halt.At); err != nil {
		return err
	}
	data, err := json.Marshal(halt)
	if err != nil {
		return err
	}
	if err := h.c.data().HSet(ctx, h.revKey(halt.Rev), "halt", data).Err(); err != nil {
		return fmt.Errorf("history: halt %s: %w", short(halt.Rev), err)
	}
	return nil
}

// Canary records the decision of rev's canary.
func (h *History) Canary(ctx context.Context, c nodestate.Canary) error {
	if err := h.ensure(ctx, c.Rev, c.Start); err != nil {
		return err
	}
	data, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if err := h.c.data().HSet(ctx, h.revKey(c.Rev), "canary", data).Err(); err != nil {
		return fmt.Errorf("history: canary of %s: %w", short(c.Rev), err)
	}
	return nil
}

// Action records an operator's act on rev.
func (h *History) Action(ctx context.Context, rev string, a Action) error {
	if a.At.IsZero() {
		a.At = time.Now().UTC()
	}
	if err := h.ensure(ctx, rev, a.At); err != nil {
		return err
	}
	data, err := json.Marshal(a)
	if err != nil {
		return err
	}
	field := "action:" + strconv.FormatInt(a.At.UnixNano(), 10)
	if err := h.c.data().HSet(ctx, h.revKey(rev), field, data).Err(); err != nil {
		return fmt.Errorf("history: %s %s: %w", a.What, short(rev), err)
	}
	return nil
}

// ensure makes sure rev is in the history before a detail that happened
// at is added to it. A revision the history lacks (its first record was
// lost with a Redis failover, or a write is retried late) is taken as first
// seen then, not now, so that it keeps its place among the others and its
// outcome (a revision listed after a newer one would read as rolled back).
func (h *History) ensure(ctx context.Context, rev string, at time.Time) error {
	if rev == "" {
		return errors.New("history: no revision")
	}
	return h.Seen(ctx, RevisionMeta{Rev: rev, FirstSeen: at.UTC()})
}

// first is the earliest time the run names, zero if none.
func (r NodeRun) first() time.Time {
	var t time.Time
	for _, x := range []time.Time{r.Started, r.Live, r.Failed} {
		if !x.IsZero() && (t.IsZero() || x.Before(t)) {
			t = x
		}
	}
	return t
}

// List returns the last n revisions (all with n <= 0), newest first seen
// first, with their outcomes.
func (h *History) List(ctx context.Context, n int) ([]Revision, error) {
	r := h.c.data()
	// All of them: the outcomes of the last n depend on the others.
	if err := countFirst(r.ZCard(ctx, h.c.key("history")), "read history", MaxHistory); err != nil {
		return nil, err
	}
	zs, err := r.ZRevRangeWithScores(ctx, h.c.key("history"), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("read history: %w", err)
	}
	cmds := make([]*redis.MapStringStringCmd, len(zs))
	_, err = r.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, z := range zs {
			cmds[i] = p.HGetAll(ctx, h.revKey(fmt.Sprint(z.Member)))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read history: %w", err)
	}
	out := make([]Revision, 0, len(zs))
	for i, z := range zs {
		rv, err := decodeRevision(fmt.Sprint(z.Member), cmds[i].Val())
		if err != nil {
			return nil, err
		}
		rv.FirstSeen = time.UnixMilli(int64(z.Score)).UTC()
		out = append(out, rv)
	}
	Outcomes(out)
	if n > 0 && len(out) > n {
		out = out[:n]
	}
	return out, nil
}

func decodeRevision(rev string, fields map[string]string) (Revision, error) {
	rv := Revision{RevisionMeta: RevisionMeta{Rev: rev}}
	for k, v := range fields {
		if err := checkValue("history of "+short(rev)+": "+clip(k, 64), v); err != nil {
			return rv, err
		}
		var err error
		switch {
		case k == "meta":
			err = json.Unmarshal([]byte(v), &rv.RevisionMeta)
		case k == "halt":
			rv.Halt = &Halt{}
			err = json.Unmarshal([]byte(v), rv.Halt)
		case strings.HasPrefix(k, "node:"):
			var run NodeRun
			err = json.Unmarshal([]byte(v), &run)
			rv.Nodes = append(rv.Nodes, run)
		case strings.HasPrefix(k, "action:"):
			var a Action
			err = json.Unmarshal([]byte(v), &a)
			rv.Actions = append(rv.Actions, a)
		case k == "canary":
			rv.Canary = &nodestate.Canary{}
			err = json.Unmarshal([]byte(v), rv.Canary)
		}
		if err != nil {
			return rv, fmt.Errorf("history of %s: %s: %w", short(rev), k, err)
		}
	}
	rv.Rev = rev
	slices.SortFunc(rv.Nodes, func(a, b NodeRun) int { return cmp.Compare(a.Node, b.Node) })
	slices.SortFunc(rv.Actions, func(a, b Action) int { return a.At.Compare(b.At) })
	return rv, nil
}

// FileHistory is the history of a node without a cluster, one JSON file in
// its state dir, with the same records as History.
type FileHistory struct {
	Dir  string
	Keep int
	// NodeName is this node, recorded as who saw a revision first.
	NodeName string
	mu       sync.Mutex
}

type fileRevision struct {
	Meta    RevisionMeta       `json:"meta"`
	Nodes   map[string]NodeRun `json:"nodes,omitempty"`
	Halt    *Halt              `json:"halt,omitempty"`
	Actions []Action           `json:"actions,omitempty"`
}

func (f *FileHistory) update(fn func(revs map[string]*fileRevision) bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	revs, err := f.read()
	if err != nil {
		return err
	}
	if !fn(revs) {
		return nil
	}
	keep := f.Keep
	if keep <= 0 {
		keep = DefaultHistoryKeep
	}
	if len(revs) > keep {
		all := make([]*fileRevision, 0, len(revs))
		for _, r := range revs {
			all = append(all, r)
		}
		slices.SortFunc(all, func(a, b *fileRevision) int { return a.Meta.FirstSeen.Compare(b.Meta.FirstSeen) })
		for _, r := range all[:len(all)-keep] {
			delete(revs, r.Meta.Rev)
		}
	}
	data, err := json.MarshalIndent(revs, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(layout.New(f.Dir).History(), data, 0o644); err != nil {
		return fmt.Errorf("write history: %w", err)
	}
	return nil
}

func (f *FileHistory) read() (map[string]*fileRevision, error) {
	revs := map[string]*fileRevision{}
	data, err := os.ReadFile(layout.New(f.Dir).History())
	if errors.Is(err, os.ErrNotExist) {
		return revs, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read history: %w", err)
	}
	if err := json.Unmarshal(data, &revs); err != nil {
		return nil, fmt.Errorf("read history: %s: %w", filepath.Base(layout.New(f.Dir).History()), err)
	}
	return revs, nil
}

func (f *FileHistory) get(revs map[string]*fileRevision, rev string) *fileRevision {
	r := revs[rev]
	if r == nil {
		r = &fileRevision{Meta: RevisionMeta{Rev: rev, FirstSeen: time.Now().UTC(), SeenBy: f.NodeName}}
		revs[rev] = r
	}
	if r.Nodes == nil {
		r.Nodes = map[string]NodeRun{}
	}
	return r
}

// Seen records meta for a revision seen for the first time.
func (f *FileHistory) Seen(_ context.Context, meta RevisionMeta) error {
	return f.update(func(revs map[string]*fileRevision) bool {
		old, had := revs[meta.Rev]
		if had && (old.Meta.known() || !meta.known()) {
			return false
		}
		r := f.get(revs, meta.Rev)
		// The details may come later than the revision did (the commit
		// lookup failed at first); it was first seen when it came.
		if meta.FirstSeen.IsZero() || had && r.Meta.FirstSeen.Before(meta.FirstSeen) {
			meta.FirstSeen = r.Meta.FirstSeen
		}
		if meta.SeenBy == "" {
			meta.SeenBy = f.NodeName
		}
		r.Meta = meta
		return true
	})
}

// Node records what the node did with rev.
func (f *FileHistory) Node(_ context.Context, rev string, run NodeRun) error {
	return f.update(func(revs map[string]*fileRevision) bool {
		f.get(revs, rev).Nodes[run.Node] = run
		return true
	})
}

// HaltRev records rev's halt.
func (f *FileHistory) HaltRev(_ context.Context, halt Halt) error {
	return f.update(func(revs map[string]*fileRevision) bool {
		f.get(revs, halt.Rev).Halt = &halt
		return true
	})
}

// Action records an operator's act on rev.
func (f *FileHistory) Action(_ context.Context, rev string, a Action) error {
	if a.At.IsZero() {
		a.At = time.Now().UTC()
	}
	return f.update(func(revs map[string]*fileRevision) bool {
		r := f.get(revs, rev)
		r.Actions = append(r.Actions, a)
		return true
	})
}

// List returns the last n revisions (all with n <= 0), newest first.
func (f *FileHistory) List(_ context.Context, n int) ([]Revision, error) {
	f.mu.Lock()
	revs, err := f.read()
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	out := make([]Revision, 0, len(revs))
	for rev, r := range revs {
		rv := Revision{RevisionMeta: r.Meta, Halt: r.Halt, Actions: r.Actions}
		rv.Rev = rev
		for _, run := range r.Nodes {
			rv.Nodes = append(rv.Nodes, run)
		}
		slices.SortFunc(rv.Nodes, func(a, b NodeRun) int { return cmp.Compare(a.Node, b.Node) })
		out = append(out, rv)
	}
	slices.SortFunc(out, func(a, b Revision) int { return b.FirstSeen.Compare(a.FirstSeen) })
	Outcomes(out)
	if n > 0 && len(out) > n {
		out = out[:n]
	}
	return out, nil
}
