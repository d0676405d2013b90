package lbdrain

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// stubStatus is nginx's stub_status page:
//
//	Active connections: 291
//	server accepts handled requests
//	 16630948 16630948 31070465
//	Reading: 6 Writing: 179 Waiting: 106
type stubStatus struct {
	Active, Accepts, Handled, Requests int64
	Reading, Writing, Waiting          int64
}

// InFlight is the number of requests nginx is working on, not counting the
// status request that asked: a request is Reading (its header) or Writing
// (everything after, proxying included) until its response is sent; idle
// keep-alive connections are Waiting and do not count.
func (s stubStatus) InFlight() int64 {
	if n := s.Reading + s.Writing - 1; n > 0 {
		return n
	}
	return 0
}

func parseStubStatus(text string) (stubStatus, error) {
	var s stubStatus
	f := strings.Fields(text)
	// Active connections: N server accepts handled requests A H R Reading: r Writing: w Waiting: i
	want := []string{"Active", "connections:", "", "server", "accepts", "handled", "requests", "", "", "", "Reading:", "", "Writing:", "", "Waiting:", ""}
	if len(f) != len(want) {
		return s, fmt.Errorf("stub_status: %d fields, want %d: %q", len(f), len(want), text)
	}
	nums := map[int]*int64{2: &s.Active, 7: &s.Accepts, 8: &s.Handled, 9: &s.Requests, 11: &s.Reading, 13: &s.Writing, 15: &s.Waiting}
	for i, w := range want {
		if p, ok := nums[i]; ok {
			n, err := strconv.ParseInt(f[i], 10, 64)
			if err != nil || n < 0 {
				return s, fmt.Errorf("stub_status: field %d %q is not a count: %q", i, f[i], text)
			}
			*p = n
		} else if f[i] != w {
			return s, fmt.Errorf("stub_status: found %q where %q belongs: %q", f[i], w, text)
		}
	}
	return s, nil
}

// inflightWaiter reads nginx's stub_status until no request is in flight.
type inflightWaiter struct {
	url    string
	client *http.Client
	poll   time.Duration
}

func newInflightWaiter(statusURL string) *inflightWaiter {
	if statusURL == "" {
		return nil
	}
	return &inflightWaiter{
		url: statusURL,
		// A new connection per read, so the reader's own idle connection
		// never shows up in the counts.
		client: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Second},
		poll:   100 * time.Millisecond,
	}
}

func (w *inflightWaiter) read(ctx context.Context) (stubStatus, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.url, nil)
	if err != nil {
		return stubStatus{}, err
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return stubStatus{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return stubStatus{}, fmt.Errorf("GET %s: %w", w.url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return stubStatus{}, fmt.Errorf("GET %s: status %d", w.url, resp.StatusCode)
	}
	return parseStubStatus(string(body))
}

// wait returns when nginx reports no request in flight, or when timeout
// passes with requests still in flight (nil error, a warning, and the
// count); it returns an error when ctx ends or when the status page cannot
// be read until the timeout, since then nothing is known. A nil waiter (no
// StatusURL) has nothing to wait for.
func (w *inflightWaiter) wait(ctx context.Context, timeout time.Duration, log *slog.Logger) (int64, error) {
	if w == nil {
		return 0, nil
	}
	start := time.Now()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	var last int64 = -1
	var lastErr error
	for {
		s, err := w.read(ctx)
		switch {
		case err == nil && s.InFlight() == 0:
			log.Debug("no request in flight", "took", time.Since(start).Round(time.Millisecond))
			return 0, nil
		case err == nil:
			last, lastErr = s.InFlight(), nil
		case ctx.Err() == nil:
			lastErr = err
		}
		select {
		case <-ctx.Done():
			return last, fmt.Errorf("wait for in-flight requests: %w", ctx.Err())
		case <-deadline.C:
			if lastErr != nil {
				return last, fmt.Errorf("wait for in-flight requests: nginx status unreadable for %s: %w", timeout, lastErr)
			}
			log.Warn("drain timeout passed with requests in flight; going on", "inflight", last, "took", time.Since(start).Round(time.Millisecond))
			return last, nil
		case <-time.After(w.poll):
		}
	}
}
