// Package webhook receives push webhooks from GitHub, GitLab, Gitea,
// Forgejo and Bitbucket, and asks the cluster to sync when the watched
// branch moved.
//
// The contract of Handler, for every request:
//
//   - The body is read up to MaxBody (default 1 MiB); beyond, 413. Served
//     by NewServer on a LimitListener (as the agent does), a request not
//     wholly read within 12 s is cut, and at most 32 connections are
//     served at once.
//   - Refused requests are logged at WARN at most 10 times a minute; the
//     next line counts those left out ("suppressed").
//   - The request must prove it knows the secret, in its provider's way:
//     GitHub X-Hub-Signature-256 "sha256=<hex HMAC-SHA256 of the body>",
//     Gitea X-Gitea-Signature and Forgejo X-Forgejo-Signature "<hex HMAC>",
//     Bitbucket X-Hub-Signature "sha256=<hex HMAC>", GitLab X-Gitlab-Token
//     "<secret>". Every comparison is constant-time. A request without a valid
//     proof gets 401 and has no effect at all (it does not even enter the
//     duplicate-delivery cache).
//   - A ping (GitHub ping, Bitbucket diagnostics:ping) gets 200.
//   - A push to another branch, a tag or another event gets 200 and is
//     ignored; so is a delivery id seen before (a bounded in-memory cache,
//     plus an optional Deduper shared by all nodes).
//   - A push to the watched branch calls the trigger, bounded by Timeout:
//     202 when it succeeded, 503 when it failed (the provider shows the
//     failure and may redeliver).
//
// The trigger only wakes agents: they still fetch and verify the branch
// themselves, so nothing in the payload is trusted beyond "look now".
package webhook

import (
	"bytes"
	"container/list"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// Config configures a Handler.
type Config struct {
	// SecretFile holds the shared secret (trailing newline ignored).
	SecretFile string
	// Branch is the watched branch, "main" or "refs/heads/main".
	Branch string
	// Provider, if set, is the only provider accepted: github, gitlab,
	// gitea, forgejo or bitbucket. Empty accepts any, told apart by headers.
	Provider string
	// MaxBody bounds the request body; default 1 MiB.
	MaxBody int64
	// Timeout bounds the trigger; default 3 s.
	Timeout time.Duration
	// Dedupe, if set, shares the delivery ids seen among nodes.
	Dedupe Deduper
	Log    *slog.Logger
}

// Trigger asks for a sync (the agent passes cluster.PublishSync, or a local
// trigger).
type Trigger func(ctx context.Context, reason string) error

// Deduper records delivery ids across nodes (cluster.Cluster does, with a
// Redis SET NX).
type Deduper interface {
	// FirstDelivery records id and says whether it was new.
	FirstDelivery(ctx context.Context, id string) (bool, error)
}

// Defaults.
const (
	DefaultMaxBody = 1 << 20
	DefaultTimeout = 3 * time.Second
	seenCapacity   = 1024
)

// The providers.
const (
	GitHub    = "github"
	GitLab    = "gitlab"
	Gitea     = "gitea"
	Forgejo   = "forgejo"
	Bitbucket = "bitbucket"
)

// Handler is the webhook endpoint.
type Handler struct {
	cfg     Config
	branch  string // refs/heads/<name>
	secret  []byte
	trigger Trigger
	log     *slog.Logger
	seen    *lru
	// refused bounds the WARN lines of refused requests.
	refused *warnLimiter
}

// New reads the secret and returns the handler. An empty secret is an
// error: drover never accepts unsigned pushes.
func New(cfg Config, trigger Trigger) (*Handler, error) {
	var errs []error
	if trigger == nil {
		errs = append(errs, errors.New("webhook: a trigger is required"))
	}
	if cfg.Branch == "" || strings.ContainsAny(cfg.Branch, " ~^:?*[\\") {
		errs = append(errs, fmt.Errorf("webhook.branch: %q is not a branch name", cfg.Branch))
	}
	switch cfg.Provider {
	case "", GitHub, GitLab, Gitea, Forgejo, Bitbucket:
	default:
		errs = append(errs, fmt.Errorf("webhook.provider: %q is not one of github, gitlab, gitea, forgejo, bitbucket", cfg.Provider))
	}
	var secret []byte
	if cfg.SecretFile == "" {
		errs = append(errs, errors.New("webhook.secretFile: required"))
	} else if b, err := os.ReadFile(cfg.SecretFile); err != nil {
		errs = append(errs, fmt.Errorf("webhook.secretFile: %w", err))
	} else if secret = bytes.TrimRight(b, "\r\n"); len(secret) == 0 {
		errs = append(errs, fmt.Errorf("webhook.secretFile: %s is empty", cfg.SecretFile))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Handler{
		cfg:     cfg,
		branch:  "refs/heads/" + strings.TrimPrefix(cfg.Branch, "refs/heads/"),
		secret:  secret,
		trigger: trigger,
		log:     cfg.Log,
		seen:    newLRU(seenCapacity),
		refused: newWarnLimiter(time.Now),
	}, nil
}

// delivery is what a request says, once its provider is known.
type delivery struct {
	provider string
	event    string
	id       string
}

// ServeHTTP handles one delivery.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, fmt.Sprintf("body larger than %d bytes", h.cfg.MaxBody), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "cannot read body", http.StatusBadRequest)
		return
	}
	d, ok := h.authenticate(r.Header, body)
	log := h.log.With("provider", d.provider, "event", d.event, "delivery", d.id, "remote", r.RemoteAddr)
	if !ok {
		h.refused.warn(log, "webhook refused: missing or invalid signature")
		http.Error(w, "missing or invalid signature", http.StatusUnauthorized)
		return
	}
	if d.event == "ping" || d.event == "diagnostics:ping" {
		io.WriteString(w, "pong\n")
		return
	}
	refs, err := pushedRefs(d, body)
	if err != nil {
		h.refused.warn(log, "webhook: unreadable payload", "err", err)
		http.Error(w, "unreadable payload: "+err.Error(), http.StatusBadRequest)
		return
	}
	if !slices.Contains(refs, h.branch) {
		log.Debug("webhook ignored", "refs", refs)
		fmt.Fprintf(w, "ignored: not a push to %s\n", h.branch)
		return
	}
	if d.id != "" && !h.first(r.Context(), d.provider+":"+d.id) {
		log.Info("webhook ignored: delivery seen before")
		io.WriteString(w, "ignored: delivery seen before\n")
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), h.cfg.Timeout)
	defer cancel()
	reason := fmt.Sprintf("%s push to %s (delivery %s)", d.provider, h.branch, d.id)
	if err := h.trigger(ctx, reason); err != nil {
		if d.id != "" {
			h.seen.remove(d.provider + ":" + d.id) // a redelivery may try again
		}
		log.Error("webhook: sync request failed", "err", err)
		http.Error(w, "sync request failed", http.StatusServiceUnavailable)
		return
	}
	log.Info("webhook: sync requested", "branch", h.branch)
	w.WriteHeader(http.StatusAccepted)
	io.WriteString(w, "sync requested\n")
}

// authenticate finds the provider and checks the request's proof of the
// secret.
func (h *Handler) authenticate(hdr http.Header, body []byte) (delivery, bool) {
	d := detect(hdr)
	if d.provider == "" || (h.cfg.Provider != "" && h.cfg.Provider != d.provider) {
		return d, false
	}
	switch d.provider {
	case GitHub:
		return d, h.validMAC(body, hdr.Get("X-Hub-Signature-256"), "sha256=")
	case Bitbucket:
		return d, h.validMAC(body, hdr.Get("X-Hub-Signature"), "sha256=")
	case Gitea:
		return d, h.validMAC(body, hdr.Get("X-Gitea-Signature"), "")
	case Forgejo:
		return d, h.validMAC(body, hdr.Get("X-Forgejo-Signature"), "")
	case GitLab:
		token := hdr.Get("X-Gitlab-Token")
		// Compare digests so that neither the content nor the length of
		// the secret shows in the timing.
		got, want := sha256.Sum256([]byte(token)), sha256.Sum256(h.secret)
		return d, token != "" && subtle.ConstantTimeCompare(got[:], want[:]) == 1
	}
	return d, false
}

// validMAC checks a hex HMAC-SHA256 of body after prefix.
func (h *Handler) validMAC(body []byte, sig, prefix string) bool {
	hexMAC, ok := strings.CutPrefix(sig, prefix)
	if !ok || hexMAC == "" {
		return false
	}
	got, err := hex.DecodeString(hexMAC)
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, h.secret)
	mac.Write(body)
	return hmac.Equal(got, mac.Sum(nil))
}

// detect tells the provider by its headers. Forgejo also sends Gitea's
// headers and Gitea also GitHub's, so the most specific comes first.
func detect(hdr http.Header) delivery {
	switch {
	case hdr.Get("X-Forgejo-Event") != "":
		return delivery{Forgejo, hdr.Get("X-Forgejo-Event"), hdr.Get("X-Forgejo-Delivery")}
	case hdr.Get("X-Gitea-Event") != "":
		return delivery{Gitea, hdr.Get("X-Gitea-Event"), hdr.Get("X-Gitea-Delivery")}
	case hdr.Get("X-Gitlab-Event") != "":
		// Idempotency-Key stays the same across GitLab's retries.
		id := hdr.Get("Idempotency-Key")
		if id == "" {
			id = hdr.Get("X-Gitlab-Event-UUID")
		}
		return delivery{GitLab, hdr.Get("X-Gitlab-Event"), id}
	case hdr.Get("X-Event-Key") != "":
		// X-Hook-UUID names the webhook, not the delivery: it is the same
		// for every push and must not be used to deduplicate.
		id := hdr.Get("X-Request-UUID")
		if id == "" {
			id = hdr.Get("X-Request-Id")
		}
		return delivery{Bitbucket, hdr.Get("X-Event-Key"), id}
	case hdr.Get("X-GitHub-Event") != "":
		return delivery{GitHub, hdr.Get("X-GitHub-Event"), hdr.Get("X-GitHub-Delivery")}
	}
	return delivery{}
}

// pushedRefs returns the refs a push event moved ("refs/heads/x"); other
// events move none.
func pushedRefs(d delivery, body []byte) ([]string, error) {
	switch d.provider {
	case Bitbucket:
		return bitbucketRefs(d.event, body)
	case GitLab:
		if d.event != "Push Hook" && d.event != "System Hook" {
			return nil, nil
		}
	default:
		if d.event != "push" {
			return nil, nil
		}
	}
	var p struct {
		ObjectKind string `json:"object_kind"`
		Ref        string `json:"ref"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		return nil, err
	}
	if d.provider == GitLab && p.ObjectKind != "push" {
		return nil, nil // a tag push, or another system event
	}
	return []string{p.Ref}, nil
}

// bitbucketRefs reads Bitbucket Cloud's repo:push (push.changes[].new.name)
// and Bitbucket Data Center's repo:refs_changed (changes[].refId).
func bitbucketRefs(event string, body []byte) ([]string, error) {
	type side struct{ Type, Name string }
	var p struct {
		Push struct {
			Changes []struct {
				New *side `json:"new"`
				Old *side `json:"old"` // the deleted branch
			} `json:"changes"`
		} `json:"push"`
		Changes []struct {
			RefID string `json:"refId"`
		} `json:"changes"`
	}
	if event != "repo:push" && event != "repo:refs_changed" {
		return nil, nil
	}
	if err := json.Unmarshal(body, &p); err != nil {
		return nil, err
	}
	var refs []string
	for _, c := range p.Push.Changes {
		for _, s := range []*side{c.New, c.Old} {
			if s != nil && s.Type == "branch" {
				refs = append(refs, "refs/heads/"+s.Name)
				break
			}
		}
	}
	for _, c := range p.Changes {
		refs = append(refs, c.RefID)
	}
	return refs, nil
}

// first records key locally and in the shared Deduper, and says whether
// neither had seen it. A Deduper that fails does not stop the push: a
// duplicate sync is harmless, a lost one is not.
func (h *Handler) first(ctx context.Context, key string) bool {
	if !h.seen.add(key) {
		return false
	}
	if h.cfg.Dedupe == nil {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	isNew, err := h.cfg.Dedupe.FirstDelivery(ctx, key)
	if err != nil {
		h.log.Warn("webhook: shared delivery check failed", "err", err)
		return true
	}
	return isNew
}

// lru is a bounded set of recent keys.
type lru struct {
	mu    sync.Mutex
	cap   int
	order *list.List // front is newest
	keys  map[string]*list.Element
}

func newLRU(capacity int) *lru {
	return &lru{cap: capacity, order: list.New(), keys: map[string]*list.Element{}}
}

// add records key and says whether it was new.
func (l *lru) add(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.keys[key]; ok {
		l.order.MoveToFront(e)
		return false
	}
	l.keys[key] = l.order.PushFront(key)
	if l.order.Len() > l.cap {
		oldest := l.order.Back()
		l.order.Remove(oldest)
		delete(l.keys, oldest.Value.(string))
	}
	return true
}

func (l *lru) remove(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.keys[key]; ok {
		l.order.Remove(e)
		delete(l.keys, key)
	}
}
