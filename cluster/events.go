package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/drover-dev/drover/nodestate"
)

// Event is one thing that happened on a node: a step, a wait, an operator's
// action.
type Event struct {
	Time time.Time      `json:"time"`
	Node string         `json:"node"`
	Rev  string         `json:"rev,omitempty"`
	Step nodestate.Step `json:"step,omitempty"`
	Msg  string         `json:"msg,omitempty"`
	Err  string         `json:"err,omitempty"`
}

// Emit appends e to the cluster's event stream, which keeps about the last
// MaxEvents. A zero Time is now; an empty Node is this node. An event that
// cannot be written (Redis unreachable: a partition, a failover) is kept,
// up to MaxBacklog of them, and written with its own time before the next
// one, or by the heartbeat once Redis answers again: what a node did while
// cut off (verified a release, re-joined the LB) still reaches the stream.
// A kept event is not an error: it will be written (a warning says so).
func (c *Cluster) Emit(ctx context.Context, e Event) error {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	if e.Node == "" {
		e.Node = c.node
	}
	err := c.flushBacklog(ctx)
	if err == nil {
		err = c.xadd(ctx, e)
	}
	if err != nil {
		c.keep(e)
		c.log.Warn("event kept until Redis can be written", "err", err)
	}
	return nil
}

// MaxBacklog bounds the events kept while Redis cannot be written; past it
// the oldest are dropped, and a note says how many.
const MaxBacklog = 256

func (c *Cluster) xadd(ctx context.Context, e Event) error {
	return c.data().XAdd(ctx, &redis.XAddArgs{
		Stream: c.key("events"),
		MaxLen: c.cfg.MaxEvents,
		Approx: true,
		Values: []any{
			"time", e.Time.UTC().Format(time.RFC3339Nano), "node", e.Node, "rev", e.Rev,
			"step", string(e.Step), "msg", e.Msg, "err", e.Err,
		},
	}).Err()
}

// keep adds e to the backlog.
func (c *Cluster) keep(e Event) {
	c.backlogMu.Lock()
	defer c.backlogMu.Unlock()
	if len(c.backlog) >= MaxBacklog {
		c.backlog = c.backlog[1:]
		c.dropped++
	}
	c.backlog = append(c.backlog, e)
}

// flushBacklog writes the kept events, oldest first, and stops at the
// first that fails. One flush runs at a time, and the backlog's lock is
// never held across a write to Redis: while one caller waits on an
// unreachable Redis the others keep their events and go on.
func (c *Cluster) flushBacklog(ctx context.Context) error {
	if !c.flushMu.TryLock() {
		return errors.New("another write of the kept events is in progress")
	}
	defer c.flushMu.Unlock()
	for {
		c.backlogMu.Lock()
		dropped := c.dropped
		var next Event
		if dropped > 0 {
			next = Event{Time: time.Now(), Node: c.node, Msg: fmt.Sprintf("%d events were lost while Redis could not be written", dropped)}
		} else if len(c.backlog) > 0 {
			next = c.backlog[0]
		} else {
			c.backlogMu.Unlock()
			return nil
		}
		c.backlogMu.Unlock()
		if err := c.xadd(ctx, next); err != nil {
			return err
		}
		c.backlogMu.Lock()
		switch {
		case dropped > 0:
			c.dropped -= dropped
		case len(c.backlog) > 0 && c.backlog[0] == next:
			c.backlog = c.backlog[1:]
		default:
			// keep dropped it (the backlog was full) while it was
			// written: it was not lost after all.
			c.dropped--
		}
		c.backlogMu.Unlock()
	}
}

// Events returns the last n events, newest last.
func (c *Cluster) Events(ctx context.Context, n int) ([]Event, error) {
	msgs, err := c.data().XRevRangeN(ctx, c.key("events"), "+", "-", int64(n)).Result()
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	es := make([]Event, 0, len(msgs))
	for _, m := range slices.Backward(msgs) {
		str := func(k string) string { s, _ := m.Values[k].(string); return clip(s, MaxText) }
		e := Event{Node: str("node"), Rev: str("rev"), Step: nodestate.Step(str("step")), Msg: str("msg"), Err: str("err")}
		e.Time, _ = time.Parse(time.RFC3339Nano, str("time"))
		es = append(es, e)
	}
	return es, nil
}

// syncRequest is the payload of a sync message.
type syncRequest struct {
	Node   string    `json:"node"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// PublishSync asks every subscribed agent to poll the repo now.
func (c *Cluster) PublishSync(ctx context.Context, reason string) error {
	data, _ := json.Marshal(syncRequest{Node: c.node, Reason: reason, At: time.Now().UTC()})
	if err := c.data().Publish(ctx, c.key("sync"), data).Err(); err != nil {
		return fmt.Errorf("publish sync request: %w", err)
	}
	if err := c.Emit(ctx, Event{Node: c.node, Msg: "sync requested: " + reason}); err != nil {
		c.log.Debug("emit event", "err", err)
	}
	return nil
}

// Subscribe calls poke for every sync request until ctx ends or Close. It
// returns at once; the subscription runs in the background. A dropped
// subscription (Redis restarted, connection killed, failover) is made again
// with backoff, and poke is called after each re-subscription, since a
// request may have been missed meanwhile. poke must not block (a coalescing
// trigger such as reconcile.Trigger.Poke).
func (c *Cluster) Subscribe(ctx context.Context, poke func()) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("cluster: Subscribe after Close")
	}
	c.goroutine(ctx, func(ctx context.Context) { c.subscribe(ctx, poke) })
	return nil
}

func (c *Cluster) subscribe(ctx context.Context, poke func()) {
	b := c.newBackoff()
	for dropped := false; ; dropped = true {
		if dropped {
			if b.wait(ctx) != nil {
				return
			}
		}
		err := c.listen(ctx, poke, func() {
			b.reset()
			if dropped {
				c.log.Info("sync subscription restored")
				poke()
			}
		})
		if ctx.Err() != nil {
			return
		}
		c.log.Warn("sync subscription dropped", "err", err)
	}
}

// listen subscribes, calls subscribed once the subscription is confirmed,
// and pokes for each message until the connection fails or ctx ends. An
// idle connection is pinged; one that does not answer counts as dropped.
func (c *Cluster) listen(ctx context.Context, poke, subscribed func()) error {
	ps := c.data().Subscribe(ctx, c.key("sync"))
	defer ps.Close()
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer stop()
	if _, err := ps.Receive(ctx); err != nil {
		return err
	}
	subscribed()
	idle := min(c.cfg.HeartbeatTTL/3, 10*time.Second)
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, idle)
		var nerr net.Error
		switch {
		case err == nil:
			pinged = false
		case errors.As(err, &nerr) && nerr.Timeout() && !pinged:
			if err := ps.Ping(ctx, "drover"); err != nil {
				return err
			}
			pinged = true
			continue
		default:
			return err
		}
		switch m := msg.(type) {
		case *redis.Message:
			var req syncRequest
			_ = json.Unmarshal([]byte(m.Payload), &req)
			c.log.Debug("sync requested", "by", req.Node, "reason", req.Reason)
			poke()
		case *redis.Subscription:
			if m.Kind == "unsubscribe" {
				return errors.New("unsubscribed")
			}
		}
	}
}

// FirstDelivery records a webhook delivery id for 24 hours and says
// whether it is new, so that every node behind the load balancer ignores a
// redelivery (webhook.Deduper).
func (c *Cluster) FirstDelivery(ctx context.Context, id string) (bool, error) {
	ok, err := c.data().SetNX(ctx, c.key("delivery", id), c.node, 24*time.Hour).Result()
	if err != nil {
		return true, fmt.Errorf("record delivery %s: %w", id, err)
	}
	return ok, nil
}

// FirstNotice records that the notification id is being sent and says
// whether this node is the first to send it (notify.Claimer): of the nodes
// that see one event, exactly one notifies. The record lasts a week and
// holds when it was made (NoticeTime).
func (c *Cluster) FirstNotice(ctx context.Context, id string) (bool, error) {
	ok, err := c.data().SetNX(ctx, c.key("notified", id), time.Now().UTC().Format(time.RFC3339Nano), 7*24*time.Hour).Result()
	if err != nil {
		return true, fmt.Errorf("record notification %s: %w", id, err)
	}
	return ok, nil
}

// NoticeTime is when the notification id was first recorded (zero if not).
func (c *Cluster) NoticeTime(ctx context.Context, id string) (time.Time, error) {
	v, err := c.data().Get(ctx, c.key("notified", id)).Result()
	if errors.Is(err, redis.Nil) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("read notification %s: %w", id, err)
	}
	return time.Parse(time.RFC3339Nano, v)
}
