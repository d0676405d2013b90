package gitsource

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/file"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"golang.org/x/crypto/ssh"
)

// Traffic is what ls-remote and fetch moved over HTTP: request and
// response bodies, without headers.
type Traffic struct {
	Requests int64
	Sent     int64
	Received int64
}

type counter struct {
	requests, sent, received atomic.Int64
}

func (c *counter) load() Traffic {
	return Traffic{Requests: c.requests.Load(), Sent: c.sent.Load(), Received: c.received.Load()}
}

// countingTransport counts the requests and body bytes that pass through.
type countingTransport struct {
	base http.RoundTripper
	c    *counter
}

func (t *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.c.requests.Add(1)
	if req.Body != nil {
		req = req.Clone(req.Context())
		req.Body = &countingBody{ReadCloser: req.Body, n: &t.c.sent}
	}
	res, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	res.Body = &countingBody{ReadCloser: res.Body, n: &t.c.received}
	return res, nil
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// newHTTPClient is go-git's HTTP transport on a client of its own, so the
// counting stays per repository and go-git's global protocol table is left
// alone.
func newHTTPClient(base http.RoundTripper, c *counter) transport.Transport {
	return githttp.NewClient(&http.Client{Transport: &countingTransport{base: base, c: c}})
}

// auth builds the credentials from their files, read now.
func (r *Repo) auth() (transport.AuthMethod, error) {
	switch r.ep.Protocol {
	case "ssh":
		pem, err := os.ReadFile(r.cfg.SSHKeyFile)
		if err != nil {
			return nil, fmt.Errorf("read ssh key: %w", err)
		}
		user := r.ep.User
		if user == "" {
			user = "git"
		}
		keys, err := gitssh.NewPublicKeys(user, pem, "")
		if err != nil {
			return nil, fmt.Errorf("parse ssh key %s: %w", r.cfg.SSHKeyFile, err)
		}
		db, err := gitssh.NewKnownHostsDb(r.cfg.KnownHostsFile)
		if err != nil {
			return nil, fmt.Errorf("read known hosts %s: %w", r.cfg.KnownHostsFile, err)
		}
		port := r.ep.Port
		if port == 0 {
			port = gitssh.DefaultPort
		}
		keys.HostKeyCallback = db.HostKeyCallback()
		keys.HostKeyAlgorithms = db.HostKeyAlgorithms(net.JoinHostPort(r.ep.Host, strconv.Itoa(port)))
		return &sshAuth{PublicKeys: keys}, nil
	case "http", "https":
		if r.cfg.TokenFile == "" {
			return nil, nil
		}
		b, err := os.ReadFile(r.cfg.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("read token: %w", err)
		}
		token := strings.TrimSpace(string(b))
		if token == "" {
			return nil, fmt.Errorf("read token: %s is empty", r.cfg.TokenFile)
		}
		return &githttp.BasicAuth{Username: r.cfg.TokenUser, Password: token}, nil
	}
	return nil, nil
}

// sshDialTimeout bounds the TCP connect of an ssh session.
const sshDialTimeout = 30 * time.Second

// sshAuth adds a dial timeout to go-git's public-key auth.
type sshAuth struct{ *gitssh.PublicKeys }

func (a *sshAuth) ClientConfig() (*ssh.ClientConfig, error) {
	c, err := a.PublicKeys.ClientConfig()
	if err != nil {
		return nil, err
	}
	c.Timeout = sshDialTimeout
	return c, nil
}

// session opens an upload-pack session (the fetch side of the protocol).
// go-git opens ssh and file sessions without a context, so the connect runs
// aside and is abandoned, and closed when it completes, if ctx ends first.
func (r *Repo) session(ctx context.Context) (transport.UploadPackSession, error) {
	auth, err := r.auth()
	if err != nil {
		return nil, err
	}
	var c transport.Transport
	switch r.ep.Protocol {
	case "http", "https":
		// Connection-less: requests carry ctx.
		return r.httpc.NewUploadPackSession(r.ep, auth)
	case "ssh":
		c = gitssh.DefaultClient
	default:
		c = file.DefaultClient
	}
	type result struct {
		s   transport.UploadPackSession
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := c.NewUploadPackSession(r.ep, auth)
		done <- result{s, err}
	}()
	select {
	case res := <-done:
		return res.s, res.err
	case <-ctx.Done():
		go func() {
			if res := <-done; res.s != nil {
				res.s.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// redact drops a password from a URL, for logs and errors.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	if _, ok := u.User.Password(); ok {
		return u.Redacted()
	}
	return raw
}
