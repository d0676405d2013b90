package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-redsync/redsync/v4"
	"github.com/redis/go-redis/v9"

	"github.com/drover-dev/drover/nodestate"
)

// ErrLockLost is the cause of a held context's end when the lock could not
// be kept: Redis said it is no longer this node's, or its validity ran out
// before an extension succeeded.
var ErrLockLost = errors.New("rollout lock lost")

// errReleased is the cause of a held context's end after release.
var errReleased = errors.New("rollout lock released")

// Holder says who holds a rollout slot.
type Holder struct {
	Slot  int       `json:"slot"`
	Node  string    `json:"node"`
	Rev   string    `json:"rev"`
	Since time.Time `json:"since"`
}

// Acquire waits until rollouts are not paused and one of slots rollout
// slots (rollout.maxUnavailable) is free, takes it and keeps it extended; it
// satisfies reconcile.Lock. The wait polls with
// jittered backoff and ends with ctx. The held context ends when the lock is
// lost (cause ErrLockLost), when ctx ends, or at release. release stops the
// extension and unlocks; it is idempotent.
func (c *Cluster) Acquire(ctx context.Context, rev string, slots int) (held context.Context, release func(context.Context) error, err error) {
	l, err := c.acquire(ctx, rev, slots)
	if err != nil {
		return nil, nil, err
	}
	return l.held, l.release, nil
}

func (c *Cluster) acquire(ctx context.Context, rev string, slots int) (*lease, error) {
	slots = max(slots, 1)
	b := c.newBackoff()
	var reason string
	say := func(r string) {
		// A call cut short by ctx's end says nothing about the lock: keep
		// the reason seen before it, which is what the caller wants to hear
		// (who holds the lock, or the pause).
		if ctx.Err() != nil && reason != "" {
			return
		}
		if r != reason {
			reason = r
			c.waiting(ctx, rev, r)
		}
	}
	for {
		if err := c.closing.Err(); err != nil {
			return nil, errors.New("cluster is closed")
		}
		if why, paused, err := c.Paused(ctx); err != nil {
			say("cannot tell whether rollouts are paused: " + err.Error())
		} else if paused {
			say("rollouts are paused: " + why)
		} else if l, err := c.tryAcquire(ctx, rev, slots); err != nil {
			say(err.Error())
		} else if why, paused, err := c.Paused(ctx); err == nil && !paused {
			return l, nil
		} else {
			// Paused while we took the lock: hand it back.
			_ = l.release(context.WithoutCancel(ctx))
			if err != nil {
				say("cannot tell whether rollouts are paused: " + err.Error())
			} else {
				say("rollouts are paused: " + why)
			}
		}
		if err := b.wait(ctx); err != nil {
			return nil, fmt.Errorf("wait for the rollout lock (%s): %w", reason, err)
		}
	}
}

// waiting logs and records in the events why this node waits.
func (c *Cluster) waiting(ctx context.Context, rev, reason string) {
	c.log.Info("waiting", "rev", short(rev), "reason", reason)
	ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	if err := c.Emit(ectx, Event{Node: c.node, Rev: rev, Step: nodestate.StepWaiting, Msg: reason}); err != nil {
		c.log.Debug("emit event", "err", err)
	}
}

// tryAcquire tries each slot once, in random order. Its error says who holds
// the slots.
func (c *Cluster) tryAcquire(ctx context.Context, rev string, slots int) (*lease, error) {
	var errs []error
	for _, i := range rand.Perm(slots) {
		m := c.rs.NewMutex(c.key("lock", "slot", strconv.Itoa(i)),
			redsync.WithExpiry(c.cfg.LockExpiry),
			redsync.WithTries(1),
			redsync.WithFailFast(true),
			redsync.WithTimeoutFactor(0.1))
		err := m.TryLockContext(ctx)
		if err == nil {
			return c.hold(ctx, m, i, rev)
		}
		var taken *redsync.ErrTaken
		if !errors.As(err, &taken) {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("rollout lock: %w", errors.Join(errs...))
	}
	return nil, c.heldBy(ctx, slots)
}

// heldBy describes who holds slots 0…slots-1.
func (c *Cluster) heldBy(ctx context.Context, slots int) error {
	keys := make([]string, slots)
	for i := range keys {
		keys[i] = c.key("lock", "holder", strconv.Itoa(i))
	}
	vals, err := c.data().MGet(ctx, keys...).Result()
	var who []string
	for _, v := range vals {
		var h Holder
		if s, ok := v.(string); ok && len(s) <= MaxValue && json.Unmarshal([]byte(s), &h) == nil {
			who = append(who, fmt.Sprintf("%s (rev %s, since %s)", h.Node, short(h.Rev), h.Since.Format(time.TimeOnly)))
		}
	}
	switch {
	case err != nil || len(who) == 0:
		return errors.New("rollout lock held by another node")
	case slots == 1:
		return errors.New("rollout lock held by " + who[0])
	default:
		return fmt.Errorf("all %d rollout slots held: %s", slots, strings.Join(who, ", "))
	}
}

// Holders returns who holds rollout slots now, by slot.
func (c *Cluster) Holders(ctx context.Context) ([]Holder, error) {
	var keys []string
	iter := c.data().Scan(ctx, 0, c.key("lock", "holder", "*"), 100).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil || len(keys) == 0 {
		return nil, err
	}
	vals, err := c.data().MGet(ctx, keys...).Result()
	if err != nil {
		return nil, err
	}
	var hs []Holder
	for _, v := range vals {
		var h Holder
		if s, ok := v.(string); ok && len(s) <= MaxValue && json.Unmarshal([]byte(s), &h) == nil {
			hs = append(hs, h)
		}
	}
	slices.SortFunc(hs, func(a, b Holder) int { return a.Slot - b.Slot })
	return hs, nil
}

// lease is one held slot.
type lease struct {
	c         *Cluster
	m         *redsync.Mutex
	slot      int
	holderKey string
	holder    string // JSON Holder, also the token of holderKey
	held      context.Context
	cancel    context.CancelCauseFunc
	// stopped ends at release, also cutting an extension in flight.
	stopped context.Context
	stop    context.CancelFunc
	done    chan struct{}
	once    sync.Once
	err     error
}

// hold records the holder, then keeps m extended until release.
func (c *Cluster) hold(ctx context.Context, m *redsync.Mutex, slot int, rev string) (*lease, error) {
	h, _ := json.Marshal(Holder{Slot: slot, Node: c.node, Rev: rev, Since: time.Now().UTC()})
	l := &lease{
		c: c, m: m, slot: slot,
		holderKey: c.key("lock", "holder", strconv.Itoa(slot)),
		holder:    string(h),
		done:      make(chan struct{}),
	}
	l.held, l.cancel = context.WithCancelCause(ctx)
	l.stopped, l.stop = context.WithCancel(context.Background())
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		_, _ = m.UnlockContext(context.WithoutCancel(ctx))
		l.cancel(errReleased)
		l.stop()
		return nil, errors.New("cluster is closed")
	}
	c.leases[l] = struct{}{}
	c.wg.Go(l.keep)
	c.mu.Unlock()
	l.record(ctx)
	c.log.Info("rollout lock taken", "rev", short(rev), "slot", slot)
	return l, nil
}

// record writes the holder record with the lock's expiry (best effort: it
// is for status only).
func (l *lease) record(ctx context.Context) {
	if err := l.c.data().Set(ctx, l.holderKey, l.holder, l.c.cfg.LockExpiry).Err(); err != nil {
		l.c.log.Debug("record lock holder", "err", err)
	}
}

// keep extends the lock every third of its expiry until release. A failed
// extension is retried while the lock is still valid, unless Redis said the
// lock is someone else's; when it cannot be kept, held is cancelled with
// ErrLockLost before any other node can take it.
func (l *lease) keep() {
	defer close(l.done)
	expiry := l.c.cfg.LockExpiry
	next := time.NewTimer(expiry / 3)
	defer next.Stop()
	deadline := time.NewTimer(time.Until(l.m.Until()))
	defer deadline.Stop()
	for {
		select {
		case <-l.stopped.Done():
			return
		case <-deadline.C:
			l.lose(errors.New("its validity ended before it could be extended"))
			return
		case <-next.C:
		}
		ctx, cancel := context.WithDeadline(l.stopped, l.m.Until())
		ok, err := l.m.ExtendContext(ctx)
		if ok {
			l.record(ctx)
		}
		cancel()
		var taken *redsync.ErrTaken
		switch {
		case l.stopped.Err() != nil:
			return
		case ok:
			deadline.Reset(time.Until(l.m.Until()))
			next.Reset(expiry / 3)
		case errors.As(err, &taken), errors.Is(err, redsync.ErrExtendFailed), err == nil:
			l.lose(fmt.Errorf("extend: %w", err))
			return
		default:
			l.c.log.Warn("extend rollout lock; retrying", "err", err, "valid_for", time.Until(l.m.Until()).Round(time.Millisecond))
			next.Reset(min(expiry/10, time.Second))
		}
	}
}

func (l *lease) lose(why error) {
	l.c.log.Error("rollout lock lost", "slot", l.slot, "err", why)
	l.cancel(fmt.Errorf("%w: %w", ErrLockLost, why))
}

// release stops the extension, ends held and unlocks. Only the first call
// does anything.
func (l *lease) release(ctx context.Context) error {
	l.once.Do(func() {
		l.stop()
		<-l.done
		l.cancel(errReleased)
		ok, err := l.m.UnlockContext(ctx)
		if err == nil && !ok {
			err = errors.New("not held any more")
		}
		if err != nil {
			l.err = fmt.Errorf("release rollout lock slot %d: %w", l.slot, err)
		}
		if err := releaseHolder.Run(ctx, l.c.data(), []string{l.holderKey}, l.holder).Err(); err != nil && !errors.Is(err, redis.Nil) {
			l.c.log.Debug("delete lock holder record", "err", err)
		}
		l.c.mu.Lock()
		delete(l.c.leases, l)
		l.c.mu.Unlock()
		l.c.log.Info("rollout lock released", "slot", l.slot)
	})
	return l.err
}

// releaseHolder deletes the holder record only if it is still this lease's.
var releaseHolder = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("DEL", KEYS[1])
end
return 0`)

// jitter returns a random duration in [0, d].
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d + 1)
}

func short(rev string) string {
	if len(rev) > 12 {
		return rev[:12]
	}
	return rev
}
