package lab

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
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
	requests    atomic.Int64
	failed      atomic.Int64
	slow        atomic.Int64
	unnamed     atomic.Int64 // answers that named no revision
	lostChanges atomic.Int64 // changes of revision past maxChanges
	mu          sync.Mutex
	errors      map[string]int   // failure → count
	bodies      map[string]int64 // per target: distinct answers (versions seen)
	byRev       map[string]int64 // answers by X-Drover-Revision
	changes     map[string][]RevisionChange
	cancel      context.CancelFunc
	wg          sync.WaitGroup
	start       time.Time
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
	// Slow counts the answers (good or not) that took longer than
	// SlowAnswer: requests a hung node held, that a node which never came
	// back would have failed.
	Slow    int64
	Errors  map[string]int
	Answers map[string]int64 // recorded answers → count
	// ByRevision counts the answers by the revision that gave them
	// (nginx.revisionHeader's X-Drover-Revision).
	ByRevision map[string]int64
	// Changes lists, per node (X-Drover-Node), each time its answers
	// came from another revision than its answer before: the first answer
	// of the load, then every switch (and every late answer of the release
	// before, as nginx's old workers finish theirs).
	Changes map[string][]RevisionChange
	// Unnamed counts the answers without X-Drover-Revision (HAProxy's own
	// 503 when no node is up, or a node without revisionHeader), and
	// LostChanges the changes past maxChanges: answers not checked.
	Unnamed, LostChanges int64
	Took                 time.Duration
}

// RevisionChange is when a node's answers began to come from Rev.
type RevisionChange struct {
	At  time.Time
	Rev string
}

// maxChanges bounds the changes kept per node.
const maxChanges = 10000

func (r LoadResult) String() string {
	var errs []string
	for e, n := range r.Errors {
		errs = append(errs, fmt.Sprintf("%d× %s", n, e))
	}
	sort.Strings(errs)
	return fmt.Sprintf("%d requests in %s (%.0f/s), %d failed %v, %d slower than %s", r.Requests, r.Took.Round(time.Millisecond),
		float64(r.Requests)/r.Took.Seconds(), r.Failed, errs, r.Slow, SlowAnswer)
}

// SlowAnswer is the time past which an answer counts as slow.
const SlowAnswer = 3 * time.Second

// StartLoad starts clients users sending targets in turn to the LB.
func (l *Lab) StartLoad(ctx context.Context, clients int, think time.Duration, targets []Target) *Load {
	ctx, cancel := context.WithCancel(ctx)
	ld := &Load{errors: map[string]int{}, bodies: map[string]int64{}, byRev: map[string]int64{},
		changes: map[string][]RevisionChange{}, cancel: cancel, start: time.Now()}
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
	start := time.Now()
	resp, err := c.Do(req)
	if ctx.Err() != nil {
		return // stopped: not a request the site failed
	}
	ld.requests.Add(1)
	if time.Since(start) > SlowAnswer {
		ld.slow.Add(1)
	}
	if err != nil {
		ld.fail(t.Name + ": " + err.Error())
		return
	}
	if rev := resp.Header.Get("X-Drover-Revision"); rev != "" {
		ld.answeredBy(resp.Header.Get("X-Drover-Node"), rev, time.Now())
	} else {
		ld.unnamed.Add(1)
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

func (ld *Load) answeredBy(node, rev string, at time.Time) {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	ld.byRev[rev]++
	cs := ld.changes[node]
	if len(cs) == 0 || cs[len(cs)-1].Rev != rev {
		if len(cs) >= maxChanges {
			ld.lostChanges.Add(1)
			return
		}
		ld.changes[node] = append(cs, RevisionChange{At: at, Rev: rev})
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
	r := LoadResult{Requests: ld.requests.Load(), Failed: ld.failed.Load(), Slow: ld.slow.Load(), Errors: map[string]int{}, Answers: map[string]int64{}, Took: time.Since(ld.start)}
	for k, v := range ld.errors {
		r.Errors[k] = v
	}
	for k, v := range ld.bodies {
		r.Answers[k] = v
	}
	r.ByRevision = maps.Clone(ld.byRev)
	r.Unnamed, r.LostChanges = ld.unnamed.Load(), ld.lostChanges.Load()
	r.Changes = map[string][]RevisionChange{}
	for n, cs := range ld.changes {
		r.Changes[n] = slices.Clone(cs)
	}
	return r
}

// Stop ends the load and returns what it saw.
func (ld *Load) Stop() LoadResult {
	ld.cancel()
	ld.wg.Wait()
	return ld.Snapshot()
}
