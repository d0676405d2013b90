package gitsource

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"io"
	"log/slog"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/command"
	"github.com/drover-dev/drover/internal/testsvc"
)

// gitEnv makes the git CLI independent of the machine's configuration.
var gitEnv = append(os.Environ(),
	"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
	"GIT_AUTHOR_NAME=T Tester", "GIT_AUTHOR_EMAIL=t@example.com",
	"GIT_COMMITTER_NAME=T Tester", "GIT_COMMITTER_EMAIL=t@example.com",
)

// git runs the git CLI in dir and returns its trimmed output.
func git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	out, err := command.Run(context.Background(), command.Cmd{
		Argv: append([]string{"git"}, args...), Dir: dir, Env: gitEnv, Timeout: 30 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// upstream is a bare repository (the "server" side, under root) and a
// working clone that commits and pushes to it with the git CLI.
type upstream struct {
	t    testing.TB
	root string // holds origin.git; GIT_PROJECT_ROOT for the HTTP server
	bare string
	work string
}

func newUpstream(t testing.TB) *upstream {
	t.Helper()
	u := &upstream{t: t, root: t.TempDir(), work: t.TempDir()}
	u.bare = filepath.Join(u.root, "origin.git")
	git(t, u.root, "init", "-q", "--bare", "-b", "main", u.bare)
	git(t, u.work, "init", "-q", "-b", "main")
	git(t, u.work, "remote", "add", "origin", u.bare)
	return u
}

// fileURL is the upstream as a file:// URL.
func (u *upstream) fileURL() string { return "file://" + u.bare }

// write creates or replaces a file in the working clone.
func (u *upstream) write(name, content string, mode os.FileMode) {
	u.t.Helper()
	p := filepath.Join(u.work, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		u.t.Fatal(err)
	}
	os.Remove(p)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		u.t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		u.t.Fatal(err)
	}
}

// symlink creates or replaces a symbolic link in the working clone.
func (u *upstream) symlink(name, target string) {
	u.t.Helper()
	p := filepath.Join(u.work, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		u.t.Fatal(err)
	}
	os.Remove(p)
	if err := os.Symlink(target, p); err != nil {
		u.t.Fatal(err)
	}
}

// commit commits everything and force-pushes it to main; it returns the
// new commit id.
func (u *upstream) commit(msg string) string {
	u.t.Helper()
	git(u.t, u.work, "add", "-A")
	git(u.t, u.work, "commit", "-q", "--allow-empty", "-m", msg)
	git(u.t, u.work, "push", "-q", "-f", "origin", "HEAD:main")
	return git(u.t, u.work, "rev-parse", "HEAD")
}

// gitServer serves the upstream root over HTTP with the real
// git-http-backend (CGI) and counts what it serves.
type gitServer struct {
	*httptest.Server
	token atomic.Pointer[string] // when set, basic auth with this password is required
	mu    sync.Mutex
	calls map[string]int // "GET info/refs", "POST git-upload-pack"
	sent  atomic.Int64   // response body bytes
}

func serveHTTP(t testing.TB, root string) *gitServer {
	t.Helper()
	execPath := git(t, "", "--exec-path")
	backend := &cgi.Handler{
		Path: filepath.Join(execPath, "git-http-backend"),
		Root: "/",
		Env:  []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"},
	}
	s := &gitServer{calls: map[string]int{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if tok := s.token.Load(); tok != nil && !basicPasswordIs(req, *tok) {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		key := req.Method + " " + strings.TrimPrefix(req.URL.Path, "/origin.git/")
		s.mu.Lock()
		s.calls[key]++
		s.mu.Unlock()
		backend.ServeHTTP(&countingWriter{ResponseWriter: w, n: &s.sent}, req)
	}))
	t.Cleanup(s.Close)
	return s
}

func basicPasswordIs(req *http.Request, want string) bool {
	raw, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Basic ")
	if !ok {
		return false
	}
	b, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		return false
	}
	_, pass, _ := strings.Cut(string(b), ":")
	return subtle.ConstantTimeCompare([]byte(pass), []byte(want)) == 1
}

// url is the upstream repository's URL on this server.
func (s *gitServer) url() string { return s.URL + "/origin.git" }

// counts returns and resets the request counts.
func (s *gitServer) counts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.calls
	s.calls = map[string]int{}
	return c
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (w *countingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.n.Add(int64(n))
	return n, err
}

func testLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// openRepo opens a Repo for url with a fresh local dir, logging to logs
// (if not nil) and to the test log on failure.
func openRepo(t testing.TB, cfg Config, logs *testsvc.LogBuffer) *Repo {
	t.Helper()
	if cfg.Branch == "" {
		cfg.Branch = "main"
	}
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(t.TempDir(), "git")
	}
	var w io.Writer = io.Discard
	if logs != nil {
		w = logs
	}
	r, err := Open(cfg, testLogger(w))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
