package artifacts

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/testsvc"
	"github.com/drover-dev/drover/units"
)

// TestPruneKeepsReleasesInUse: a release that SetInUse names, directly or
// through a symlink to the state dir, is kept; names that are not releases
// of this store keep nothing.
func TestPruneKeepsReleasesInUse(t *testing.T) {
	t.Parallel()
	s := openStore(t, Options{})
	repo := t.TempDir()
	writeRepo(t, repo, map[string]string{"sites/blog/index.html": "v"})
	for i := 1; i <= 6; i++ {
		live(t, s, rev(i), repo, blogSpec)
		time.Sleep(2 * time.Millisecond)
	}
	via := filepath.Join(t.TempDir(), "via")
	if err := os.Symlink(s.Dir(), via); err != nil {
		t.Fatal(err)
	}
	other := openStore(t, Options{})
	s.SetInUse(func() []string {
		return []string{
			s.ReleaseDir(rev(1)) + "/",                   // trailing slash
			filepath.Join(via, "releases", rev(2)),       // through a symlink to S
			other.ReleaseDir(rev(3)),                     // another store's
			filepath.Join(s.Dir(), "cache"),              // not a release
			filepath.Join(s.ReleaseDir(rev(4)), "sites"), // inside one, not one
			"releases/" + rev(4),                         // relative
		}
	})
	if err := s.Prune(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	rs, _ := s.Releases()
	slices.Sort(rs)
	if want := []string{rev(1), rev(2), rev(5), rev(6)}; !slices.Equal(rs, want) {
		t.Fatalf("after Prune(0): %v, want %v (in use: 1 and 2; previous 5; live 6)", rs, want)
	}
	s.SetInUse(nil)
	if err := s.Prune(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	if rs, _ := s.Releases(); len(rs) != 2 {
		t.Fatalf("after Prune(0) with nothing in use: %v, want live and previous", rs)
	}
}

// workerServer serves /healthz, and on / its VERSION file, read on every
// request from its working directory, and its pid: it fails once the
// release it started in is deleted.
const workerServer = `#!/usr/bin/python3
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        try:
            with open("VERSION") as f:
                body = (f.read().strip() + " " + str(os.getpid())).encode()
            status = 200
        except OSError as e:
            body, status = str(e).encode(), 500
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
`

// TestPruneKeepsTheReleaseARunningWorkerStartedIn runs workers a and b
// under the exec supervisor from releases this store prepares. Releases
// that change only a leave b running from the first one, its files shared
// by hard links; Prune keeps that release (and live and previous), deletes
// the others, and b goes on serving files from it. Once b is restarted
// elsewhere, its old release goes.
func TestPruneKeepsTheReleaseARunningWorkerStartedIn(t *testing.T) {
	s := openStore(t, Options{})
	sup := units.NewExec(units.ExecConfig{Config: units.Config{Log: slog.New(slog.NewTextHandler(t.Output(), nil)), Settle: 300 * time.Millisecond, InstanceTimeout: 20 * time.Second}})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		sup.Close(ctx)
	})
	s.SetInUse(sup.ReleasesInUse)
	port := testsvc.FreePorts(t, 2)
	pa, pb := port, port+1
	yaml := "version: 1\nworkers:\n"
	for name, p := range map[string]int{"a": pa, "b": pb} {
		yaml += "  - name: " + name + "\n    source: workers/" + name + "\n    exec: [./server.py]\n    instances: 1\n" +
			"    port: " + strconv.Itoa(p) + "\n    health: {path: /healthz, interval: 100ms}\n"
	}
	repo := t.TempDir()
	writeRepo(t, repo, map[string]string{
		"x:workers/a/server.py": workerServer, "workers/a/VERSION": "a1",
		"x:workers/b/server.py": workerServer, "workers/b/VERSION": "b1",
	})
	get := func(port int) (version, pid string) {
		t.Helper()
		resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/")
		if err != nil {
			t.Fatalf("port %d: %v", port, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("port %d: status %d: %s", port, resp.StatusCode, body)
		}
		version, pid, _ = strings.Cut(string(body), " ")
		return version, pid
	}
	// release makes rev i live, runs its workers and prunes.
	release := func(i int, files map[string]string) {
		t.Helper()
		writeRepo(t, repo, files)
		time.Sleep(2 * time.Millisecond)
		live(t, s, rev(i), repo, yaml)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := sup.Apply(ctx, parseSpec(t, yaml).Workers, s.LiveDir()); err != nil {
			t.Fatal(err)
		}
		if err := s.Prune(ctx, 0); err != nil {
			t.Fatal(err)
		}
	}
	releases := func(want ...int) {
		t.Helper()
		got, _ := s.Releases()
		slices.Sort(got)
		var w []string
		for _, i := range want {
			w = append(w, rev(i))
		}
		slices.Sort(w)
		if !slices.Equal(got, w) {
			t.Fatalf("releases after Prune: %v, want %v", got, w)
		}
	}

	release(1, nil)
	_, bPID := get(pb)
	for i := 2; i <= 4; i++ {
		release(i, map[string]string{"workers/a/VERSION": "a" + strconv.Itoa(i)})
	}
	if v, _ := get(pa); v != "a4" {
		t.Fatalf("a serves %q, want a4", v)
	}
	// b was never restarted: it runs from release 1, which Prune kept
	// beside the live and previous releases; release 2 is gone.
	releases(1, 3, 4)
	if v, pid := get(pb); v != "b1" || pid != bPID {
		t.Fatalf("b serves %q from pid %s, want b1 from pid %s (not restarted)", v, pid, bPID)
	}
	if got := sup.ReleasesInUse(); !slices.Contains(got, s.ReleaseDir(rev(1))) {
		t.Fatalf("ReleasesInUse() = %q lacks release 1", got)
	}

	// b changes: restarted in release 5, it frees release 1.
	release(5, map[string]string{"workers/b/VERSION": "b5"})
	if v, pid := get(pb); v != "b5" || pid == bPID {
		t.Fatalf("b serves %q from pid %s after it changed, want b5 from a new process", v, pid)
	}
	releases(4, 5)
}
