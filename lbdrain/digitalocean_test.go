package lbdrain

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The requests are exactly the documented ones, in order, and the waits
// follow the LB's own health-check settings: after removing, interval ×
// unhealthy threshold + margin; after adding, until both of the LB's checkers
// got 200 healthy-threshold times.
func TestDigitalOceanRequestsAndWaits(t *testing.T) {
	for _, tag := range []string{"", "web"} {
		t.Run("tag="+tag, func(t *testing.T) {
			t.Parallel()
			f, _, cfg := doSetup(t, tag, true)
			d := f.driver(t, cfg)
			ctx := context.Background()
			lb := "/v2/load_balancers/" + f.lbID
			remove, add := "DELETE "+lb+"/droplets", "POST "+lb+"/droplets"
			if tag != "" {
				remove, add = "DELETE /v2/tags/web/resources", "POST /v2/tags/web/resources"
			}
			// interval 10 s × unhealthy 3 + margin (interval 10 s + timeout 5 s), one "second" = 20 ms
			fall := 45 * f.unit
			start := time.Now()
			if err := d.Drain(ctx); err != nil {
				t.Fatal(err)
			}
			if took := time.Since(start); took < fall {
				t.Errorf("Drain returned after %s, before the LB's fall window %s", took, fall)
			}
			if want := []string{"GET " + lb, remove}; !slices.Equal(f.callLog(), want) {
				t.Errorf("Drain made %q, want %q", f.callLog(), want)
			}
			if f.member() {
				t.Error("the droplet is still behind the LB")
			}

			added := time.Now()
			if err := d.Undrain(ctx); err != nil {
				t.Fatal(err)
			}
			seen := f.okPollsSince(added)
			t.Logf("Undrain took %s; checks answered 200 since the add: %v", time.Since(added).Round(time.Millisecond), seen)
			for _, c := range []string{"127.0.0.2", "127.0.0.3"} {
				if seen[c] < 5 {
					t.Errorf("Undrain returned after %d good checks from %s, want the LB's healthy threshold 5", seen[c], c)
				}
			}
			if want := []string{"GET " + lb, remove, "GET " + lb, add}; !slices.Equal(f.callLog(), want) {
				t.Errorf("calls %q, want %q", f.callLog(), want)
			}
		})
	}
}

// Without a health access log, Undrain waits the LB's rise window: interval
// × healthy threshold + margin.
func TestDigitalOceanUndrainUnobservedWaitsRiseWindow(t *testing.T) {
	t.Parallel()
	f, _, cfg := doSetup(t, "", false)
	f.setMembers(3164445)
	d := f.driver(t, cfg)
	start := time.Now()
	if err := d.Undrain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if took, rise := time.Since(start), 65*f.unit; took < rise {
		t.Errorf("Undrain returned after %s, before the LB's rise window %s", took, rise)
	}
}

// A node whose health endpoint answers 503 is added back, but Undrain says
// the LB does not see it healthy instead of claiming it serves.
func TestDigitalOceanUndrainUnhealthyNodeFails(t *testing.T) {
	t.Parallel()
	f, n, cfg := doSetup(t, "", true)
	f.setMembers(3164445)
	n.setUp(t, false)
	err := f.driver(t, cfg).Undrain(context.Background())
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("Undrain of an unhealthy node: %v, want the LB's checks answered 503", err)
	}
}

// 429 (with Retry-After and RateLimit-* headers), 503 and the 403 of a busy
// LB are retried with backoff that honours the headers; the retry count is
// exact.
func TestDigitalOceanRetries(t *testing.T) {
	t.Parallel()
	f, _, cfg := doSetup(t, "", false)
	lb := "/v2/load_balancers/" + f.lbID
	reset := time.Now().Add(7 * time.Second).Unix()
	f.injectN(1, "GET", lb, 500, nil, `{"id":"server_error","message":"Unexpected server-side error"}`)
	f.injectN(1, "DELETE", lb+"/droplets", 429, map[string]string{
		"Retry-After": "3", "RateLimit-Limit": "5000", "RateLimit-Remaining": "0", "RateLimit-Reset": strconv.FormatInt(reset, 10),
	}, bodyRate)
	f.injectN(1, "DELETE", lb+"/droplets", 503, nil, body503)
	f.injectN(2, "DELETE", lb+"/droplets", 403, nil, bodyBusy)
	d := f.driver(t, cfg)
	if err := d.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	calls := f.callLog()
	if want := []string{"GET " + lb, "GET " + lb, "DELETE " + lb + "/droplets", "DELETE " + lb + "/droplets",
		"DELETE " + lb + "/droplets", "DELETE " + lb + "/droplets", "DELETE " + lb + "/droplets"}; !slices.Equal(calls, want) {
		t.Errorf("calls %q, want %q", calls, want)
	}
	if f.failures != 5 || len(f.slept) != 5 {
		t.Fatalf("%d failures answered, %d retry waits; want 5 and 5", f.failures, len(f.slept))
	}
	if f.member() {
		t.Error("droplet still behind the LB after the retries")
	}
	// Waits: 500 after attempt 1 of GET (0.5-1 s); 429: until RateLimit-Reset
	// (~7 s, more than Retry-After 3 s); 503 after attempt 2 (1-2 s); 403 after
	// attempts 3 and 4 (2-4 s, 4-8 s).
	for i, lo := range []time.Duration{500 * time.Millisecond, 5900 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second} {
		if w := f.slept[i]; w < lo || w > 8*time.Second {
			t.Errorf("retry wait %d = %s, want between %s and 8s", i, w, lo)
		}
	}
}

// An error that retrying cannot fix is returned at once, naming the
// operation and the API's message; an LB that stays busy is given up on
// after the attempts; a rate limit beyond the deadline is not waited for.
func TestDigitalOceanRefusals(t *testing.T) {
	t.Parallel()
	f, _, cfg := doSetup(t, "", false)
	lb := "/v2/load_balancers/" + f.lbID
	d := f.driver(t, cfg)

	f.injectN(1, "DELETE", lb+"/droplets", 403, nil, bodyDeny)
	err := d.Drain(context.Background())
	if err == nil || !strings.Contains(err.Error(), "remove droplet 3164444") || !strings.Contains(err.Error(), "do not have access") {
		t.Fatalf("Drain refused by the API: %v", err)
	}
	if len(f.slept) != 0 || !f.member() {
		t.Fatalf("a 403 refusal was retried (%d waits) or changed the LB", len(f.slept))
	}

	f.injectN(8, "DELETE", lb+"/droplets", 403, nil, bodyBusy)
	err = d.Drain(context.Background())
	if err == nil || !strings.Contains(err.Error(), "gave up after 8 attempts") || !strings.Contains(err.Error(), "previous actions") {
		t.Fatalf("Drain of an LB busy for good: %v", err)
	}
	if n := len(f.slept); n != 7 {
		t.Fatalf("%d retry waits, want 7 for 8 attempts", n)
	}

	f.injectN(1, "DELETE", lb+"/droplets", 429, map[string]string{"Retry-After": "60"}, bodyRate)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = d.Drain(ctx)
	if err == nil || !strings.Contains(err.Error(), "past the deadline") {
		t.Fatalf("Drain rate-limited past its deadline: %v", err)
	}
	if !f.member() {
		t.Error("the droplet left the LB although every removal failed")
	}
}

func TestRetryDelayHonoursHeaders(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	p := retryPolicy{attempts: 8, base: time.Second, max: 30 * time.Second, now: func() time.Time { return now }}
	resp := func(h map[string]string) *http.Response {
		r := &http.Response{StatusCode: 429, Header: http.Header{}}
		for k, v := range h {
			r.Header.Set(k, v)
		}
		return r
	}
	for _, c := range []struct {
		name    string
		attempt int
		resp    *http.Response
		lo, hi  time.Duration
	}{
		{"first backoff", 1, nil, 500 * time.Millisecond, time.Second},
		{"capped", 12, nil, 15 * time.Second, 30 * time.Second},
		{"Retry-After seconds", 1, resp(map[string]string{"Retry-After": "9"}), 9 * time.Second, 9 * time.Second},
		{"Retry-After date", 1, resp(map[string]string{"Retry-After": now.Add(20 * time.Second).UTC().Format(http.TimeFormat)}), 20 * time.Second, 20 * time.Second},
		{"RateLimit-Reset when none remain", 1, resp(map[string]string{"RateLimit-Remaining": "0", "RateLimit-Reset": fmt.Sprint(now.Unix() + 42)}), 42 * time.Second, 42 * time.Second},
		{"RateLimit-Reset ignored while some remain", 1, resp(map[string]string{"RateLimit-Remaining": "10", "RateLimit-Reset": fmt.Sprint(now.Unix() + 42)}), 500 * time.Millisecond, time.Second},
	} {
		for range 20 {
			if d := p.delay(c.attempt, c.resp); d < c.lo || d > c.hi {
				t.Errorf("%s: delay %s, want within [%s, %s]", c.name, d, c.lo, c.hi)
				break
			}
		}
	}
}
