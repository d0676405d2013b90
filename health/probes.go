package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/drover-dev/drover/internal/command"
)

// dialOnce proves that addr accepts a TCP connection within timeout.
func dialOnce(ctx context.Context, addr string, timeout time.Duration) error {
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}

// Program is a check that runs a program. A config repo must not be a way
// to run code as root on every node, so when the agent runs as root the
// program runs as nobody, with an empty environment, from /.
type Program struct {
	Argv []string
}

// nobody is the user and group programs run as under a root agent.
const nobody = 65534

func (p *Program) run(ctx context.Context, timeout time.Duration) error {
	if len(p.Argv) == 0 {
		return errors.New("exec check: empty argv")
	}
	c := command.Cmd{Argv: p.Argv, Dir: "/", Env: []string{"PATH=/usr/bin:/bin"}, Timeout: timeout}
	if os.Geteuid() == 0 {
		c.Credential = &syscall.Credential{Uid: nobody, Gid: nobody, NoSetGroups: true}
	}
	if _, err := command.Run(ctx, c); err != nil {
		var ce *command.Error
		if errors.As(err, &ce) && ce.TimedOut {
			return fmt.Errorf("%s: timed out after %s", p.Argv[0], timeout)
		}
		return err
	}
	return nil
}

// Prober makes repeated single attempts of checks, as the steady-state guard
// does every few seconds, over kept-alive connections: a fresh connection
// and TLS handshake per attempt would cost more CPU than everything else the
// idle agent does (rollouts still use Wait, whose every attempt proves a
// new connection is accepted). An attempt on a connection the target closed
// meanwhile is retried on a new one by net/http (GET has no body), so a
// restarted instance does not fail its check for that.
type Prober struct {
	mu      sync.Mutex
	clients map[string]*http.Client
}

// NewProber returns a Prober with no connections yet.
func NewProber() *Prober { return &Prober{clients: map[string]*http.Client{}} }

// Probe makes one attempt of c.
func (p *Prober) Probe(ctx context.Context, c Check) error {
	if c.URL == "" {
		return c.Once(ctx, nil)
	}
	return c.Once(ctx, p.client(c.Host))
}

func (p *Prober) client(host string) *http.Client {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cl, ok := p.clients[host]; ok {
		return cl
	}
	cl := newClient(host)
	tr := cl.Transport.(*http.Transport)
	tr.DisableKeepAlives = false
	tr.MaxIdleConnsPerHost = 4
	tr.IdleConnTimeout = time.Minute
	p.clients[host] = cl
	return cl
}

// Close drops the kept connections.
func (p *Prober) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, cl := range p.clients {
		cl.CloseIdleConnections()
	}
	clear(p.clients)
}
