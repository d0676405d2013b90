package notify

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// server is a real HTTP receiver answering each request with answer(n),
// n counting from 1; answer may block until the request's context ends.
func server(t *testing.T, answer func(n int64, r *http.Request) int) (*httptest.Server, *atomic.Int64, chan Event) {
	var n atomic.Int64
	got := make(chan Event, 100)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		code := answer(n.Add(1), r)
		if code == 200 {
			var e Event
			if err := json.Unmarshal(body, &e); err == nil {
				got <- e
			}
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(s.Close)
	return s, &n, got
}

type memClaim struct {
	mu   sync.Mutex
	seen map[string]bool
}

func (m *memClaim) FirstNotice(_ context.Context, id string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.seen[id] {
		return false, nil
	}
	m.seen[id] = true
	return true, nil
}

// TestSlowReceiversDelayOnlyThemselves: with one receiver that hangs and
// one that answers, Post returns at once, the good receiver gets every
// event promptly, and the hung one's tries each end at the timeout.
func TestSlowReceiversDelayOnlyThemselves(t *testing.T) {
	hung, hungN, _ := server(t, func(_ int64, r *http.Request) int { <-r.Context().Done(); return 200 })
	good, _, got := server(t, func(int64, *http.Request) int { return 200 })
	n := Start(t.Context(), Config{
		Sinks:   []Sink{&Webhook{URL: hung.URL}, &Webhook{URL: good.URL}},
		Timeout: 200 * time.Millisecond, Tries: 2, Backoff: 50 * time.Millisecond,
	})
	defer n.Close()
	start := time.Now()
	for i := range 10 {
		n.Post(Event{ID: string(rune('a' + i)), Kind: KindStarted, Text: "x"})
	}
	if took := time.Since(start); took > 50*time.Millisecond {
		t.Errorf("10 Posts took %s: Post must not wait for a receiver", took)
	}
	for i := range 10 {
		select {
		case <-got:
		case <-time.After(2 * time.Second):
			t.Fatalf("the good receiver got %d of 10 events within 2 s: the hung one held it up", i)
		}
	}
	t.Logf("10 events at the good receiver after %s beside a hung one", time.Since(start).Round(time.Millisecond))
	// Each try at the hung one ends at the timeout: 2 tries of the first
	// event take ~450 ms, then the next event's tries begin.
	time.Sleep(time.Second)
	if c := hungN.Load(); c < 3 || c > 6 {
		t.Errorf("the hung receiver got %d requests in ~1 s, want 3-6 (tries bounded by the 200 ms timeout)", c)
	}
}

// TestRetriesAndDedupe: a receiver that answers 500 twice gets the event on
// the third try, exactly once; an event claimed already is not sent.
func TestRetriesAndDedupe(t *testing.T) {
	srv, count, got := server(t, func(n int64, _ *http.Request) int {
		if n <= 2 {
			return 500
		}
		return 200
	})
	claim := &memClaim{seen: map[string]bool{"halted:old": true}}
	n := Start(t.Context(), Config{Sinks: []Sink{&Webhook{URL: srv.URL}}, Claim: claim, Timeout: time.Second, Backoff: 10 * time.Millisecond})
	defer n.Close()
	n.Post(Event{ID: "halted:old", Kind: KindHalted, Text: "old"})
	n.Post(Event{ID: "halted:new", Kind: KindHalted, Node: "n2", Error: "boom", Text: "new"})
	n.Post(Event{ID: "halted:new", Kind: KindHalted, Text: "again"})
	select {
	case e := <-got:
		if e.ID != "halted:new" || e.Node != "n2" || e.Error != "boom" || e.Text != "new" || e.Time.IsZero() {
			t.Errorf("delivered %+v", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not delivered after two 500s")
	}
	time.Sleep(200 * time.Millisecond)
	if c := count.Load(); c != 3 {
		t.Errorf("%d requests, want 3 (two 500s, one success; the claimed and the duplicate never sent)", c)
	}
}
