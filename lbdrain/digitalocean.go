package lbdrain

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/digitalocean/godo"
)

// DigitalOcean's defaults for a load balancer's health check, used when the
// API leaves a setting out.
const (
	doDefaultInterval  = 10
	doDefaultTimeout   = 5
	doDefaultUnhealthy = 3
	doDefaultHealthy   = 5
)

// digitalOcean drains this droplet from a DigitalOcean load balancer: it
// removes the droplet from the LB's droplet list, or removes the LB's tag
// from the droplet when the LB selects droplets by tag, and adds it back.
// The API has no per-droplet health, so the waits follow the LB's own
// health-check settings, and Undrain watches the LB's checks arrive at the
// node (the health access log, as the healthcheck driver does).
type digitalOcean struct {
	api         *godo.Client
	lbID        string
	metadataURL string
	dropletID   int // 0 until read from the metadata service
	accessLog   string
	margin      time.Duration // 0: one check interval plus the check timeout
	timeout     time.Duration
	inflight    *inflightWaiter
	retry       retryPolicy
	// second is how long one second of the LB's settings lasts; tests
	// shorten it to run the real waits quickly.
	second time.Duration
	log    *slog.Logger
	outcome
}

func newDigitalOcean(cfg Config, log *slog.Logger) (*digitalOcean, error) {
	c := cfg.DigitalOcean
	b, err := os.ReadFile(c.TokenFile)
	if err != nil {
		return nil, fieldError("digitalocean.tokenFile", err.Error())
	}
	token := strings.TrimSpace(string(b))
	if token == "" {
		return nil, fieldError("digitalocean.tokenFile", c.TokenFile+" is empty")
	}
	apiURL := c.APIURL
	if apiURL == "" {
		apiURL = "https://api.digitalocean.com/"
	}
	if !strings.HasSuffix(apiURL, "/") {
		apiURL += "/"
	}
	metadataURL := strings.TrimSuffix(c.MetadataURL, "/")
	if metadataURL == "" {
		metadataURL = "http://169.254.169.254"
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: bearer{token: token, base: http.DefaultTransport}}
	api, err := godo.New(hc, godo.SetBaseURL(apiURL), godo.SetUserAgent("drover-lbdrain"))
	if err != nil {
		return nil, fieldError("digitalocean.apiURL", err.Error())
	}
	return &digitalOcean{
		api: api, lbID: c.LoadBalancerID, metadataURL: metadataURL, dropletID: c.DropletID,
		accessLog: cfg.HealthCheck.AccessLog, margin: c.Margin, timeout: cfg.DrainTimeout,
		inflight: newInflightWaiter(cfg.StatusURL), retry: defaultRetry(), second: time.Second,
		log: log.With("lb", c.LoadBalancerID),
	}, nil
}

// bearer authenticates every API request with the token.
type bearer struct {
	token string
	base  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.base.RoundTrip(r)
}

// droplet returns this droplet's ID, read once from the metadata service.
func (d *digitalOcean) droplet(ctx context.Context) (int, error) {
	if d.dropletID != 0 {
		return d.dropletID, nil
	}
	url := d.metadataURL + "/metadata/v1/id"
	var id int
	err := d.retry.do(ctx, d.log, "GET "+url, func(ctx context.Context) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, err
		}
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 64))
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			return resp, fmt.Errorf("status %d", resp.StatusCode)
		}
		if id, err = strconv.Atoi(strings.TrimSpace(string(body))); err != nil || id <= 0 {
			return resp, fmt.Errorf("%q is not a droplet ID", body)
		}
		return resp, nil
	})
	if err != nil {
		return 0, fmt.Errorf("droplet ID from the metadata service: %w", err)
	}
	d.dropletID = id
	return id, nil
}

// lbState is what Drain and Undrain need to know of the load balancer.
type lbState struct {
	member bool
	tag    string
	// Health-check settings in seconds.
	interval, timeout, unhealthy, healthy int
	// check is the LB's health check as the API gave it (nil if none).
	check *godo.HealthCheck
}

func (d *digitalOcean) state(ctx context.Context) (lbState, int, error) {
	id, err := d.droplet(ctx)
	if err != nil {
		return lbState{}, 0, err
	}
	var lb *godo.LoadBalancer
	err = d.retry.do(ctx, d.log, "get load balancer "+d.lbID, func(ctx context.Context) (*http.Response, error) {
		var resp *godo.Response
		lb, resp, err = d.api.LoadBalancers.Get(ctx, d.lbID)
		return httpResponse(resp), err
	})
	if err != nil {
		return lbState{}, 0, err
	}
	s := lbState{member: slices.Contains(lb.DropletIDs, id), tag: lb.Tag,
		interval: doDefaultInterval, timeout: doDefaultTimeout, unhealthy: doDefaultUnhealthy, healthy: doDefaultHealthy,
		check: lb.HealthCheck}
	if h := lb.HealthCheck; h != nil {
		for _, f := range []struct {
			dst *int
			v   int
		}{
			{&s.interval, h.CheckIntervalSeconds}, {&s.timeout, h.ResponseTimeoutSeconds},
			{&s.unhealthy, h.UnhealthyThreshold}, {&s.healthy, h.HealthyThreshold},
		} {
			if f.v > 0 {
				*f.dst = f.v
			}
		}
	}
	return s, id, nil
}

func httpResponse(r *godo.Response) *http.Response {
	if r == nil {
		return nil
	}
	return r.Response
}

func (d *digitalOcean) windowMargin(s lbState) time.Duration {
	if d.margin > 0 {
		return d.margin
	}
	return d.second * time.Duration(s.interval+s.timeout)
}

// fallWindow is how long the LB may still send requests after the change:
// its check interval × unhealthy threshold, plus the margin.
func (d *digitalOcean) fallWindow(s lbState) time.Duration {
	return d.second*time.Duration(s.interval*s.unhealthy) + d.windowMargin(s)
}

func (d *digitalOcean) riseWindow(s lbState) time.Duration {
	return d.second*time.Duration(s.interval*s.healthy) + d.windowMargin(s)
}

func (d *digitalOcean) dropletResource(id int) []godo.Resource {
	return []godo.Resource{{ID: strconv.Itoa(id), Type: godo.DropletResourceType}}
}

// Drain removes the droplet from the LB (or the LB's tag from the droplet),
// waits the LB's fall window, then until no request reached nginx for one of
// the LB's check intervals with none in flight (the quiet-counter rule, see
// waitQuiet), at most DrainTimeout. A droplet already
// out is not changed, but the window is still waited: nothing tells when it
// left.
func (d *digitalOcean) Drain(ctx context.Context) error {
	d.reset()
	s, id, err := d.state(ctx)
	if err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	if s.member {
		op, call := fmt.Sprintf("remove droplet %d from load balancer %s", id, d.lbID), func(ctx context.Context) (*godo.Response, error) {
			return d.api.LoadBalancers.RemoveDroplets(ctx, d.lbID, id)
		}
		if s.tag != "" {
			op, call = fmt.Sprintf("untag droplet %d from %q", id, s.tag), func(ctx context.Context) (*godo.Response, error) {
				return d.api.Tags.UntagResources(ctx, s.tag, &godo.UntagResourcesRequest{Resources: d.dropletResource(id)})
			}
		}
		if err := d.retry.do(ctx, d.log, op, godoCall(call)); err != nil {
			return fmt.Errorf("drain: %w", err)
		}
		d.log.Info("droplet left the load balancer; waiting its health-check window", "droplet", id, "tag", s.tag, "window", d.fallWindow(s))
	} else {
		d.log.Info("droplet already out of the load balancer; waiting its health-check window", "droplet", id, "window", d.fallWindow(s))
	}
	if err := sleepCtx(ctx, d.fallWindow(s)); err != nil {
		return fmt.Errorf("drain: wait for the load balancer: %w", err)
	}
	// Out of the droplet list, the droplet gets no more checks from the
	// LB; any it still gets (the API's change not yet applied everywhere)
	// are in the health log and are not requests.
	var hw *healthWatch
	if d.accessLog != "" {
		if hw, err = watchHealthLog(d.accessLog, time.Now()); err != nil {
			return fmt.Errorf("drain: %w", err)
		}
	}
	return d.inflight.quiet(ctx, hw, d.second*time.Duration(s.interval), time.Now().Add(d.timeout), d.log, &d.outcome)
}

// Undrain adds the droplet back (or tags it) and waits until the LB's checks
// were seen answered 200 healthy-threshold times from every checking
// address, or the rise window passed without a check seen.
func (d *digitalOcean) Undrain(ctx context.Context) error {
	s, id, err := d.state(ctx)
	if err != nil {
		return fmt.Errorf("undrain: %w", err)
	}
	since := time.Now()
	if s.member && d.accessLog != "" {
		since = since.Add(-d.riseWindow(s)) // a second call, a restart: recent checks count
	} else if !s.member {
		op, call := fmt.Sprintf("add droplet %d to load balancer %s", id, d.lbID), func(ctx context.Context) (*godo.Response, error) {
			return d.api.LoadBalancers.AddDroplets(ctx, d.lbID, id)
		}
		if s.tag != "" {
			op, call = fmt.Sprintf("tag droplet %d with %q", id, s.tag), func(ctx context.Context) (*godo.Response, error) {
				return d.api.Tags.TagResources(ctx, s.tag, &godo.TagResourcesRequest{Resources: d.dropletResource(id)})
			}
		}
		if err := d.retry.do(ctx, d.log, op, godoCall(call)); err != nil {
			return fmt.Errorf("undrain: %w", err)
		}
	}
	if err := waitSeenHealthy(ctx, d.accessLog, since, s.healthy, d.riseWindow(s), d.log); err != nil {
		return fmt.Errorf("undrain: %w", err)
	}
	return nil
}

// Drained reports whether the droplet is missing from the LB's droplets.
func (d *digitalOcean) Drained(ctx context.Context) (bool, error) {
	s, _, err := d.state(ctx)
	if err != nil {
		return false, fmt.Errorf("drained: %w", err)
	}
	return !s.member, nil
}

func godoCall(f func(context.Context) (*godo.Response, error)) func(context.Context) (*http.Response, error) {
	return func(ctx context.Context) (*http.Response, error) {
		resp, err := f(ctx)
		return httpResponse(resp), err
	}
}

// retryPolicy retries API calls that failed for a passing reason: 429, 5xx,
// a 403 "can't be updated while it processes previous actions", a network
// error. Waits grow exponentially with jitter, and are at least what the
// API asks for (Retry-After, or RateLimit-Reset once RateLimit-Remaining is
// 0).
type retryPolicy struct {
	attempts  int
	base, max time.Duration
	sleep     func(context.Context, time.Duration) error
	now       func() time.Time
}

func defaultRetry() retryPolicy {
	return retryPolicy{attempts: 8, base: time.Second, max: 30 * time.Second, sleep: sleepCtx, now: time.Now}
}

func (p retryPolicy) do(ctx context.Context, log *slog.Logger, op string, call func(context.Context) (*http.Response, error)) error {
	for attempt := 1; ; attempt++ {
		resp, err := call(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", op, ctx.Err())
		}
		if !retryable(resp, err) {
			return fmt.Errorf("%s: %w", op, err)
		}
		if attempt >= p.attempts {
			return fmt.Errorf("%s: %w (gave up after %d attempts)", op, err, attempt)
		}
		wait := p.delay(attempt, resp)
		if dl, ok := ctx.Deadline(); ok && p.now().Add(wait).After(dl) {
			return fmt.Errorf("%s: %w (the next attempt, in %s, is past the deadline)", op, err, wait.Round(time.Millisecond))
		}
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		log.Warn("API call failed; retrying", "op", op, "status", status, "attempt", attempt, "wait", wait.Round(time.Millisecond), "err", err)
		if err := p.sleep(ctx, wait); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
	}
}

func retryable(resp *http.Response, err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if resp == nil {
		return true // the request did not get an answer: network
	}
	switch c := resp.StatusCode; {
	case c == http.StatusTooManyRequests, c >= 500:
		return true
	case c == http.StatusForbidden:
		return strings.Contains(strings.ToLower(err.Error()), "processes previous actions")
	}
	return false
}

// delay is the wait before attempt+1: base·2^(attempt-1), capped, with up to
// half of it random; at least Retry-After, and at least until RateLimit-Reset
// when the response says no request remains.
func (p retryPolicy) delay(attempt int, resp *http.Response) time.Duration {
	d := p.base << min(attempt-1, 20)
	if d > p.max || d <= 0 {
		d = p.max
	}
	d = d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
	if resp == nil {
		return d
	}
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		if s, err := strconv.Atoi(ra); err == nil {
			d = max(d, time.Duration(s)*time.Second)
		} else if t, err := http.ParseTime(ra); err == nil {
			d = max(d, t.Sub(p.now()))
		}
	}
	if resp.Header.Get("RateLimit-Remaining") == "0" {
		if s, err := strconv.ParseInt(resp.Header.Get("RateLimit-Reset"), 10, 64); err == nil {
			d = max(d, time.Unix(s, 0).Sub(p.now()))
		}
	}
	return d
}
