// Package notify tells people what a cluster did: a rollout started,
// completed, halted, a pin set or removed, a node taken out of the load
// balancer by its guard. It sends each event to every configured sink: a
// generic JSON webhook (Event is the documented payload), a Slack-compatible
// incoming webhook ({"text": …}), and email through the local sendmail.
//
// The contract: Post never blocks and never fails, so a notifier can never
// hold up or fail a rollout; events wait in a bounded queue (the oldest
// news is dropped first when a receiver is down for long) and one goroutine
// delivers them, each try bounded by the timeout, retried with backoff.
// Exactly one notification per event cluster-wide: before delivering, the
// notifier claims the event's ID through Claimer (the cluster's Redis), and
// only the node that claims it first sends it.
package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// Kinds of events.
const (
	KindStarted    = "rollout.started"
	KindCompleted  = "rollout.completed"
	KindHalted     = "rollout.halted"
	KindRolledBack = "rolled.back"
	KindPinned     = "pinned"
	KindUnpinned   = "unpinned"
	KindGuardOut   = "node.out"
	KindSilent     = "node.silent"
	// KindCanary is a canary's decision: passed (waiting for drover
	// promote), promoted, failed or aborted.
	KindCanary = "canary.decided"
)

// Event is one notification, and the generic webhook's JSON body.
type Event struct {
	// ID names the event cluster-wide (e.g. "halted:<rev>"): the
	// dedupe key.
	ID       string    `json:"id"`
	Kind     string    `json:"event"`
	Cluster  string    `json:"cluster"`
	Node     string    `json:"node,omitempty"`
	Revision string    `json:"revision,omitempty"`
	Error    string    `json:"error,omitempty"`
	Duration float64   `json:"durationSeconds,omitempty"`
	By       string    `json:"by,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	Time     time.Time `json:"time"`
	// Text is the event in one sentence, for people.
	Text string `json:"text"`
}

// Sink delivers an event somewhere.
type Sink interface {
	Name() string
	Send(ctx context.Context, e Event) error
}

// Claimer records that an event is being notified and says whether this
// caller is the first (cluster.Cluster.FirstNotice).
type Claimer interface {
	FirstNotice(ctx context.Context, id string) (bool, error)
}

// Config is a notifier's settings.
type Config struct {
	Sinks []Sink
	// Claim dedupes across nodes; nil sends everything (one node).
	Claim Claimer
	// Timeout bounds each try of each sink (default 5 s).
	Timeout time.Duration
	// Tries per sink (default 4), Backoff the first wait between them
	// (default 1 s, doubled each time).
	Tries   int
	Backoff time.Duration
	Log     *slog.Logger
}

// Notifier delivers events in the background: one goroutine claims each
// event, then hands it to one goroutine per sink, so that a receiver that
// hangs or fails delays only its own deliveries.
type Notifier struct {
	cfg   Config
	queue chan Event
	sinks []chan Event
	stop  context.CancelFunc
	wg    sync.WaitGroup
}

// queueSize bounds the events waiting, before the claim and per sink.
const queueSize = 64

// Start returns a notifier whose goroutines run until Close or ctx ends.
func Start(ctx context.Context, cfg Config) *Notifier {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Tries <= 0 {
		cfg.Tries = 4
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(ctx)
	n := &Notifier{cfg: cfg, queue: make(chan Event, queueSize), stop: cancel}
	for _, s := range cfg.Sinks {
		q := make(chan Event, queueSize)
		n.sinks = append(n.sinks, q)
		n.wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case e := <-q:
					n.send(ctx, s, e)
				}
			}
		})
	}
	n.wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case e := <-n.queue:
				if n.claim(ctx, e) {
					for _, q := range n.sinks {
						n.push(q, e)
					}
				}
			}
		}
	})
	return n
}

// Post queues e; it never blocks. A zero Time is now.
func (n *Notifier) Post(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	n.push(n.queue, e)
}

// push queues e on q, dropping the oldest event when q is full: a receiver
// down for long loses old news, never blocks new.
func (n *Notifier) push(q chan Event, e Event) {
	for {
		select {
		case q <- e:
			return
		default:
		}
		select {
		case old := <-q:
			n.cfg.Log.Warn("notification queue full; dropped", "id", old.ID)
		default:
		}
	}
}

// Close stops delivering; events still queued are dropped.
func (n *Notifier) Close() {
	n.stop()
	n.wg.Wait()
}

// claim says whether this node sends e: the first to claim its ID.
func (n *Notifier) claim(ctx context.Context, e Event) bool {
	if n.cfg.Claim == nil || e.ID == "" {
		return true
	}
	cctx, cancel := context.WithTimeout(ctx, n.cfg.Timeout)
	defer cancel()
	first, err := n.cfg.Claim.FirstNotice(cctx, e.ID)
	if err != nil {
		// Better twice than never.
		n.cfg.Log.Warn("dedupe notification; sending it anyway", "id", e.ID, "err", err)
		return true
	}
	return first
}

// Send claims e and delivers it to every sink now, each with its tries,
// for a command that exits right after (drover pin).
func (n *Notifier) Send(ctx context.Context, e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	if !n.claim(ctx, e) {
		return
	}
	var wg sync.WaitGroup
	for _, s := range n.cfg.Sinks {
		wg.Go(func() { n.send(ctx, s, e) })
	}
	wg.Wait()
}

func (n *Notifier) send(ctx context.Context, s Sink, e Event) {
	wait := n.cfg.Backoff
	for try := 1; ; try++ {
		tctx, cancel := context.WithTimeout(ctx, n.cfg.Timeout)
		err := s.Send(tctx, e)
		cancel()
		if err == nil {
			n.cfg.Log.Debug("notified", "id", e.ID, "sink", s.Name())
			return
		}
		if try >= n.cfg.Tries || ctx.Err() != nil {
			n.cfg.Log.Warn("notification not delivered", "id", e.ID, "sink", s.Name(), "tries", try, "err", err)
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait *= 2
	}
}

// Webhook posts the event as JSON: the Event itself, or Slack's
// {"text": …} when Slack is set.
type Webhook struct {
	URL   string
	Slack bool
	// Client defaults to http.DefaultClient (the try's ctx bounds it).
	Client *http.Client
}

func (w *Webhook) Name() string {
	if w.Slack {
		return "slack " + redact(w.URL)
	}
	return "webhook " + redact(w.URL)
}

// redact keeps a webhook URL's secret path out of logs.
func redact(u string) string {
	if i := strings.Index(u, "://"); i >= 0 {
		if j := strings.IndexByte(u[i+3:], '/'); j >= 0 {
			return u[:i+3+j] + "/…"
		}
	}
	return u
}

func (w *Webhook) Send(ctx context.Context, e Event) error {
	var body any = e
	if w.Slack {
		body = map[string]string{"text": e.Text}
	}
	data, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("%s: %w", w.Name(), err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "drover")
	c := w.Client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", w.Name(), err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s", w.Name(), resp.Status)
	}
	return nil
}

// Sendmail mails the event through a sendmail-compatible program
// (`sendmail -t -i`: recipients from the headers).
type Sendmail struct {
	Path     string
	From     string
	To       []string
	Hostname string
}

func (m *Sendmail) Name() string { return "sendmail " + strings.Join(m.To, ",") }

func (m *Sendmail) Send(ctx context.Context, e Event) error {
	js, _ := json.MarshalIndent(e, "", "  ")
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nSubject: [drover %s] %s\r\n", m.From, strings.Join(m.To, ", "), e.Cluster, oneLine(e.Text))
	fmt.Fprintf(&b, "Date: %s\r\nMessage-ID: <%d.%s@%s>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
		e.Time.Format(time.RFC1123Z), e.Time.UnixNano(), strings.NewReplacer(":", ".", "/", ".").Replace(e.ID), m.Hostname)
	fmt.Fprintf(&b, "%s\r\n\r\n%s\r\n", e.Text, strings.ReplaceAll(string(js), "\n", "\r\n"))
	cmd := exec.CommandContext(ctx, m.Path, "-t", "-i")
	cmd.Stdin = &b
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s -t -i: %w: %s", m.Path, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func oneLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 150 {
		s = s[:150] + "…"
	}
	return s
}
