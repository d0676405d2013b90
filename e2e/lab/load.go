package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Load is a load generator: Clients concurrent users, each sending one
// request after another (with Think between them) through the load
// balancer, over keep-alive connections, as a browser would. Every answer
// other than the expected status, and every transport error, is a failure.
type Load struct {
	requests atomic.Int64
	failed   atomic.Int64
	mu       sync.Mutex
	errors   map[string]int   // failure → count
	bodies   map[string]int64 // per target: distinct answers (versions seen)
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	start    time.Time
}

// Target is one kind of request of the load.
type Target struct {
	Name   string
	Method string
	Host   string
	Path   string
	Body   string
	Status int // expected; default 200
	// Record keeps the distinct answer bodies (e.g. a version endpoint).
	Record bool
}

// DefaultTargets are the example platform's pages and API calls.
var DefaultTargets = []Target{
	{Name: "blog", Method: "GET", Host: "blog.example.com", Path: "/"},
	{Name: "blog-post", Method: "GET", Host: "www.example.com", Path: "/posts/rolling-updates.html"},
	{Name: "app", Method: "GET", Host: "app.example.com", Path: "/some/spa/route"},
	{Name: "api-version", Method: "GET", Host: "app.example.com", Path: "/api/version", Record: true},
	{Name: "api-feedback", Method: "POST", Host: "api.example.com", Path: "/feedback", Body: `{"text":"maybe we could perhaps ship it"}`},
	{Name: "admin", Method: "GET", Host: "admin.example.com", Path: "/healthz"},
}

// LoadResult is what a load saw.
type LoadResult struct {
	Requests int64
	Failed   int64
	Errors   map[string]int
	Answers  map[string]int64 // recorded answers → count
	Took     time.Duration
}

func (r LoadResult) String() string {
	var errs []string
	for e, n := range r.Errors {
		errs = append(errs, fmt.Sprintf("%d× %s", n, e))
	}
	sort.Strings(errs)
	return fmt.Sprintf("%d requests in %s (%.0f/s), %d failed %v", r.Requests, r.Took.Round(time.Millisecond),
		float64(r.Requests)/r.Took.Seconds(), r.Failed, errs)
}

// StartLoad starts clients users sending targets in turn to the LB.
func (l *Lab) StartLoad(ctx context.Context, clients int, think time.Duration, targets []Target) *Load {
	ctx, cancel := context.WithCancel(ctx)
	ld := &Load{errors: map[string]int{}, bodies: map[string]int64{}, cancel: cancel, start: time.Now()}
	lb := l.LBAddr()
	for i := range clients {
		ld.wg.Add(1)
		go func() {
			defer ld.wg.Done()
			// One connection per user, like a browser tab.
			tr := &http.Transport{
				DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
				MaxIdleConnsPerHost: 1,
				IdleConnTimeout:     30 * time.Second,
			}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
			for k := i; ctx.Err() == nil; k++ {
				ld.one(ctx, c, lb, targets[k%len(targets)])
				if think > 0 {
					select {
					case <-ctx.Done():
					case <-time.After(think):
					}
				}
			}
		}()
	}
	return ld
}

func (ld *Load) one(ctx context.Context, c *http.Client, lb string, t Target) {
	var body io.Reader
	if t.Body != "" {
		body = strings.NewReader(t.Body)
	}
	req, err := http.NewRequestWithContext(ctx, t.Method, "http://"+lb+t.Path, body)
	if err != nil {
		ld.fail(t.Name + ": " + err.Error())
		return
	}
	req.Host = t.Host
	if t.Body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if ctx.Err() != nil {
		return // stopped: not a request the site failed
	}
	ld.requests.Add(1)
	if err != nil {
		ld.fail(t.Name + ": " + err.Error())
		return
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := t.Status
	if want == 0 {
		want = http.StatusOK
	}
	switch {
	case err != nil && ctx.Err() == nil:
		ld.fail(t.Name + ": reading the body: " + err.Error())
	case err != nil:
	case resp.StatusCode != want:
		ld.fail(fmt.Sprintf("%s: status %d", t.Name, resp.StatusCode))
	case t.Record:
		ld.mu.Lock()
		ld.bodies[t.Name+" "+strings.TrimSpace(string(b))]++
		ld.mu.Unlock()
	}
}

func (ld *Load) fail(what string) {
	ld.failed.Add(1)
	ld.mu.Lock()
	ld.errors[what]++
	ld.mu.Unlock()
}

// Snapshot is the result so far.
func (ld *Load) Snapshot() LoadResult {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	r := LoadResult{Requests: ld.requests.Load(), Failed: ld.failed.Load(), Errors: map[string]int{}, Answers: map[string]int64{}, Took: time.Since(ld.start)}
	for k, v := range ld.errors {
		r.Errors[k] = v
	}
	for k, v := range ld.bodies {
		r.Answers[k] = v
	}
	return r
}

// Stop ends the load and returns what it saw.
func (ld *Load) Stop() LoadResult {
	ld.cancel()
	ld.wg.Wait()
	return ld.Snapshot()
}
