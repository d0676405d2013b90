package lbdrain

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
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

// node is one application server of a test cluster: its own nginx serving a
// page that names the node and its release, a slow download (to have
// requests in flight), the LB health endpoint by the drover convention, and
// stub_status on a separate local listener.
type node struct {
	name       string
	dir        string
	addr       string // host:port of the public listener
	statusURL  string
	healthDir  string
	healthLog  string
	nginx      *testsvc.Nginx
	confPath   string
	healthyEnd string // the URL the LB checks
}

// nodeConf is the nginx config of a node. honorDrain=false renders a health
// location that forgets the drain file (a broken config).
func nodeConf(dir, name string, port, statusPort int, honorDrain bool) string {
	drain := fmt.Sprintf("if (-f %s/health/drain) { return 503; }", dir)
	if !honorDrain {
		drain = ""
	}
	return fmt.Sprintf(`pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
worker_processes 1;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[1]s/tmp; proxy_temp_path %[1]s/tmp; fastcgi_temp_path %[1]s/tmp;
  uwsgi_temp_path %[1]s/tmp; scgi_temp_path %[1]s/tmp;
  keepalive_requests 1000000;
  log_format drover_health '%[5]s';
  server {
    listen 127.0.0.1:%[2]d;
    root %[1]s/www;
    add_header X-Node %[6]s always;
    location = / { try_files /index.html =404; }
    location = /slow.bin { limit_rate 256k; limit_rate_after 0; }
    location = /healthz {
      access_log %[1]s/health.log drover_health;
      %[4]s
      root %[1]s/health;
      try_files /up =503;
    }
  }
  server {
    listen 127.0.0.1:%[3]d;
    location = /nginx_status { stub_status; }
  }
}
`, dir, port, statusPort, drain, HealthLogFormat, name)
}

func startNode(t testing.TB, name string, honorDrain bool) *node {
	t.Helper()
	dir := testsvc.WorldDir(t, "lbdrain-"+name)
	for _, d := range []string{"www", "health", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	port, statusPort := testsvc.FreePort(t), testsvc.FreePort(t)
	n := &node{
		name: name, dir: dir, addr: fmt.Sprintf("127.0.0.1:%d", port),
		statusURL: fmt.Sprintf("http://127.0.0.1:%d/nginx_status", statusPort),
		healthDir: filepath.Join(dir, "health"), healthLog: filepath.Join(dir, "health.log"),
		confPath: filepath.Join(dir, "nginx.conf"),
	}
	n.healthyEnd = "http://" + n.addr + "/healthz"
	writeFile(t, n.confPath, nodeConf(dir, name, port, statusPort, honorDrain))
	writeFile(t, filepath.Join(dir, "www", "index.html"), name+" v1\n")
	writeFile(t, filepath.Join(dir, "www", "slow.bin"), strings.Repeat("x", 300<<10))
	n.setUp(t, true)
	n.nginx = testsvc.StartNginx(t, dir, n.confPath, n.addr)
	return n
}

// setUp creates or removes the node's own "I am healthy" file.
func (n *node) setUp(t testing.TB, up bool) {
	t.Helper()
	p := filepath.Join(n.healthDir, "up")
	if up {
		writeFile(t, p, "ok\n")
	} else if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
}

// switchRelease is the test's deploy: new page content, then a real nginx
// reload.
func (n *node) switchRelease(t *testing.T, version string) {
	t.Helper()
	writeFile(t, filepath.Join(n.dir, "www", "index.html"), n.name+" "+version+"\n")
	if _, err := command.Run(context.Background(), command.Cmd{
		Argv: []string{n.nginx.Bin, "-p", n.dir, "-c", n.confPath, "-s", "reload"}, Timeout: 10 * time.Second,
	}); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// haproxyConf puts HAProxy in front of nodes as a cloud LB behaves: health
// checks of the drover health endpoint, short intervals for the test, and
// no retries, redispatch or retry-on (a cloud LB does not re-send a request
// a node dropped, and a test behind a retrying LB cannot see the failures
// it exists to catch). extraGlobal adds a global section (a TCP runtime
// socket).
func haproxyConf(t *testing.T, feAddr, extraGlobal string, nodes ...*node) string {
	return haproxyConfChecks(feAddr, extraGlobal, "inter 200ms fall 2 rise 2", nodes...)
}

// haproxyConfChecks is haproxyConf with the servers' check settings.
func haproxyConfChecks(feAddr, extraGlobal, checks string, nodes ...*node) string {
	var b strings.Builder
	if extraGlobal != "" {
		fmt.Fprintf(&b, "global\n    %s\n\n", extraGlobal)
	}
	fmt.Fprintf(&b, `defaults
    mode http
    timeout connect 1s
    timeout client 10s
    timeout server 10s
    timeout http-keep-alive 10s
    retries 0

frontend fe
    bind %s
    default_backend web

backend web
    balance roundrobin
    option httpchk GET /healthz
    default-server %s
`, feAddr, checks)
	for _, n := range nodes {
		fmt.Fprintf(&b, "    server %s %s check\n", n.name, n.addr)
	}
	return b.String()
}

// testLog sends a driver's log to the test's output.
func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// load is a load generator: clients goroutines request url until stopped,
// half over kept-alive connections, half over a new connection per request.
type load struct {
	sent, ok atomic.Int64
	mu       sync.Mutex
	failures []string       // non-200 answers and transport errors
	bodies   map[string]int // answers by page ("node1 v2")
	// hits of a watched page: when each request started and ended.
	watch string
	hits  []span
	stop  chan struct{}
	wg    sync.WaitGroup
}

type span struct{ start, end time.Time }

func startLoad(url string, clients int, watch string) *load {
	l := &load{bodies: map[string]int{}, watch: watch, stop: make(chan struct{})}
	keep := &http.Transport{MaxIdleConns: clients, MaxIdleConnsPerHost: clients, IdleConnTimeout: 5 * time.Second}
	fresh := &http.Transport{DisableKeepAlives: true}
	for i := range clients {
		c := &http.Client{Transport: keep, Timeout: 10 * time.Second}
		if i%2 == 1 {
			c = &http.Client{Transport: fresh, Timeout: 10 * time.Second}
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				l.one(c, url)
			}
		}()
	}
	return l
}

func (l *load) one(c *http.Client, url string) {
	l.sent.Add(1)
	start := time.Now()
	resp, err := c.Get(url)
	if err != nil {
		l.fail(err.Error())
		return
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	switch {
	case err != nil:
		l.fail("read body: " + err.Error())
	case resp.StatusCode != http.StatusOK:
		l.fail(fmt.Sprintf("status %d: %s", resp.StatusCode, body))
	default:
		l.ok.Add(1)
		page := strings.TrimSpace(string(body))
		l.mu.Lock()
		l.bodies[page]++
		if strings.HasPrefix(page, l.watch) {
			l.hits = append(l.hits, span{start, time.Now()})
		}
		l.mu.Unlock()
	}
}

func (l *load) fail(msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failures = append(l.failures, msg)
}

// finish stops the clients and waits for their last requests.
func (l *load) finish() {
	close(l.stop)
	l.wg.Wait()
}

// watchedBetween counts requests answered by the watched node that started
// after a and ended before b: the LB sent them to it between a and b (a
// request that starts just before b may be routed just after it).
func (l *load) watchedBetween(a, b time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, h := range l.hits {
		if h.start.After(a) && h.end.Before(b) {
			n++
		}
	}
	return n
}

// firstWatchedAfter is how long after a the first request answered by the
// watched node started (-1 if none did).
func (l *load) firstWatchedAfter(a time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	first := time.Duration(-1)
	for _, h := range l.hits {
		if d := h.start.Sub(a); d >= 0 && (first < 0 || d < first) {
			first = d
		}
	}
	return first
}

func (l *load) page(p string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.bodies[p]
}

// slowDownloads starts downloads of the slow file through the LB until want
// of them are served by the node named watch (others are dropped at their
// header), and returns a channel that gets, for each, when it ended or why
// it failed.
func slowDownloads(t *testing.T, url, watch string, want int) <-chan slowResult {
	t.Helper()
	done := make(chan slowResult, want)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(10 * time.Second)
	for started := 0; started < want; {
		if time.Now().After(deadline) {
			t.Fatalf("no slow download landed on %s in 10 s", watch)
		}
		resp, err := client.Get(url)
		if err != nil {
			t.Fatalf("slow download: %v", err)
		}
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Node") != watch {
			resp.Body.Close()
			continue
		}
		started++
		go func() {
			defer resp.Body.Close()
			n, err := io.Copy(io.Discard, resp.Body)
			if err == nil && n != 300<<10 {
				err = fmt.Errorf("slow download cut at %d bytes", n)
			}
			done <- slowResult{time.Now(), err}
		}()
	}
	return done
}

type slowResult struct {
	end time.Time
	err error
}

// watchedAfter counts the watched node's answers to requests that started
// after a and before b, and those that ended later than slack after a.
func (l *load) watchedAfter(a, b time.Time, slack time.Duration) (started, late int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, h := range l.hits {
		if h.start.After(a) && h.start.Before(b) {
			started++
		} else if h.end.After(a.Add(slack)) && h.start.Before(b) {
			late++
		}
	}
	return started, late
}
