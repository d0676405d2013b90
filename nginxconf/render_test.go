package nginxconf

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/drover-dev/drover/internal/testsvc"
	"github.com/drover-dev/drover/spec"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// goldenRoot stands for the node's directories in golden files; the nginx -t
// test replaces it with a real directory.
const goldenRoot = "/srv/drover-golden"

func mustSpec(t testing.TB, yaml string) *spec.Spec {
	t.Helper()
	s, err := spec.Parse("drover.yaml", []byte("version: 1\n"+yaml))
	if err != nil {
		t.Fatalf("spec: %v", err)
	}
	return s
}

const sitesYAML = `
sites:
  - name: blog
    serverNames: [blog.example.com, www.blog.example.com]
    source: sites/blog
  - name: docs
    serverNames: ["*.docs.example.com"]
    source: sites/docs
`

const spaYAML = `
sites:
  - name: app
    serverNames: [app.example.com]
    source: sites/app
    spa: true
    headers:
      Content-Security-Policy: "default-src 'self'; img-src 'self' data:"
      X-Frame-Options: DENY
`

const workersYAML = `
sites:
  - name: app
    serverNames: [app.example.com]
    source: sites/app
    spa: true
workers:
  - name: feedback-api
    source: workers/feedback-api
    exec: [/usr/local/bin/node, server.js]
    instances: 3
    port: 3000
    health: {path: /healthz}
    routes: [{serverName: app.example.com, path: /api/}]
  - name: chat
    source: workers/chat
    exec: [/usr/local/bin/node, chat.js]
    port: 3100
    health: {path: /healthz}
    routes: [{serverName: app.example.com, path: /ws/}]
`

const routeOnlyYAML = `
workers:
  - name: api-v2
    source: workers/api-v2
    exec: [./api]
    instances: 2
    port: 4000
    health: {path: /healthz}
    routes: [{serverName: api.example.com, path: /v2/}]
  - name: api
    source: workers/api
    exec: [./api]
    instances: 2
    port: 3000
    health: {path: /healthz}
    routes: [{serverName: api.example.com, path: /}]
  - name: metrics
    source: workers/metrics
    exec: [./metrics]
    port: 5000
    health: {path: /healthz}
    routes: [{serverName: metrics.example.com, path: /push/}]
`

// goldenParams is a node's settings under goldenRoot, with TLS.
func goldenParams(s *spec.Spec) Params {
	return Params{
		Spec:       s,
		LiveDir:    goldenRoot + "/current",
		HealthDir:  goldenRoot + "/health",
		Listen:     "127.0.0.1",
		HTTPSPort:  8443,
		HealthPort: 8080,
		TLSCert:    goldenRoot + "/tls/" + SelfSignedCert,
		TLSKey:     goldenRoot + "/tls/" + SelfSignedKey,
		PIDFile:    goldenRoot + "/nginx.pid",
		ErrorLog:   goldenRoot + "/error.log",
		TempDir:    goldenRoot + "/tmp",
	}
}

// goldenCases are the configurations kept in testdata/NAME.golden.
func goldenCases(t testing.TB) map[string]Params {
	noTLS := goldenParams(mustSpec(t, sitesYAML))
	noTLS.TLSCert, noTLS.TLSKey = "", ""
	webhookSite := goldenParams(mustSpec(t, sitesYAML))
	webhookSite.Webhook = &Webhook{ServerName: "blog.example.com", Path: "/hooks/drover", Upstream: "127.0.0.1:9090"}
	webhookOwn := goldenParams(mustSpec(t, routeOnlyYAML))
	webhookOwn.Webhook = &Webhook{ServerName: "hooks.example.com", Path: "/push", Upstream: "127.0.0.1:9090"}
	status := goldenParams(mustSpec(t, sitesYAML))
	status.StatusListen = "127.0.0.1:8099"
	full := goldenParams(mustSpec(t, workersYAML+"nginx: {healthPath: /lb-health, clientMaxBodySize: 20m}\n"))
	full.User = "www-data"
	full.AccessLog = goldenRoot + "/access.log"
	full.Includes = []string{goldenRoot + "/conf.d/*.conf"}
	full.StatusListen = "127.0.0.1:8099"
	full.Webhook = &Webhook{ServerName: "app.example.com", Path: "/hooks/drover", Upstream: "127.0.0.1:9090"}
	return map[string]Params{
		"sites":           goldenParams(mustSpec(t, sitesYAML)),
		"sites_no_tls":    noTLS,
		"spa_csp":         goldenParams(mustSpec(t, spaYAML)),
		"workers_on_site": goldenParams(mustSpec(t, workersYAML)),
		"route_only_host": goldenParams(mustSpec(t, routeOnlyYAML)),
		"webhook_on_site": webhookSite,
		"webhook_own":     webhookOwn,
		"status":          status,
		"full":            full,
	}
}

func TestRenderGolden(t *testing.T) {
	for name, p := range goldenCases(t) {
		t.Run(name, func(t *testing.T) {
			got, err := Render(p)
			if err != nil {
				t.Fatal(err)
			}
			again, _ := Render(p)
			if !bytes.Equal(got, again) {
				t.Fatal("two renders of the same params differ")
			}
			file := filepath.Join("testdata", name+".golden")
			if *update {
				if err := os.WriteFile(file, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("%v (run go test ./nginxconf -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("rendered config differs from %s (run go test ./nginxconf -update and review the diff):\n%s", file, got)
			}
		})
	}
}

// TestGoldenConfigsPassNginxTest runs the real `nginx -t` on every golden
// file, its directories moved into a real one holding a real certificate.
func TestGoldenConfigsPassNginxTest(t *testing.T) {
	dir := testsvc.WorldDir(t, "golden")
	if _, _, err := EnsureSelfSigned(filepath.Join(dir, "tls"), []string{"blog.example.com"}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"tmp", "health", "conf.d"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	n := &Nginx{Binary: testsvc.Bin(t, "nginx"), Prefix: dir}
	for name := range goldenCases(t) {
		t.Run(name, func(t *testing.T) {
			golden, err := os.ReadFile(filepath.Join("testdata", name+".golden"))
			if err != nil {
				t.Fatal(err)
			}
			conf := filepath.Join(dir, name+".conf")
			if err := os.WriteFile(conf, bytes.ReplaceAll(golden, []byte(goldenRoot), []byte(dir)), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := n.Test(context.Background(), conf); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestRenderLayout(t *testing.T) {
	p := goldenParams(mustSpec(t, workersYAML))
	p.Webhook = &Webhook{ServerName: "hooks.example.com", Path: "/push", Upstream: "127.0.0.1:9090"}
	out, err := Render(p)
	if err != nil {
		t.Fatal(err)
	}
	conf := string(out)
	for _, want := range []string{
		"upstream drover_feedback-api {\n        server 127.0.0.1:3000 max_fails=1 fail_timeout=2s;\n        server 127.0.0.1:3001 max_fails=1 fail_timeout=2s;\n        server 127.0.0.1:3002 max_fails=1 fail_timeout=2s;\n        keepalive 16;",
		"try_files $uri $uri/ /index.html;",
		"proxy_next_upstream error timeout;",
		"ssl_reject_handshake on;",
		"server_tokens off;",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("config lacks %q", want)
		}
	}
	if strings.Contains(conf, "daemon") {
		t.Error("config sets daemon: tests and systemd run nginx in the foreground themselves")
	}
	// Routes on a site's host go inside the site's server block, a host no
	// site serves gets its own block: app.example.com has exactly one.
	if c := strings.Count(conf, `server_name "app.example.com";`); c != 1 {
		t.Errorf("%d server blocks for app.example.com, want 1", c)
	}
	if c := strings.Count(conf, `server_name "hooks.example.com";`); c != 1 {
		t.Errorf("%d server blocks for hooks.example.com, want 1", c)
	}
	// Without a user, no user directive (nginx warns when not root).
	if strings.Contains(conf, "\nuser ") {
		t.Error("user directive without Params.User")
	}
}

func TestRenderIgnoresSpecOrder(t *testing.T) {
	a := mustSpec(t, workersYAML)
	b := mustSpec(t, workersYAML)
	b.Workers[0], b.Workers[1] = b.Workers[1], b.Workers[0]
	ra, err := Render(goldenParams(a))
	if err != nil {
		t.Fatal(err)
	}
	rb, _ := Render(goldenParams(b))
	if !bytes.Equal(ra, rb) {
		t.Fatal("reordering the spec's workers changed the config, which would reload nginx for nothing")
	}
}

// TestRenderRefusesInjection feeds Render values the spec validator would
// have refused: nginxconf must refuse them on its own.
func TestRenderRefusesInjection(t *testing.T) {
	cases := map[string]func(p *Params){
		"header value with quote": func(p *Params) { p.Spec.Sites[0].Headers = map[string]string{"X-A": `x"; return 200 "pwned`} },
		"header value with $":     func(p *Params) { p.Spec.Sites[0].Headers = map[string]string{"X-A": "$http_cookie"} },
		"header value newline":    func(p *Params) { p.Spec.Sites[0].Headers = map[string]string{"X-A": "a\nb"} },
		"header name with space":  func(p *Params) { p.Spec.Sites[0].Headers = map[string]string{"X A": "b"} },
		"server name regex":       func(p *Params) { p.Spec.Sites[0].ServerNames = []string{"~^(.*)$"} },
		"server name with quote":  func(p *Params) { p.Spec.Sites[0].ServerNames = []string{`a"b.com`} },
		"site name with slash":    func(p *Params) { p.Spec.Sites[0].Name = "../../etc" },
		"route path with brace":   func(p *Params) { p.Spec.Workers[0].Routes[0].Path = "/a{}" },
		"route path backtick":     func(p *Params) { p.Spec.Workers[0].Routes[0].Path = "/a`b" },
		"worker name":             func(p *Params) { p.Spec.Workers[0].Name = "x;y" },
		"live dir with $":         func(p *Params) { p.LiveDir = "/srv/$host" },
		"relative health dir":     func(p *Params) { p.HealthDir = "health" },
		"health path":             func(p *Params) { p.Spec.Nginx.HealthPath = "/h\"" },
		"tls key only":            func(p *Params) { p.TLSCert = "" },
		"include with quote":      func(p *Params) { p.Includes = []string{`/etc/a"b`} },
		"error log backslash":     func(p *Params) { p.ErrorLog = `/var/log/a\b` },
		"user":                    func(p *Params) { p.User = "www data" },
		"webhook upstream": func(p *Params) {
			p.Webhook = &Webhook{ServerName: "h.example.com", Path: "/h", Upstream: "127.0.0.1:80; x"}
		},
		"public status listener": func(p *Params) { p.StatusListen = "0.0.0.0:8099" },
		"same ports":             func(p *Params) { p.HealthPort = p.HTTPSPort },
		"body size":              func(p *Params) { p.Spec.Nginx.ClientMaxBodySize = "1m; x" },
		"route / on a site host": func(p *Params) { p.Spec.Workers[0].Routes[0].Path = "/" },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			p := goldenParams(mustSpec(t, workersYAML))
			mutate(&p)
			out, err := Render(p)
			if err == nil {
				t.Fatalf("rendered without error:\n%s", out)
			}
			if out != nil {
				t.Error("returned a config along with the error")
			}
		})
	}
}

func TestRenderReportsEveryProblem(t *testing.T) {
	p := goldenParams(mustSpec(t, spaYAML))
	p.LiveDir = "relative"
	p.Spec.Sites[0].Headers["X-B"] = "$x"
	_, err := Render(p)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"liveDir", `sites[0].headers["X-B"]`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}
