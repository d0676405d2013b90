package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const secret = "correct horse battery staple"

func hexMAC(key string, body []byte) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// provider describes how one forge sends a delivery, as its documentation
// says.
type provider struct {
	name string
	// headers for an event with a delivery id.
	headers func(event, id string) http.Header
	// sign adds the proof of key for body.
	sign func(h http.Header, key string, body []byte)
	push func(branch string) []byte
	// pushEvent and pingEvent are the event names ("" for no ping).
	pushEvent, pingEvent string
}

var providers = []provider{
	{
		name: GitHub,
		headers: func(event, id string) http.Header {
			return http.Header{"X-Github-Event": {event}, "X-Github-Delivery": {id}}
		},
		sign: func(h http.Header, key string, body []byte) {
			h.Set("X-Hub-Signature-256", "sha256="+hexMAC(key, body))
		},
		push: func(b string) []byte {
			return fmt.Appendf(nil, `{"ref":"refs/heads/%s","after":"0123abcd","repository":{"full_name":"acme/config"}}`, b)
		},
		pushEvent: "push", pingEvent: "ping",
	},
	{
		name: GitLab,
		headers: func(event, id string) http.Header {
			return http.Header{"X-Gitlab-Event": {event}, "X-Gitlab-Event-Uuid": {id}}
		},
		sign: func(h http.Header, key string, _ []byte) { h.Set("X-Gitlab-Token", key) },
		push: func(b string) []byte {
			return fmt.Appendf(nil, `{"object_kind":"push","ref":"refs/heads/%s","after":"0123abcd"}`, b)
		},
		pushEvent: "Push Hook",
	},
	{
		name: Gitea,
		headers: func(event, id string) http.Header {
			// Gitea also sends GitHub's and Gogs' headers.
			return http.Header{"X-Gitea-Event": {event}, "X-Gitea-Delivery": {id}, "X-Github-Event": {event}, "X-Gogs-Event": {event}}
		},
		sign:      func(h http.Header, key string, body []byte) { h.Set("X-Gitea-Signature", hexMAC(key, body)) },
		push:      func(b string) []byte { return fmt.Appendf(nil, `{"ref":"refs/heads/%s","after":"0123abcd"}`, b) },
		pushEvent: "push",
	},
	{
		name: Forgejo,
		headers: func(event, id string) http.Header {
			return http.Header{"X-Forgejo-Event": {event}, "X-Forgejo-Delivery": {id}, "X-Gitea-Event": {event}, "X-Gitea-Delivery": {id}}
		},
		sign:      func(h http.Header, key string, body []byte) { h.Set("X-Forgejo-Signature", hexMAC(key, body)) },
		push:      func(b string) []byte { return fmt.Appendf(nil, `{"ref":"refs/heads/%s","after":"0123abcd"}`, b) },
		pushEvent: "push",
	},
	{
		name: Bitbucket,
		headers: func(event, id string) http.Header {
			return http.Header{"X-Event-Key": {event}, "X-Request-Uuid": {id}, "X-Hook-Uuid": {"the-same-for-every-delivery"}}
		},
		sign: func(h http.Header, key string, body []byte) { h.Set("X-Hub-Signature", "sha256="+hexMAC(key, body)) },
		push: func(b string) []byte {
			return fmt.Appendf(nil, `{"push":{"changes":[{"new":{"type":"branch","name":%q,"target":{"hash":"0123abcd"}},"old":null}]}}`, b)
		},
		pushEvent: "repo:push", pingEvent: "diagnostics:ping",
	},
}

// recorder is a trigger that counts its calls.
type recorder struct {
	mu      sync.Mutex
	reasons []string
	err     error
	delay   time.Duration
}

func (r *recorder) trigger(ctx context.Context, reason string) error {
	select {
	case <-time.After(r.delay):
	case <-ctx.Done():
		return ctx.Err()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reasons = append(r.reasons, reason)
	return r.err
}

func (r *recorder) calls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.reasons)
}

func secretFile(t *testing.T, content string) string {
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func newHandler(t *testing.T, cfg Config, trigger Trigger) *Handler {
	t.Helper()
	if cfg.SecretFile == "" {
		cfg.SecretFile = secretFile(t, secret+"\n")
	}
	if cfg.Branch == "" {
		cfg.Branch = "main"
	}
	h, err := New(cfg, trigger)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func post(h http.Handler, hdr http.Header, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/hooks/drover", bytes.NewReader(body))
	for k, v := range hdr {
		req.Header[http.CanonicalHeaderKey(k)] = v
	}
	req.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

type deliveryCase struct {
	name     string
	hdr      http.Header
	body     []byte
	status   int
	triggers int // syncs triggered so far
}

// Every provider: valid, forged, unsigned, tampered, wrong-branch,
// oversized, duplicate and ping deliveries, with real signatures.
func TestDeliveries(t *testing.T) {
	for _, p := range providers {
		t.Run(p.name, func(t *testing.T) {
			rec := &recorder{}
			h := newHandler(t, Config{MaxBody: 4096}, rec.trigger)
			n := 0
			delivery := func(event, key string, body []byte) http.Header {
				n++
				hdr := p.headers(event, fmt.Sprintf("%s-delivery-%d", p.name, n))
				if key != "" {
					p.sign(hdr, key, body)
				}
				return hdr
			}
			good := p.push("main")
			validHdr := delivery(p.pushEvent, secret, good)
			huge := append(p.push("main"), bytes.Repeat([]byte(" "), 5000)...)
			tampered := p.push("main")
			tamperedHdr := delivery(p.pushEvent, secret, p.push("other"))
			cases := []deliveryCase{
				{"forged", delivery(p.pushEvent, "guessed secret", good), good, http.StatusUnauthorized, 0},
				{"unsigned", delivery(p.pushEvent, "", good), good, http.StatusUnauthorized, 0},
				{"wrong branch", delivery(p.pushEvent, secret, p.push("feature/x")), p.push("feature/x"), http.StatusOK, 0},
				{"oversized", delivery(p.pushEvent, secret, huge), huge, http.StatusRequestEntityTooLarge, 0},
				{"valid", validHdr, good, http.StatusAccepted, 1},
				{"duplicate", validHdr, good, http.StatusOK, 1},
				{"another push", delivery(p.pushEvent, secret, good), good, http.StatusAccepted, 2},
			}
			if p.name != GitLab { // GitLab's token does not cover the body
				cases = append(cases, deliveryCase{"tampered body", tamperedHdr, tampered, http.StatusUnauthorized, 2})
			}
			if p.pingEvent != "" {
				ping := []byte(`{"zen":"Keep it logically awesome.","hook_id":1}`)
				cases = append(cases, deliveryCase{"ping", delivery(p.pingEvent, secret, ping), ping, http.StatusOK, 2})
			}
			for _, tc := range cases {
				w := post(h, tc.hdr, tc.body)
				if w.Code != tc.status {
					t.Errorf("%s: status %d (%s), want %d", tc.name, w.Code, strings.TrimSpace(w.Body.String()), tc.status)
				}
				if got := rec.calls(); got != tc.triggers {
					t.Errorf("%s: %d syncs triggered so far, want %d", tc.name, got, tc.triggers)
				}
			}
			if rec.calls() > 0 && !strings.Contains(rec.reasons[0], p.name+" push to refs/heads/main") {
				t.Errorf("reason %q", rec.reasons[0])
			}
		})
	}
}

// A forged request carrying the id of a future delivery must not make the
// genuine one look like a duplicate.
func TestForgedDeliveryDoesNotPoisonDedupe(t *testing.T) {
	rec := &recorder{}
	h := newHandler(t, Config{}, rec.trigger)
	gh := providers[0]
	body := gh.push("main")
	forged := gh.headers("push", "future-id")
	gh.sign(forged, "wrong", body)
	if w := post(h, forged, body); w.Code != http.StatusUnauthorized {
		t.Fatalf("forged: %d", w.Code)
	}
	real := gh.headers("push", "future-id")
	gh.sign(real, secret, body)
	if w := post(h, real, body); w.Code != http.StatusAccepted || rec.calls() != 1 {
		t.Fatalf("genuine delivery after a forged one with its id: %d, %d syncs", w.Code, rec.calls())
	}
}

// A failed or slow trigger answers 503 within the timeout, and a
// redelivery of that push is tried again.
func TestTriggerFailure(t *testing.T) {
	rec := &recorder{err: errors.New("redis down")}
	h := newHandler(t, Config{Timeout: 200 * time.Millisecond}, rec.trigger)
	gh := providers[0]
	body := gh.push("main")
	hdr := gh.headers("push", "d1")
	gh.sign(hdr, secret, body)
	if w := post(h, hdr, body); w.Code != http.StatusServiceUnavailable {
		t.Fatalf("failed trigger: %d", w.Code)
	}
	rec.mu.Lock()
	rec.err, rec.delay = nil, time.Hour
	rec.mu.Unlock()
	start := time.Now()
	if w := post(h, hdr, body); w.Code != http.StatusServiceUnavailable {
		t.Fatalf("redelivery with a hanging trigger: %d", w.Code)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("answered after %s with a 200ms trigger timeout", took)
	}
	rec.mu.Lock()
	rec.delay = 0
	rec.mu.Unlock()
	if w := post(h, hdr, body); w.Code != http.StatusAccepted {
		t.Fatalf("redelivery once the trigger works: %d", w.Code)
	}
}

// memDeduper stands for the cluster's shared record of deliveries.
type memDeduper struct {
	mu   sync.Mutex
	seen map[string]bool
}

func (m *memDeduper) FirstDelivery(_ context.Context, id string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.seen[id] {
		return false, nil
	}
	m.seen[id] = true
	return true, nil
}

// A redelivery that the load balancer sends to another node is ignored
// there too.
func TestSharedDedupe(t *testing.T) {
	shared := &memDeduper{seen: map[string]bool{}}
	rec := &recorder{}
	a := newHandler(t, Config{Dedupe: shared}, rec.trigger)
	b := newHandler(t, Config{Dedupe: shared}, rec.trigger)
	gl := providers[1]
	body := gl.push("main")
	hdr := gl.headers("Push Hook", "evt-1")
	hdr.Set("Idempotency-Key", "same-across-retries")
	gl.sign(hdr, secret, body)
	if w := post(a, hdr, body); w.Code != http.StatusAccepted {
		t.Fatalf("node a: %d", w.Code)
	}
	hdr.Set("X-Gitlab-Event-UUID", "evt-2") // a retry: new event uuid, same key
	if w := post(b, hdr, body); w.Code != http.StatusOK || rec.calls() != 1 {
		t.Fatalf("retry on node b: %d, %d syncs", w.Code, rec.calls())
	}
}

func TestProviderRestrictionAndConfig(t *testing.T) {
	rec := &recorder{}
	h := newHandler(t, Config{Provider: GitHub, Branch: "refs/heads/main"}, rec.trigger)
	gl := providers[1]
	body := gl.push("main")
	hdr := gl.headers("Push Hook", "x")
	gl.sign(hdr, secret, body)
	if w := post(h, hdr, body); w.Code != http.StatusUnauthorized || rec.calls() != 0 {
		t.Errorf("GitLab delivery to a GitHub-only endpoint: %d", w.Code)
	}
	if w := post(h, http.Header{}, []byte("{}")); w.Code != http.StatusUnauthorized {
		t.Errorf("no provider headers: %d", w.Code)
	}
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", w.Code)
	}

	_, err := New(Config{SecretFile: secretFile(t, "\n"), Branch: "a b", Provider: "svn"}, nil)
	for _, want := range []string{"trigger", "webhook.branch", "webhook.provider", "is empty"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New: %v does not mention %s", err, want)
		}
	}
	if _, err := New(Config{Branch: "main"}, rec.trigger); err == nil {
		t.Error("New without a secret file succeeded")
	}
}

func TestLRUIsBounded(t *testing.T) {
	l := newLRU(3)
	for _, k := range []string{"a", "b", "c", "d"} {
		if !l.add(k) {
			t.Fatalf("%s seen before", k)
		}
	}
	if !l.add("a") {
		t.Error("a should have been evicted")
	}
	if l.add("d") {
		t.Error("d forgotten")
	}
	if len(l.keys) != 3 || l.order.Len() != 3 {
		t.Errorf("holds %d keys", len(l.keys))
	}
}
