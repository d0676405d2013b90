// Package cluster is what the nodes of a drover cluster share, kept in Redis:
// the rollout lock, the node registry, halted revisions, the pause switch,
// the event stream and the sync fan-out.
//
// The contract:
//
//   - The rollout lock (Acquire, AcquireSlots) is a redsync mutex per slot,
//     "lock:slot:0" … "lock:slot:N-1"; a node holds at most one slot. While
//     held it is extended every third of its expiry. The held context is
//     cancelled (cause ErrLockLost) as soon as Redis says the lock is no
//     longer this node's, or when its validity ends without a successful
//     extension; a node never goes on believing it holds a lock that another
//     node may have taken. A node that dies holding the lock frees it when
//     the expiry passes. Acquire also waits while rollouts are paused.
//   - The lock orders nodes; it does not by itself bound how many nodes are
//     out of service (a lock can be lost mid-step). That is the registry's job:
//     before draining, the holder calls WaitCapacity, which counts the
//     registered nodes that are drained, failed or silent past their heartbeat
//     TTL (OutOfService).
//   - Every registered node stays registered until Forget, whether alive or
//     not. A node is alive while its heartbeat key exists; Start re-publishes
//     the last reported status every third of the TTL.
//   - A halted revision is never applied by any node until Clear. Halts and the
//     pause switch are written to every master and need a quorum of them; a
//     read says halted (or paused) when any reachable master says so, and
//     fails when fewer than a quorum answer: doubt stops a rollout.
//   - Pub/sub (PublishSync, Subscribe) only wakes agents; polling remains the
//     way changes are found, so a lost message costs a poll interval.
//
// Several independent masters (Config.Addrs) make the lock a Redlock with a
// quorum of len/2+1; the registry, events, lock-holder records and pub/sub
// live on the first master. With Sentinel everything goes through the
// current master. Redis replication is asynchronous: a failover can lose a
// lock that was just taken. drover's answer is the cancellation above (the
// next extension finds the key gone or someone else's), the capacity check,
// and PostgreSQL's advisory lock around migrations.
//
// Every key is "<Prefix><Cluster>:<name>" (Prefix defaults to "drover:"):
//
//	lock:slot:<i>      redsync mutex of slot i
//	lock:holder:<i>    JSON Holder of slot i, same TTL as the mutex
//	nodes              hash: node → JSON NodeStatus
//	alive:<node>       heartbeat, expires after HeartbeatTTL
//	halted             hash: revision → JSON Halt
//	paused             JSON PauseState
//	pin                JSON nodestate.Pin: the desired revision instead of the branch head
//	events             stream of Event, capped near MaxEvents
//	delivery:<id>      webhook deliveries already seen (24 h)
//	sync               pub/sub channel of sync requests
package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/go-redsync/redsync/v4"
	redsyncredis "github.com/go-redsync/redsync/v4/redis"
	goredis "github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/drover-dev/drover/nodestate"
	"github.com/drover-dev/drover/spec"
)

// Config says how to reach Redis and how the cluster's keys are named.
type Config struct {
	// Addrs is one Redis server, or several independent masters whose
	// majority makes the lock (Redlock).
	Addrs []string
	// SentinelAddrs and MasterName select a Sentinel-managed master instead.
	SentinelAddrs []string
	MasterName    string
	Username      string
	// PasswordFile holds the password (trailing newline ignored).
	PasswordFile string
	// SentinelPasswordFile holds the sentinels' password, if they have one.
	SentinelPasswordFile string
	TLS                  bool
	// CAFile is a PEM bundle that replaces the system roots for TLS.
	CAFile string
	DB     int
	// Prefix starts every key; default "drover:".
	Prefix string
	// Cluster names the cluster in every key, so that clusters can share a
	// Redis; default "default".
	Cluster string

	// LockExpiry is how long a lock outlives its holder's last extension
	// (default 30 s): how soon a dead holder's slot frees.
	LockExpiry time.Duration
	// HeartbeatTTL is how long a node stays alive after its last heartbeat
	// (default 30 s).
	HeartbeatTTL time.Duration
	// PollMax bounds the jittered backoff between tries for the lock, for
	// capacity and for re-subscribing (default 2 s).
	PollMax time.Duration
	// MaxEvents caps the event stream, approximately (default 1000).
	MaxEvents int64
	// HistoryKeep is how many revisions the history keeps (default 500).
	HistoryKeep int
}

// Defaults.
const (
	DefaultPrefix       = "drover:"
	DefaultCluster      = "default"
	DefaultLockExpiry   = 30 * time.Second
	DefaultHeartbeatTTL = 30 * time.Second
	DefaultPollMax      = 2 * time.Second
	DefaultMaxEvents    = 1000
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// withDefaults fills the zero fields.
func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.Cluster == "" {
		c.Cluster = DefaultCluster
	}
	if c.LockExpiry == 0 {
		c.LockExpiry = DefaultLockExpiry
	}
	if c.HeartbeatTTL == 0 {
		c.HeartbeatTTL = DefaultHeartbeatTTL
	}
	if c.PollMax == 0 {
		c.PollMax = DefaultPollMax
	}
	if c.MaxEvents == 0 {
		c.MaxEvents = DefaultMaxEvents
	}
	if c.HistoryKeep == 0 {
		c.HistoryKeep = DefaultHistoryKeep
	}
	return c
}

// Validate reports every bad field at once. node.yaml's cluster section is
// validated by spec, which is stricter than this; Validate catches a Config
// built wrong in code (tests, a new caller), and names each field by the
// node.yaml key it comes from (Addrs is cluster.redis, SentinelAddrs
// cluster.sentinels, Cluster cluster.name) so that the two never disagree.
// Prefix, PollMax and MaxEvents have no node.yaml key and keep their own.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &spec.FieldError{Field: "cluster." + field, Msg: fmt.Sprintf(format, args...)})
	}
	switch {
	case len(c.Addrs) == 0 && len(c.SentinelAddrs) == 0:
		bad("redis", "give the Redis address (or several independent masters), or sentinels with masterName")
	case len(c.Addrs) > 0 && len(c.SentinelAddrs) > 0:
		bad("sentinels", "give either redis or sentinels, not both")
	}
	if len(c.SentinelAddrs) > 0 && c.MasterName == "" {
		bad("masterName", "is required with sentinels")
	}
	for i, a := range c.Addrs {
		if !strings.Contains(a, ":") {
			bad(fmt.Sprintf("redis[%d]", i), "%q is not host:port", a)
		}
	}
	for i, a := range c.SentinelAddrs {
		if !strings.Contains(a, ":") {
			bad(fmt.Sprintf("sentinels[%d]", i), "%q is not host:port", a)
		}
	}
	if c.CAFile != "" && !c.TLS {
		bad("caFile", "is set but tls is not: set tls: true, or drop caFile")
	}
	if c.DB < 0 {
		bad("db", "%d is negative", c.DB)
	}
	if c.Cluster != "" && !nameRE.MatchString(c.Cluster) {
		bad("name", "%q: use letters, digits, '.', '_' and '-'", c.Cluster)
	}
	if strings.ContainsAny(c.Prefix, "*?[] ") {
		bad("prefix", "%q must not contain glob characters or spaces", c.Prefix)
	}
	for field, d := range map[string]time.Duration{"lockExpiry": c.LockExpiry, "heartbeatTTL": c.HeartbeatTTL, "pollMax": c.PollMax} {
		if d < 0 || (d > 0 && d < 100*time.Millisecond) {
			bad(field, "%s is too short (at least 100ms)", d)
		}
	}
	if c.MaxEvents < 0 {
		bad("maxEvents", "must not be negative")
	}
	return errors.Join(errs...)
}

// Cluster is one node's handle on the cluster's shared state. Its methods may
// be called concurrently.
type Cluster struct {
	cfg  Config
	node string
	log  *slog.Logger

	// masters are the lock's Redis servers; masters[0] (the only one unless
	// Redlock) also holds the registry, events and pub/sub.
	masters []redis.UniversalClient
	rs      *redsync.Redsync
	quorum  int

	mu      sync.Mutex
	last    *nodestate.Status
	leases  map[*lease]struct{}
	started bool
	closed  bool
	// closing ends with Close; every goroutine of the handle watches it.
	closing context.Context
	close   context.CancelFunc
	wg      sync.WaitGroup

	// backlog holds the events Emit could not write, oldest first, and
	// dropped counts those it had to drop (see Emit).
	flushMu   sync.Mutex // one flushBacklog at a time
	backlogMu sync.Mutex
	backlog   []Event
	dropped   int
}

// redisLog sends go-redis's own log lines (failed dials, Sentinel's view of
// the master) to the agent's log instead of stderr, where they interleave
// unstructured with the journal and with `drover status`. go-redis has one
// logger per process, so the first Open with a logger sets it.
type redisLog struct{ log *slog.Logger }

var redisLogOnce sync.Once

func (r redisLog) Printf(ctx context.Context, format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if strings.Contains(msg, "new master") {
		r.log.Info("redis: "+msg, "part", "redis")
		return
	}
	r.log.Debug("redis: "+msg, "part", "redis")
}

// Open connects to Redis as node, reading secrets from their files. It fails
// unless a quorum of the masters (the one server, or Sentinel's master)
// answers.
func Open(ctx context.Context, cfg Config, node string, log *slog.Logger) (*Cluster, error) {
	var errs []error
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	if !nameRE.MatchString(node) {
		errs = append(errs, fmt.Errorf("node name %q: use letters, digits, '.', '_' and '-'", node))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	} else {
		redisLogOnce.Do(func() { redis.SetLogger(redisLog{log}) })
	}
	password, err := readSecret(cfg.PasswordFile)
	if err != nil {
		return nil, err
	}
	var tlsConfig *tls.Config
	if cfg.TLS {
		tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.CAFile != "" {
			pem, err := os.ReadFile(cfg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("cluster.caFile: %w", err)
			}
			tlsConfig.RootCAs = x509.NewCertPool()
			if !tlsConfig.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("cluster.caFile: %s holds no PEM certificate", cfg.CAFile)
			}
		}
	}
	timeout := min(cfg.LockExpiry/10, 3*time.Second)
	c := &Cluster{
		cfg:    cfg,
		node:   node,
		log:    log.With("node", node),
		leases: map[*lease]struct{}{},
	}
	c.closing, c.close = context.WithCancel(context.Background())
	if len(cfg.SentinelAddrs) > 0 {
		sentinelPassword, err := readSecret(cfg.SentinelPasswordFile)
		if err != nil {
			return nil, err
		}
		c.masters = []redis.UniversalClient{redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName:       cfg.MasterName,
			SentinelAddrs:    cfg.SentinelAddrs,
			SentinelPassword: sentinelPassword,
			Username:         cfg.Username,
			Password:         password,
			DB:               cfg.DB,
			TLSConfig:        tlsConfig,
			DialTimeout:      timeout,
			ReadTimeout:      timeout,
			WriteTimeout:     timeout,
			MaxRetries:       1,
			DialerRetries:    1,
			ClientName:       "drover-" + node,
			// Open-source Redis refuses CLIENT SETINFO before 7.2; the
			// failover client disables maintenance notifications itself.
			DisableIdentity: true,
		})}
	} else {
		for _, addr := range cfg.Addrs {
			c.masters = append(c.masters, redis.NewClient(&redis.Options{
				Addr:          addr,
				Username:      cfg.Username,
				Password:      password,
				DB:            cfg.DB,
				TLSConfig:     tlsConfig,
				DialTimeout:   timeout,
				ReadTimeout:   timeout,
				WriteTimeout:  timeout,
				MaxRetries:    1,
				DialerRetries: 1,
				ClientName:    "drover-" + node,
				// Open-source Redis rejects CLIENT MAINT_NOTIFICATIONS and,
				// before 7.2, CLIENT SETINFO.
				DisableIdentity:          true,
				MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
			}))
		}
	}
	pools := make([]redsyncredis.Pool, len(c.masters))
	for i, m := range c.masters {
		pools[i] = goredis.NewPool(m)
	}
	c.rs = redsync.New(pools...)
	c.quorum = len(c.masters)/2 + 1

	err = c.onAll(ctx, func(ctx context.Context, r redis.UniversalClient) error { return r.Ping(ctx).Err() })
	if err != nil {
		c.close()
		c.closeClients()
		return nil, fmt.Errorf("connect to redis: %w", err)
	}
	return c, nil
}

// readSecret returns the content of file without trailing newlines; "" for
// no file.
func readSecret(file string) (string, error) {
	if file == "" {
		return "", nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read secret: %w", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// Node is the name this handle reports as.
func (c *Cluster) Node() string { return c.node }

// Name is the cluster's name, part of every key.
func (c *Cluster) Name() string { return c.cfg.Cluster }

// key names a key of this cluster.
func (c *Cluster) key(parts ...string) string {
	return c.cfg.Prefix + c.cfg.Cluster + ":" + strings.Join(parts, ":")
}

// data is the server that holds the registry, events and pub/sub.
func (c *Cluster) data() redis.UniversalClient { return c.masters[0] }

// onAll runs fn on every master at once; it fails when fewer than a quorum
// succeed.
func (c *Cluster) onAll(ctx context.Context, fn func(context.Context, redis.UniversalClient) error) error {
	errs := make([]error, len(c.masters))
	var wg sync.WaitGroup
	for i, m := range c.masters {
		wg.Go(func() { errs[i] = fn(ctx, m) })
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		if err == nil {
			ok++
		}
	}
	if ok >= c.quorum {
		return nil
	}
	return fmt.Errorf("%d of %d redis servers answered, %d needed: %w", ok, len(c.masters), c.quorum, errors.Join(errs...))
}

// Start runs the heartbeat until ctx ends or Close: the last reported status
// is published again every third of the heartbeat TTL, so the node stays
// alive (and re-registers after a Redis restart or failover).
func (c *Cluster) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("cluster: Start after Close")
	}
	if c.started {
		return errors.New("cluster: already started")
	}
	c.started = true
	c.goroutine(ctx, c.heartbeat)
	return nil
}

// goroutine runs fn in a goroutine that Close waits for; fn's context ends
// with ctx or at Close. The caller holds c.mu.
func (c *Cluster) goroutine(ctx context.Context, fn func(context.Context)) {
	ctx, cancel := context.WithCancel(ctx)
	unwatch := context.AfterFunc(c.closing, cancel)
	c.wg.Go(func() {
		defer cancel()
		defer unwatch()
		fn(ctx)
	})
}

// Close releases the locks this handle still holds, stops its goroutines
// and closes the connections. The node's registration stays: a stopped agent
// counts as silent until it comes back or is forgotten.
func (c *Cluster) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	leases := make([]*lease, 0, len(c.leases))
	for l := range c.leases {
		leases = append(leases, l)
	}
	c.close()
	c.mu.Unlock()
	var errs []error
	for _, l := range leases {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		errs = append(errs, l.release(ctx))
		cancel()
	}
	c.wg.Wait()
	c.closeClients()
	return errors.Join(errs...)
}

func (c *Cluster) closeClients() {
	for _, m := range c.masters {
		_ = m.Close()
	}
}

// backoff is a jittered exponential delay, from PollMax/20 up to PollMax.
type backoff struct {
	min, max, cur time.Duration
}

func (c *Cluster) newBackoff() *backoff {
	return &backoff{min: max(c.cfg.PollMax/20, 10*time.Millisecond), max: c.cfg.PollMax}
}

// wait sleeps for the next delay, or until ctx ends.
func (b *backoff) wait(ctx context.Context) error {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(b.cur*2, b.max)
	}
	d := b.cur/2 + jitter(b.cur/2)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}

func (b *backoff) reset() { b.cur = 0 }
