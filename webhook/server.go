package webhook

import (
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// The receiver's server bounds. The webhook listener is reachable through
// the LB by anyone, so a client must not be able to hold it: a body sent
// slower than BodyTimeout is cut, at most MaxConns connections are served
// at once (the rest wait in the kernel's accept queue), and refused
// requests cannot flood the log.
const (
	// DefaultBodyTimeout bounds reading a whole request, headers and body:
	// a forge sends its (at most 1 MiB) payload in well under a second.
	DefaultBodyTimeout = 12 * time.Second
	// DefaultHeaderTimeout bounds reading the request headers.
	DefaultHeaderTimeout = 5 * time.Second
	// DefaultMaxConns is how many connections are served at once; a forge
	// sends one delivery at a time.
	DefaultMaxConns = 32
)

// ServerConfig tunes NewServer and Listen; zero values are the defaults.
type ServerConfig struct {
	BodyTimeout   time.Duration
	HeaderTimeout time.Duration
	MaxConns      int
}

func (c ServerConfig) withDefaults() ServerConfig {
	if c.BodyTimeout <= 0 {
		c.BodyTimeout = DefaultBodyTimeout
	}
	if c.HeaderTimeout <= 0 {
		c.HeaderTimeout = DefaultHeaderTimeout
	}
	if c.MaxConns <= 0 {
		c.MaxConns = DefaultMaxConns
	}
	return c
}

// NewServer returns the http.Server for the receiver: a request that is
// not wholly read within BodyTimeout is cut, and so is a response not
// written within BodyTimeout + the trigger's bound.
func NewServer(h http.Handler, cfg ServerConfig) *http.Server {
	cfg = cfg.withDefaults()
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: cfg.HeaderTimeout,
		ReadTimeout:       cfg.BodyTimeout,
		WriteTimeout:      cfg.BodyTimeout + DefaultTimeout + 5*time.Second,
		IdleTimeout:       30 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
}

// LimitListener serves at most n connections of ln at once: Accept waits
// while n are open.
func LimitListener(ln net.Listener, n int) net.Listener {
	if n <= 0 {
		n = DefaultMaxConns
	}
	return &limitListener{Listener: ln, sem: make(chan struct{}, n), done: make(chan struct{})}
}

type limitListener struct {
	net.Listener
	sem       chan struct{}
	closeOnce sync.Once
	done      chan struct{}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// warnLimiter lets through at most burst WARN lines per period; the first
// line after a quiet spell says how many were left out. Refused requests
// are the attacker's to send: without it, each one is a line of the
// node's journal.
type warnLimiter struct {
	mu         sync.Mutex
	now        func() time.Time
	period     time.Duration
	burst      int
	start      time.Time
	n          int
	suppressed int
}

const (
	warnBurst  = 10
	warnPeriod = time.Minute
)

func newWarnLimiter(now func() time.Time) *warnLimiter {
	return &warnLimiter{now: now, period: warnPeriod, burst: warnBurst}
}

// warn logs msg unless the period's burst is spent.
func (w *warnLimiter) warn(log *slog.Logger, msg string, args ...any) {
	w.mu.Lock()
	now := w.now()
	if now.Sub(w.start) >= w.period {
		w.start, w.n = now, 0
	}
	if w.n >= w.burst {
		w.suppressed++
		w.mu.Unlock()
		return
	}
	w.n++
	left := w.suppressed
	w.suppressed = 0
	w.mu.Unlock()
	if left > 0 {
		args = append(args, "suppressed", left)
	}
	log.Warn(msg, args...)
}
