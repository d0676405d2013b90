// Package health runs HTTP checks that must pass several times in a row
// within a deadline: one success proves little (a process that answers once
// and then crashes), so a target counts as healthy only after Successes
// consecutive good answers, Interval apart, and any bad answer starts the
// count again. Until a target has answered well once (a worker instance
// still starting), it is asked every FirstProbe rather than every Interval:
// waiting up to a whole Interval to notice that it is up would add to every
// restart, and so to the time a node is out of the load balancer.
package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Check is one HTTP endpoint (or a TCP address, or a program) and what
// counts as healthy.
type Check struct {
	// Name says what is checked, for errors: "worker api instance 1".
	Name string
	// URL is requested with GET.
	URL string
	// TCP, when set instead of URL, is a host:port that must accept a
	// connection.
	TCP string
	// Exec, when set instead of URL, is a program that must exit 0.
	Exec *Program
	// Host overrides the Host header (checking a site through nginx).
	Host string
	// Status is the expected status code (default 200).
	Status int
	// Successes in a row make the target healthy (default 1).
	Successes int
	// Interval between attempts (default 1s).
	Interval time.Duration
	// Timeout bounds one request (default 2s).
	Timeout time.Duration
}

// newClient makes the HTTP client of one check. It never reuses
// connections, so that each attempt proves a fresh connection is accepted.
// It sends the check's Host as the TLS server name (nginx picks the site's
// server block, and refuses handshakes for unknown names) and skips
// certificate verification: checks go to this node's own nginx by address.
func newClient(host string) *http.Client {
	tlsConf := insecureTLS()
	tlsConf.ServerName = host
	return &http.Client{
		Transport: &http.Transport{
			DisableKeepAlives: true,
			TLSClientConfig:   tlsConf,
			DialContext:       (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Probe makes one attempt of c with a client of its own and returns nil if
// the target is healthy.
func (c Check) Probe(ctx context.Context) error {
	if c.URL == "" {
		return c.Once(ctx, nil)
	}
	return c.Once(ctx, newClient(c.Host))
}

// Target is what c checks, for messages.
func (c Check) Target() string {
	switch {
	case c.TCP != "":
		return "tcp " + c.TCP
	case c.Exec != nil:
		return "exec " + c.Exec.Argv[0]
	}
	return c.URL
}

// Once makes one request and returns nil if the answer is the expected one.
func (c Check) Once(ctx context.Context, client *http.Client) error {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	switch {
	case c.TCP != "":
		return dialOnce(ctx, c.TCP, timeout)
	case c.Exec != nil:
		return c.Exec.run(ctx, timeout)
	}
	want := c.Status
	if want == 0 {
		want = http.StatusOK
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "drover-health")
	if c.Host != "" {
		req.Host = c.Host
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	// Read a page to its end, so a kept-alive connection (Prober) can
	// carry the next attempt.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 256<<10))
	if resp.StatusCode != want {
		return fmt.Errorf("status %d, want %d: %s", resp.StatusCode, want, strings.TrimSpace(string(body)))
	}
	return nil
}

// Wait runs all checks concurrently until each has passed Successes times in
// a row, or ctx ends. The error names every check that was not healthy and
// its last failure.
func Wait(ctx context.Context, checks []Check) error {
	errs := make(chan error, len(checks))
	for _, c := range checks {
		go func() {
			var client *http.Client
			if c.URL != "" {
				client = newClient(c.Host)
			}
			errs <- c.wait(ctx, client)
		}()
	}
	var all []error
	for range checks {
		if err := <-errs; err != nil {
			all = append(all, err)
		}
	}
	return errors.Join(all...)
}

// FirstProbe is how often a check asks a target that has not answered
// well yet.
const FirstProbe = 100 * time.Millisecond

func (c Check) wait(ctx context.Context, client *http.Client) error {
	need := max(c.Successes, 1)
	interval := c.Interval
	if interval <= 0 {
		interval = time.Second
	}
	streak, succeeded := 0, false
	var last error
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if last == nil {
				last = ctx.Err()
			}
			return fmt.Errorf("%s (%s): not healthy (%d of %d checks passed in a row): %w", c.Name, c.Target(), streak, need, last)
		case <-t.C:
		}
		if err := c.Once(ctx, client); err != nil {
			if ctx.Err() == nil {
				streak, last = 0, err
			}
		} else {
			streak, succeeded = streak+1, true
			if streak >= need {
				return nil
			}
		}
		if succeeded {
			t.Reset(interval)
		} else {
			t.Reset(min(interval, FirstProbe))
		}
	}
}
