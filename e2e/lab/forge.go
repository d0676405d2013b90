package lab

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Forge is the lab's git server, a stand-in for the Gitea a small team
// runs: it serves the repos under Root over HTTP with the real
// git-http-backend (clone, fetch and push), and when Branch of a repo moves,
// by a push or otherwise, it POSTs a signed Gitea push webhook to Webhook.
type Forge struct {
	Root        string // GIT_PROJECT_ROOT: the bare repos
	Listen      string
	Branch      string
	Webhook     string // URL the push event goes to
	WebhookHost string // Host header (the LB routes by it)
	SecretFile  string
	Log         *log.Logger
}

// Run serves until ctx ends.
func (f *Forge) Run(ctx context.Context) error {
	execPath, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		return fmt.Errorf("git --exec-path: %w", err)
	}
	backend := &cgi.Handler{
		Path:   filepath.Join(strings.TrimSpace(string(execPath)), "git-http-backend"),
		Root:   "/",
		Env:    []string{"GIT_PROJECT_ROOT=" + f.Root, "GIT_HTTP_EXPORT_ALL=1"},
		Logger: f.Log,
	}
	srv := &http.Server{Addr: f.Listen, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		backend.ServeHTTP(w, r)
		f.Log.Printf("%s %s %s", r.Method, r.URL.Path, time.Since(start).Round(time.Millisecond))
	})}
	go f.watch(ctx)
	go func() { <-ctx.Done(); _ = srv.Close() }()
	f.Log.Printf("forge serving %s on %s, push events to %s", f.Root, f.Listen, f.Webhook)
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// watch looks at every repo's branch twice a second and sends a push event
// when it moved since the last look.
func (f *Forge) watch(ctx context.Context) {
	seen := map[string]string{}
	first := true
	for {
		repos, _ := filepath.Glob(filepath.Join(f.Root, "*.git"))
		for _, repo := range repos {
			out, err := exec.CommandContext(ctx, "git", "-C", repo, "rev-parse", "-q", "--verify", "refs/heads/"+f.Branch).Output()
			rev := strings.TrimSpace(string(out))
			if err != nil || rev == "" || rev == seen[repo] {
				continue
			}
			before := seen[repo]
			seen[repo] = rev
			if !first {
				go f.deliver(ctx, filepath.Base(repo), before, rev)
			}
		}
		first = false
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// deliver sends one push event, retrying a few times (a forge shows a
// failed delivery and lets you redeliver; the lab retries for you).
func (f *Forge) deliver(ctx context.Context, repo, before, after string) {
	secret, err := os.ReadFile(f.SecretFile)
	if err != nil {
		f.Log.Printf("webhook: %v", err)
		return
	}
	body, _ := json.Marshal(map[string]any{
		"ref": "refs/heads/" + f.Branch, "before": before, "after": after,
		"repository": map[string]any{"name": strings.TrimSuffix(repo, ".git")},
	})
	mac := hmac.New(sha256.New, bytes.TrimRight(secret, "\r\n"))
	mac.Write(body)
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	for attempt := 1; attempt <= 5; attempt++ {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, f.Webhook, bytes.NewReader(body))
		req.Host = f.WebhookHost
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Gitea-Event", "push")
		req.Header.Set("X-Gitea-Delivery", hex.EncodeToString(id))
		req.Header.Set("X-Gitea-Signature", hex.EncodeToString(mac.Sum(nil)))
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			f.Log.Printf("webhook push %s %s: %s", repo, after[:12], resp.Status)
			if resp.StatusCode < 300 {
				return
			}
		} else {
			f.Log.Printf("webhook push %s %s: %v", repo, after[:12], err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(attempt) * time.Second):
		}
	}
}
