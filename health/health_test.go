package health

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestWaitNeedsSuccessesInARow(t *testing.T) {
	// healthy, sick, then healthy for good: a streak must restart after the sick answer.
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 2 {
			http.Error(w, "db down", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := Wait(ctx, []Check{{Name: "api", URL: srv.URL, Successes: 3, Interval: time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	if got := n.Load(); got != 5 {
		t.Fatalf("%d requests, want 5 (1 ok, 1 bad, 3 ok in a row)", got)
	}
}

func TestWaitDeadlineNamesTheFailure(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host != "app.example.com" {
			http.Error(w, "wrong host "+r.Host, http.StatusNotFound)
			return
		}
		http.Error(w, "crashing", http.StatusBadGateway)
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := Wait(ctx, []Check{
		{Name: "site app", URL: srv.URL, Host: "app.example.com", Interval: 10 * time.Millisecond},
		{Name: "worker api 0", URL: "http://127.0.0.1:1/healthz", Interval: 10 * time.Millisecond},
	})
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{"site app", "status 502", "crashing", "worker api 0", "connection refused"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

// nginx picks a TLS site by SNI and rejects unknown names, so a check of a
// site through nginx must send the site's name in the handshake.
func TestWaitSendsHostAsTLSServerName(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || r.TLS.ServerName != "blog.example.com" || r.Host != "blog.example.com" {
			http.Error(w, "wrong SNI or Host", http.StatusMisdirectedRequest)
		}
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := Wait(ctx, []Check{{Name: "site blog", URL: srv.URL, Host: "blog.example.com", Interval: 10 * time.Millisecond}}); err != nil {
		t.Fatal(err)
	}
}

// TestWaitProbesAStartingTargetOften: until the first good answer a target
// is asked every FirstProbe, so a worker that comes up 300 ms after its
// restart is seen up then, not an Interval later; once it answered well, the
// checks keep their Interval. (With a 5 s Interval, probing at the Interval
// would send one request in the first 5 s and take over 10 s in all.)
func TestWaitProbesAStartingTargetOften(t *testing.T) {
	up := time.Now().Add(300 * time.Millisecond)
	var mu sync.Mutex
	var times []time.Time // when each request came
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		times = append(times, time.Now())
		mu.Unlock()
		if time.Now().Before(up) {
			http.Error(w, "starting", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := Wait(ctx, []Check{{Name: "api", URL: srv.URL, Successes: 2, Interval: 5 * time.Second}}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	n := len(times)
	if n < 4 {
		t.Fatalf("%d requests, want the starting target asked every %s (≥ 3 before it is up, then 2 good ones)", n, FirstProbe)
	}
	if gap := times[n-1].Sub(times[n-2]); gap < 5*time.Second-50*time.Millisecond {
		t.Errorf("the two good answers were %s apart, want the 5s Interval", gap)
	}
	if first := times[n-2].Sub(up); first > 4*time.Second {
		t.Errorf("the first good answer came %s after the target was up, want about %s", first, FirstProbe)
	}
}
