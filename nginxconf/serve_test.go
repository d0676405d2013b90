package nginxconf

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/testsvc"
)

// TestHealthEndpoint walks the LB health endpoint through its states with
// the real nginx: not up, up, draining, up again.
func TestHealthEndpoint(t *testing.T) {
	w := newWorld(t, appYAML, true, nil)
	up, drain := filepath.Join(w.p.HealthDir, "up"), filepath.Join(w.p.HealthDir, "drain")
	check := func(state, host, path string, wantStatus int, wantBody string) {
		t.Helper()
		req, _ := http.NewRequest("GET", w.healthURL(path), nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", state, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != wantStatus || (wantBody != "" && string(b) != wantBody) {
			t.Errorf("%s: GET %s (Host %s) = %d %q, want %d %q", state, path, host, resp.StatusCode, b, wantStatus, wantBody)
		}
	}
	check("no up file", "lb.internal", "/healthz", 503, "")
	writeFile(t, up, "ok\n")
	check("up", "lb.internal", "/healthz", 200, "ok\n")
	check("up, any Host", "10.0.0.7", "/healthz", 200, "ok\n")
	writeFile(t, drain, "")
	check("up and draining", "lb.internal", "/healthz", 503, "draining\n")
	if err := os.Remove(drain); err != nil {
		t.Fatal(err)
	}
	check("undrained", "lb.internal", "/healthz", 200, "ok\n")
	// The health port serves nothing else, sites included.
	check("other path", "app.test", "/", 404, "")
	check("health file by name", "lb.internal", "/up", 404, "")
}

// TestRoutesProxyToWorkers serves a site and two workers: a route on the
// site's host, a route-only host, a down instance that nginx skips.
func TestRoutesProxyToWorkers(t *testing.T) {
	apiPort, metricsPort := testsvc.FreePorts(t, 2), testsvc.FreePort(t)
	yaml := appYAML + fmt.Sprintf(`
workers:
  - name: api
    source: workers/api
    exec: [./api]
    instances: 2
    port: %d
    health: {path: /healthz}
    routes: [{serverName: app.test, path: /api/}, {serverName: api.test, path: /}]
  - name: metrics
    source: workers/metrics
    exec: [./metrics]
    port: %d
    health: {path: /healthz}
    routes: [{serverName: metrics.test, path: /push/}]
`, apiPort, metricsPort)
	w := newWorld(t, yaml, true, nil)
	// Instance 0 of api is down (restarting); instance 1 answers.
	var served atomic.Int64
	backend(t, fmt.Sprintf("127.0.0.1:%d", apiPort+1), func(rw http.ResponseWriter, r *http.Request) {
		served.Add(1)
		fmt.Fprintf(rw, "api %s %s host=%s xff=%s proto=%s real=%s",
			r.Method, r.URL.Path, r.Host, r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Proto"), r.Header.Get("X-Real-IP"))
	})
	backend(t, fmt.Sprintf("127.0.0.1:%d", metricsPort), func(rw http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(rw, "metrics %s", r.URL.Path)
	})
	c := w.client(true, false)
	for i := range 20 {
		resp, body := w.mustGet(c, "app.test", fmt.Sprintf("/api/items/%d", i))
		want := fmt.Sprintf("api GET /api/items/%d host=app.test xff=127.0.0.1 proto=https real=127.0.0.1", i)
		if resp.StatusCode != 200 || body != want {
			t.Fatalf("request %d with instance 0 down: %d %q, want 200 %q", i, resp.StatusCode, body, want)
		}
		if resp.Header.Get("X-Rev") != "" {
			t.Error("the site's headers were added to a worker's response")
		}
	}
	cases := []struct {
		host, path string
		status     int
		body       string
	}{
		{"app.test", "/", 200, "site app\n"},
		{"app.test", "/.env", 404, ""},
		{"api.test", "/anything", 200, "api GET /anything host=api.test xff=127.0.0.1 proto=https real=127.0.0.1"},
		{"metrics.test", "/push/job", 200, "metrics /push/job"},
		{"metrics.test", "/", 404, ""}, // a route-only host serves only its routes
	}
	for _, tc := range cases {
		resp, body := w.mustGet(c, tc.host, tc.path)
		if resp.StatusCode != tc.status || (tc.body != "" && body != tc.body) {
			t.Errorf("%s%s: %d %q, want %d %q", tc.host, tc.path, resp.StatusCode, body, tc.status, tc.body)
		}
	}
	if resp, _ := w.mustGet(c, "app.test", "/"); resp.Header.Get("X-Rev") != "1" {
		t.Errorf("site header X-Rev = %q, want 1", resp.Header.Get("X-Rev"))
	}
}

func TestSPAFallsBackToIndex(t *testing.T) {
	w := newWorld(t, spaYAML, true, nil)
	writeFile(t, filepath.Join(w.p.LiveDir, "sites", "app", "app.js"), "js\n")
	c := w.client(true, false)
	for path, want := range map[string]string{"/": "site app\n", "/deep/link": "site app\n", "/app.js": "js\n"} {
		resp, body := w.mustGet(c, "app.example.com", path)
		if resp.StatusCode != 200 || body != want {
			t.Errorf("%s: %d %q, want 200 %q", path, resp.StatusCode, body, want)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); csp != "default-src 'self'; img-src 'self' data:" {
			t.Errorf("%s: CSP %q", path, csp)
		}
	}
	if resp, _ := w.mustGet(c, "app.example.com", "/app.js"); !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/javascript") {
		t.Errorf("app.js served as %q", resp.Header.Get("Content-Type"))
	}
}

// TestUnknownHostIsRefused: no site answers for a name it does not own.
func TestUnknownHostIsRefused(t *testing.T) {
	t.Run("tls", func(t *testing.T) {
		w := newWorld(t, appYAML, true, nil)
		conn, err := tls.Dial("tcp", w.httpsAddr(), &tls.Config{ServerName: "evil.test", InsecureSkipVerify: true})
		if err == nil {
			conn.Close()
			t.Fatal("TLS handshake for an unknown host succeeded")
		}
		if _, err := w.client(false, false).Get(w.url("evil.test", "/")); err == nil {
			t.Fatal("request for an unknown host got a response")
		}
	})
	t.Run("plain", func(t *testing.T) {
		w := newWorld(t, appYAML, false, nil)
		c := w.client(false, false)
		if _, err := c.Get(w.url("evil.test", "/")); err == nil {
			t.Fatal("request for an unknown host got a response")
		}
		if resp, body := w.mustGet(c, "app.test", "/"); resp.StatusCode != 200 || body != "site app\n" {
			t.Fatalf("app.test over plain HTTP: %d %q", resp.StatusCode, body)
		}
	})
}

func TestWebhookAndStatus(t *testing.T) {
	hookAddr := fmt.Sprintf("127.0.0.1:%d", testsvc.FreePort(t))
	status := fmt.Sprintf("127.0.0.1:%d", testsvc.FreePort(t))
	w := newWorld(t, appYAML, true, func(p *Params) {
		p.Webhook = &Webhook{ServerName: "hooks.test", Path: "/hooks/drover", Upstream: hookAddr}
		p.StatusListen = status
	})
	got := make(chan string, 1)
	backend(t, hookAddr, func(rw http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- fmt.Sprintf("%s %s %s %s", r.Method, r.URL.Path, r.Header.Get("X-Github-Event"), b)
		rw.WriteHeader(http.StatusAccepted)
	})
	c := w.client(false, false)
	post := func(body string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("POST", w.url("hooks.test", "/hooks/drover"), strings.NewReader(body))
		req.Header.Set("X-GitHub-Event", "push")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := post(`{"ref":"refs/heads/main"}`); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("webhook POST: %d", resp.StatusCode)
	}
	if g := <-got; g != `POST /hooks/drover push {"ref":"refs/heads/main"}` {
		t.Errorf("agent got %q", g)
	}
	if resp := post(strings.Repeat("x", 2<<20)); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("2 MB webhook body: %d, want 413", resp.StatusCode)
	}
	if resp, _ := w.mustGet(c, "hooks.test", "/hooks/drover"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("webhook GET: %d, want 403", resp.StatusCode)
	}
	if resp, _ := w.mustGet(c, "hooks.test", "/"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("webhook host /: %d, want 404", resp.StatusCode)
	}
	select {
	case g := <-got:
		t.Errorf("the agent received a request nginx should have refused: %q", g)
	default:
	}

	resp, err := http.Get("http://" + status + StatusPath)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(string(b), "Active connections:") {
		t.Errorf("stub_status: %d %q", resp.StatusCode, b)
	}
}

// TestStartDaemonizes starts nginx the development way (daemonized) and
// stops it by the pid it wrote.
func TestStartDaemonizes(t *testing.T) {
	dir := testsvc.WorldDir(t, "start")
	mkdir(t, filepath.Join(dir, "health"))
	mkdir(t, filepath.Join(dir, "tmp"))
	p := Params{
		Spec: mustSpec(t, ""), HealthDir: filepath.Join(dir, "health"), Listen: "127.0.0.1",
		HTTPSPort: testsvc.FreePort(t), HealthPort: testsvc.FreePort(t), User: "www-data",
		PIDFile: filepath.Join(dir, "nginx.pid"), ErrorLog: filepath.Join(dir, "error.log"), TempDir: filepath.Join(dir, "tmp"),
	}
	conf, err := Render(p)
	if err != nil {
		t.Fatal(err)
	}
	n := &Nginx{Binary: testsvc.Bin(t, "nginx"), Config: filepath.Join(dir, "nginx.conf"), Prefix: dir, PIDFile: p.PIDFile, ReloadTimeout: 10 * time.Second}
	writeFile(t, n.Config, string(conf))
	if _, ok := n.Running(); ok {
		t.Fatal("Running before Start")
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	pid, ok := n.Running()
	if !ok {
		t.Fatal("not running after Start")
	}
	t.Cleanup(func() { stopPID(t, pid) })
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if again, _ := n.Running(); again != pid {
		t.Errorf("a second Start replaced master %d with %d", pid, again)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n.serving(ctx, pid); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", p.HealthPort))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Errorf("health without up: %d, want 503", resp.StatusCode)
	}
}

// stopPID stops the nginx master pid (not our child) and waits until it is
// gone.
func stopPID(t *testing.T, pid int) {
	_ = syscall.Kill(pid, syscall.SIGQUIT)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if !isMaster(pid) {
			return
		}
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	t.Errorf("nginx master %d did not stop on SIGQUIT", pid)
}

func TestTestCarriesNginxMessage(t *testing.T) {
	dir := testsvc.WorldDir(t, "t")
	conf := filepath.Join(dir, "nginx.conf")
	writeFile(t, conf, "events {}\nhttp {\n server { listen 127.0.0.1:1; location / { return 200 } }\n")
	n := &Nginx{Binary: testsvc.Bin(t, "nginx"), Prefix: dir}
	err := n.Test(context.Background(), conf)
	if err == nil || !strings.Contains(err.Error(), "[emerg]") || !strings.Contains(err.Error(), conf) {
		t.Fatalf("Test of a broken file: %v", err)
	}
}

// TestHealthAccessLog checks the convention shared with lbdrain: each LB
// check is logged as "$msec $status $remote_addr", which the drain drivers
// read to see the LB's checks reach the node.
func TestHealthAccessLog(t *testing.T) {
	var logFile string
	w := newWorld(t, appYAML, true, func(p *Params) {
		logFile = filepath.Join(p.HealthDir, "..", "health.log")
		p.HealthAccessLog = filepath.Clean(logFile)
	})
	writeFile(t, filepath.Join(w.p.HealthDir, "up"), "ok\n")
	for range 2 {
		resp, err := http.Get(w.healthURL("/healthz"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	data, err := os.ReadFile(filepath.Clean(logFile))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	re := regexp.MustCompile(`^[0-9]+\.[0-9]{3} 200 127\.0\.0\.1$`)
	if len(lines) != 2 || !re.MatchString(lines[0]) || !re.MatchString(lines[1]) {
		t.Fatalf("health log %q does not follow healthlog.Format", data)
	}
}

// TestRevisionHeaders: with Revision set, every answer of a site (one with
// its own headers included, and its 404s), of a worker's route, and of a
// route-only host names the revision and the node; without it, none does.
func TestRevisionHeaders(t *testing.T) {
	apiPort := testsvc.FreePort(t)
	yaml := appYAML + fmt.Sprintf(`
workers:
  - name: api
    source: workers/api
    exec: [./api]
    port: %d
    health: {path: /healthz}
    routes: [{serverName: app.test, path: /api/}, {serverName: api.test, path: /v1/}]
`, apiPort)
	const rev = "0123456789abcdef0123456789abcdef01234567"
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprint("revisionHeader=", on), func(t *testing.T) {
			w := newWorld(t, yaml, true, func(p *Params) {
				if on {
					p.Revision, p.Node = rev, "node-1"
				}
			})
			backend(t, fmt.Sprintf("127.0.0.1:%d", apiPort), func(rw http.ResponseWriter, r *http.Request) {
				fmt.Fprintf(rw, "api %s", r.URL.Path)
			})
			c := w.client(true, false)
			for _, tc := range []struct {
				host, path string
				status     int
			}{
				{"app.test", "/", 200},      // a site with its own headers
				{"app.test", "/nope", 404},  // the site's 404
				{"app.test", "/.env", 404},  // a hidden file
				{"app.test", "/api/x", 200}, // a worker's route
				{"api.test", "/v1/y", 200},  // a route-only host
				{"api.test", "/", 404},      // and its 404
			} {
				resp, _ := w.mustGet(c, tc.host, tc.path)
				gotRev, gotNode := resp.Header.Get("X-Drover-Revision"), resp.Header.Get("X-Drover-Node")
				if resp.StatusCode != tc.status {
					t.Errorf("%s%s: status %d, want %d", tc.host, tc.path, resp.StatusCode, tc.status)
				}
				switch {
				case on && (gotRev != rev || gotNode != "node-1"):
					t.Errorf("%s%s: X-Drover-Revision %q, X-Drover-Node %q; want %s, node-1", tc.host, tc.path, gotRev, gotNode, rev)
				case !on && (gotRev != "" || gotNode != ""):
					t.Errorf("%s%s: revision headers %q %q without revisionHeader", tc.host, tc.path, gotRev, gotNode)
				}
			}
			if resp, _ := w.mustGet(c, "app.test", "/"); resp.Header.Get("X-Rev") != "1" {
				t.Errorf("the site's own header X-Rev = %q, want 1", resp.Header.Get("X-Rev"))
			}
		})
	}
}
