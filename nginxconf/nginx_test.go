package nginxconf

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/testsvc"
	"github.com/drover-dev/drover/spec"
)

const appYAML = `
sites:
  - name: app
    serverNames: [app.test]
    source: sites/app
    headers: {X-Rev: "1"}
`

// withRev renders the world's params with the app site's X-Rev header set.
func (w *world) withRev(rev string) []byte {
	p := w.p
	s := *p.Spec
	s.Sites = []spec.Site{s.Sites[0]}
	s.Sites[0].Headers = map[string]string{"X-Rev": rev}
	p.Spec = &s
	return w.render(p)
}

func (w *world) liveBytes() []byte {
	w.t.Helper()
	b, err := os.ReadFile(w.n.Config)
	if err != nil {
		w.t.Fatal(err)
	}
	return b
}

func (w *world) workers() map[proc]string {
	w.t.Helper()
	kids, err := children(w.pid())
	if err != nil {
		w.t.Fatal(err)
	}
	return kids
}

// notReloaded reports whether every worker of before still runs, titled as
// it was: a reload ends the old workers or retitles them "worker process
// is shutting down". A worker after holds that before lacks is not one:
// nginx starts its workers one by one, and newWorld returns at the first.
func notReloaded(before, after map[proc]string) bool {
	for p, title := range before {
		if after[p] != title {
			return false
		}
	}
	return true
}

// confDirClean fails the test if a candidate was left beside the live file.
func (w *world) confDirClean() {
	w.t.Helper()
	entries, _ := os.ReadDir(filepath.Dir(w.n.Config))
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		w.t.Errorf("config dir holds %v, want only the live file", names)
	}
}

func TestInstallUnchangedDoesNotReload(t *testing.T) {
	w := newWorld(t, appYAML, true, nil)
	ctx := context.Background()
	before := w.workers()
	fi, _ := os.Stat(w.n.Config)
	changed, err := w.n.Install(ctx, w.liveBytes())
	if err != nil || changed {
		t.Fatalf("Install of the live bytes: changed=%v err=%v, want false, nil", changed, err)
	}
	if after := w.workers(); !notReloaded(before, after) {
		t.Errorf("nginx's workers changed from %v to %v: it was reloaded", before, after)
	}
	if fi2, _ := os.Stat(w.n.Config); !fi2.ModTime().Equal(fi.ModTime()) {
		t.Error("the live file was rewritten")
	}
	w.confDirClean()
}

func TestInstallGoodChangeIsServedAtOnce(t *testing.T) {
	w := newWorld(t, appYAML, true, nil)
	c := w.client(false, false)
	if resp, body := w.mustGet(c, "app.test", "/"); resp.Header.Get("X-Rev") != "1" || body != "site app\n" {
		t.Fatalf("before: X-Rev %q, body %q", resp.Header.Get("X-Rev"), body)
	}
	before := w.workers()
	next := w.withRev("2")
	changed, err := w.n.Install(context.Background(), next)
	if err != nil || !changed {
		t.Fatalf("Install: changed=%v err=%v", changed, err)
	}
	// No polling: once Install returns, every new connection gets the new
	// config.
	for range 20 {
		if resp, _ := w.mustGet(c, "app.test", "/"); resp.Header.Get("X-Rev") != "2" {
			t.Fatalf("after Install returned, a new connection got X-Rev %q", resp.Header.Get("X-Rev"))
		}
	}
	if !bytes.Equal(w.liveBytes(), next) {
		t.Error("live file is not the installed content")
	}
	for p, title := range w.workers() {
		if _, old := before[p]; old && accepting(title) {
			t.Errorf("old worker %d still accepts connections: %q", p.pid, title)
		}
	}
	w.confDirClean()
}

// TestInstallRefusedCandidateChangesNothing installs configs nginx -t
// refuses: the error carries nginx's reason, the live file stays byte for
// byte, no reload happens and nginx keeps serving the old site.
func TestInstallRefusedCandidateChangesNothing(t *testing.T) {
	w := newWorld(t, appYAML, true, nil)
	missing := w.p
	missing.TLSCert = filepath.Join(w.dir, "no-such-cert.pem")
	cases := map[string]struct {
		content []byte
		want    []string
	}{
		"missing certificate": {w.render(missing), []string{"[emerg]", "cannot load certificate", missing.TLSCert}},
		"broken bytes":        {[]byte("events {}\nhttp { bogus_directive on; }\n"), []string{`unknown directive "bogus_directive"`}},
	}
	c := w.client(false, false)
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			live := w.liveBytes()
			before := w.workers()
			changed, err := w.n.Install(context.Background(), tc.content)
			if err == nil || changed {
				t.Fatalf("Install: changed=%v err=%v, want an error", changed, err)
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks nginx's %q", err, want)
				}
			}
			if !bytes.Equal(w.liveBytes(), live) {
				t.Error("the live file changed")
			}
			// The same processes (a reload forks new workers); not the
			// same titles: a worker nginx just forked may not have set
			// its own title yet when before was read.
			if after := w.workers(); !notReloaded(before, after) {
				t.Errorf("nginx was reloaded: workers %v, then %v", before, after)
			}
			if resp, body := w.mustGet(c, "app.test", "/"); resp.Header.Get("X-Rev") != "1" || body != "site app\n" {
				t.Errorf("nginx serves X-Rev %q, body %q; want the old site", resp.Header.Get("X-Rev"), body)
			}
			w.confDirClean()
		})
	}
}

// TestInstallReloadRefusedPutsTheOldFileBack installs a config that passes
// nginx -t but that the running master cannot apply (its new port is taken):
// Install fails within its deadline, the live file is put back, and nginx
// serves the old config.
func TestInstallReloadRefusedPutsTheOldFileBack(t *testing.T) {
	w := newWorld(t, appYAML, true, nil)
	w.n.ReloadTimeout = time.Second
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	p := w.p
	p.StatusListen = taken.Addr().String()
	live := w.liveBytes()
	changed, err := w.n.Install(context.Background(), w.render(p))
	if err == nil || changed {
		t.Fatalf("Install: changed=%v err=%v, want an error", changed, err)
	}
	if !strings.Contains(err.Error(), "no new workers") {
		t.Errorf("error %q does not say the reload did not take effect", err)
	}
	if !bytes.Equal(w.liveBytes(), live) {
		t.Error("the live file was not put back")
	}
	if log, _ := os.ReadFile(w.p.ErrorLog); !strings.Contains(string(log), "Address already in use") {
		t.Errorf("nginx's error log does not show why the reload failed:\n%s", log)
	}
	c := w.client(false, false)
	if resp, _ := w.mustGet(c, "app.test", "/"); resp.Header.Get("X-Rev") != "1" {
		t.Errorf("nginx serves X-Rev %q, want the old config's 1", resp.Header.Get("X-Rev"))
	}
	// And it still takes a good config afterwards.
	if _, err := w.n.Install(context.Background(), w.withRev("3")); err != nil {
		t.Fatal(err)
	}
	w.confDirClean()
}

// TestReloadUnderLoad installs 10 configs while 50 clients send requests
// over kept-alive and new connections, HTTP/1.1 and HTTP/2: not one request
// may fail, and the last config is what new requests see.
func TestReloadUnderLoad(t *testing.T) {
	w := newWorld(t, appYAML, true, nil)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var (
		ok, failed atomic.Int64
		mu         sync.Mutex
		failures   []string
		seen       = map[string]bool{}
		wg         sync.WaitGroup
	)
	clients := []struct {
		name string
		n    int
		keep bool
		h2   bool
	}{{"keep-alive", 20, true, false}, {"new connections", 20, false, false}, {"http2", 10, true, true}}
	for _, cl := range clients {
		c := w.client(cl.keep, cl.h2)
		for range cl.n {
			wg.Go(func() {
				for ctx.Err() == nil {
					resp, body, err := w.get(c, "app.test", "/")
					if err == nil && resp.StatusCode == 200 && body == "site app\n" {
						ok.Add(1)
						mu.Lock()
						seen[resp.Header.Get("X-Rev")] = true
						mu.Unlock()
						continue
					}
					failed.Add(1)
					mu.Lock()
					if err != nil {
						failures = append(failures, fmt.Sprintf("%s: %v", cl.name, err))
					} else {
						failures = append(failures, fmt.Sprintf("%s: status %d body %q", cl.name, resp.StatusCode, body))
					}
					mu.Unlock()
				}
			})
		}
	}
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	for rev := 2; rev <= 11; rev++ {
		changed, err := w.n.Install(context.Background(), w.withRev(strconv.Itoa(rev)))
		if err != nil || !changed {
			t.Errorf("Install rev %d: changed=%v err=%v", rev, changed, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(start)
	stop()
	wg.Wait()
	t.Logf("%d requests ok, %d failed, during 10 installs in %s", ok.Load(), failed.Load(), took.Round(time.Millisecond))
	if failed.Load() > 0 {
		if len(failures) > 10 {
			failures = failures[:10]
		}
		t.Errorf("%d requests failed during the reloads, e.g.:\n%s", failed.Load(), strings.Join(failures, "\n"))
	}
	if ok.Load() < 500 {
		t.Errorf("only %d requests succeeded: the load was too light to prove anything", ok.Load())
	}
	if len(seen) < 3 {
		t.Errorf("clients saw revisions %v: the installs did not take effect under load", seen)
	}
	for _, cl := range clients {
		if resp, _ := w.mustGet(w.client(cl.keep, cl.h2), "app.test", "/"); resp.Header.Get("X-Rev") != "11" {
			t.Errorf("%s after the last install: X-Rev %q, want 11", cl.name, resp.Header.Get("X-Rev"))
		}
	}
}

func TestRunningAndReload(t *testing.T) {
	w := newWorld(t, appYAML, false, nil)
	if err := w.n.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	stale := &Nginx{PIDFile: filepath.Join(w.dir, "stale.pid")}
	writeFile(t, stale.PIDFile, strconv.Itoa(os.Getpid())+"\n") // alive, but not nginx
	if pid, ok := stale.Running(); ok {
		t.Errorf("Running took pid %d (this test) for an nginx master", pid)
	}
	if err := stale.Reload(context.Background()); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Errorf("Reload without a master: %v", err)
	}
}

// TestInstallWithoutRunningNginx: the first install on a node whose nginx
// is not running writes the file (nginx -t first) and reloads nothing.
func TestInstallWithoutRunningNginx(t *testing.T) {
	dir := testsvc.WorldDir(t, "norun")
	mkdir(t, filepath.Join(dir, "health"))
	p := Params{Spec: mustSpec(t, ""), HealthDir: filepath.Join(dir, "health"), HTTPSPort: 8443, HealthPort: 8080,
		PIDFile: filepath.Join(dir, "nginx.pid"), ErrorLog: filepath.Join(dir, "error.log")}
	conf, err := Render(p)
	if err != nil {
		t.Fatal(err)
	}
	n := &Nginx{Binary: testsvc.Bin(t, "nginx"), Config: filepath.Join(dir, "nginx.conf"), Prefix: dir, PIDFile: p.PIDFile}
	if _, err := n.Install(context.Background(), []byte("http {")); err == nil {
		t.Fatal("a broken first config was installed")
	}
	if _, err := os.Stat(n.Config); !os.IsNotExist(err) {
		t.Fatalf("a refused first install left a live file: %v", err)
	}
	for i, want := range []bool{true, false} {
		changed, err := n.Install(context.Background(), conf)
		if err != nil || changed != want {
			t.Fatalf("install %d: changed=%v err=%v, want %v", i, changed, err, want)
		}
	}
	if b, _ := os.ReadFile(n.Config); !bytes.Equal(b, conf) {
		t.Error("live file is not the installed config")
	}
}
