package nginxconf

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/testsvc"
)

// world is a node's nginx for one test: a real nginx master serving a
// rendered config from a world-readable directory, and the Nginx that
// drives it.
type world struct {
	t     *testing.T
	dir   string
	p     Params
	n     *Nginx
	ng    *testsvc.Nginx
	roots *x509.CertPool // trusts the self-signed certificate; nil without TLS
}

// newWorld renders specYAML (with edit applied to the params), starts nginx
// on it and returns once the master has a worker.
func newWorld(t *testing.T, specYAML string, useTLS bool, edit func(*Params)) *world {
	t.Helper()
	dir := testsvc.WorldDir(t, "nginxconf")
	w := &world{t: t, dir: dir}
	s := mustSpec(t, specYAML)
	var names []string
	for _, site := range s.Sites {
		siteDir := filepath.Join(dir, "current", "sites", site.Name)
		mkdir(t, siteDir)
		writeFile(t, filepath.Join(siteDir, "index.html"), "site "+site.Name+"\n")
		names = append(names, site.ServerNames...)
	}
	for _, wk := range s.Workers {
		for _, r := range wk.Routes {
			names = append(names, r.ServerName)
		}
	}
	for _, d := range []string{"health", "tmp", "conf"} {
		mkdir(t, filepath.Join(dir, d))
	}
	w.p = Params{
		Spec: s, LiveDir: filepath.Join(dir, "current"), HealthDir: filepath.Join(dir, "health"),
		Listen: "127.0.0.1", HTTPSPort: testsvc.FreePort(t), HealthPort: testsvc.FreePort(t),
		User: "www-data", PIDFile: filepath.Join(dir, "nginx.pid"), ErrorLog: filepath.Join(dir, "error.log"),
		TempDir: filepath.Join(dir, "tmp"),
	}
	if useTLS {
		names = append(names, "hooks.test")
		cert, key, err := EnsureSelfSigned(filepath.Join(dir, "tls"), names)
		if err != nil {
			t.Fatal(err)
		}
		w.p.TLSCert, w.p.TLSKey = cert, key
		pem, _ := os.ReadFile(cert)
		w.roots = x509.NewCertPool()
		w.roots.AppendCertsFromPEM(pem)
	}
	if edit != nil {
		edit(&w.p)
	}
	conf := filepath.Join(dir, "conf", "nginx.conf")
	writeFile(t, conf, string(w.render(w.p)))
	w.ng = testsvc.StartNginx(t, dir, conf, w.httpsAddr())
	w.n = &Nginx{
		Binary: w.ng.Bin, Config: conf, Prefix: dir, PIDFile: w.p.PIDFile,
		Log: slog.New(slog.NewTextHandler(t.Output(), nil)), ReloadTimeout: 10 * time.Second,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pid := w.pid()
	if _, err := w.n.serving(ctx, pid); err != nil {
		t.Fatal(err)
	}
	return w
}

func mkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (w *world) render(p Params) []byte {
	w.t.Helper()
	out, err := Render(p)
	if err != nil {
		w.t.Fatal(err)
	}
	return out
}

// pid waits for the master's pid file, written after its sockets listen.
func (w *world) pid() int {
	w.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if pid, ok := w.n.Running(); ok {
			if pid != w.ng.PID() {
				w.t.Fatalf("Running says pid %d, the master is %d", pid, w.ng.PID())
			}
			return pid
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("no nginx master in %s", w.p.PIDFile)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (w *world) httpsAddr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(w.p.HTTPSPort)) }

func (w *world) healthURL(path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", w.p.HealthPort, path)
}

// client makes requests for any host to nginx's HTTPS port, trusting the
// self-signed certificate.
func (w *world) client(keepAlive, h2 bool) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", w.httpsAddr())
		},
		TLSClientConfig:     &tls.Config{RootCAs: w.roots},
		DisableKeepAlives:   !keepAlive,
		MaxIdleConnsPerHost: 64,
		ForceAttemptHTTP2:   h2,
	}
	w.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func (w *world) url(host, path string) string {
	scheme := "http"
	if w.roots != nil {
		scheme = "https"
	}
	return scheme + "://" + host + path
}

// get fetches host+path through nginx's HTTPS port.
func (w *world) get(c *http.Client, host, path string) (*http.Response, string, error) {
	resp, err := c.Get(w.url(host, path))
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

// mustGet is get that fails the test on a transport error.
func (w *world) mustGet(c *http.Client, host, path string) (*http.Response, string) {
	w.t.Helper()
	resp, body, err := w.get(c, host, path)
	if err != nil {
		w.t.Fatal(err)
	}
	return resp, body
}

// backend is a worker instance: an HTTP server on a given port.
func backend(t *testing.T, addr string, h http.HandlerFunc) {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
}
