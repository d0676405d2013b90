package nginxconf

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const serverYAML = `
sites:
  - name: blog
    serverNames: [www.blog.test, blog.test]
    source: sites/blog
workers:
  - name: api
    source: workers/api
    exec: [./api]
    port: 9100
    health: {path: /healthz}
    routes: [{serverName: api.test, path: /}]
`

// newTestServer is a Server over a temp dir with a fake nginx binary that
// logs its arguments and exits with the status in dir/status (0 without).
func newTestServer(t *testing.T, edit func(*ServerConfig)) (*Server, string) {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "nginx")
	script := "#!/bin/sh\necho \"$@\" >> " + filepath.Join(dir, "args") +
		"\nexit $(cat " + filepath.Join(dir, "status") + " 2>/dev/null || echo 0)\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := ServerConfig{
		Binary: bin, Config: filepath.Join(dir, "conf", "nginx.conf"), PIDFile: filepath.Join(dir, "nginx.pid"),
		LiveDir: filepath.Join(dir, "current"), HealthDir: filepath.Join(dir, "lb"),
		HTTPSPort: 8443, HealthPort: 8081,
	}
	if edit != nil {
		edit(&cfg)
	}
	return NewServer(cfg, slog.New(slog.DiscardHandler)), dir
}

func TestServerTLSChoice(t *testing.T) {
	sp := mustSpec(t, serverYAML)
	withSpecTLS := mustSpec(t, serverYAML+"nginx: {tls: {certificate: /spec.crt, key: /spec.key}}\n")

	// Neither: plain HTTP.
	s, _ := newTestServer(t, nil)
	if cert, key, err := s.tls(sp); err != nil || cert != "" || key != "" {
		t.Errorf("no TLS: %q %q %v", cert, key, err)
	}
	if got := s.SiteURL(sp); got != "http://127.0.0.1:8443" {
		t.Errorf("SiteURL without TLS = %q", got)
	}
	// The spec's pair.
	if cert, key, _ := s.tls(withSpecTLS); cert != "/spec.crt" || key != "/spec.key" {
		t.Errorf("spec TLS: %q %q", cert, key)
	}
	if got := s.SiteURL(withSpecTLS); got != "https://127.0.0.1:8443" {
		t.Errorf("SiteURL with TLS = %q", got)
	}
	// The node's pair overrides the spec's.
	s, _ = newTestServer(t, func(c *ServerConfig) {
		c.TLS = &ServerTLS{Certificate: "/node.crt", Key: "/node.key"}
		c.Listen, c.HTTPSPort = "::1", 0
	})
	if cert, key, _ := s.tls(withSpecTLS); cert != "/node.crt" || key != "/node.key" {
		t.Errorf("node TLS: %q %q", cert, key)
	}
	if got := s.SiteURL(withSpecTLS); got != "https://[::1]:443" {
		t.Errorf("SiteURL on ::1 with the spec's port = %q", got)
	}
	// Self-signed: a pair in the dir, for every server name of sites and routes.
	tlsDir := filepath.Join(t.TempDir(), "tls")
	s, _ = newTestServer(t, func(c *ServerConfig) { c.TLS = &ServerTLS{SelfSignedDir: tlsDir} })
	cert, key, err := s.tls(withSpecTLS)
	if err != nil || filepath.Dir(cert) != tlsDir || filepath.Dir(key) != tlsDir {
		t.Fatalf("self-signed: %q %q %v", cert, key, err)
	}
	if !selfSignedCovers(cert, key, []string{"api.test", "blog.test", "www.blog.test"}, time.Now()) {
		t.Error("self-signed pair does not cover the spec's server names")
	}
}

func TestServerNames(t *testing.T) {
	got := serverNames(mustSpec(t, serverYAML))
	if want := []string{"api.test", "blog.test", "www.blog.test"}; !reflect.DeepEqual(got, want) {
		t.Errorf("serverNames = %v, want %v", got, want)
	}
}

func TestServerRender(t *testing.T) {
	sp := mustSpec(t, serverYAML)
	canary := mustSpec(t, serverYAML+"rollout: {canary: {}}\n")
	s, dir := newTestServer(t, func(c *ServerConfig) {
		c.Prefix = filepath.Join(c.LiveDir, "..", "prefix")
		c.TrafficLog = "/var/lib/drover/lb/traffic.log"
		c.RevisionHeader, c.NodeName = true, "web1"
	})
	conf, err := s.Render(sp)
	if err != nil {
		t.Fatal(err)
	}
	// What Render of the same params gives, filled in as the server does.
	p := s.params
	p.Spec, p.Revision, p.Node = sp, "none", "web1"
	want, err := Render(p)
	if err != nil {
		t.Fatal(err)
	}
	if string(conf) != string(want) {
		t.Error("Server.Render differs from Render of its params")
	}
	if fi, err := os.Stat(filepath.Join(dir, "prefix", "tmp")); err != nil || !fi.IsDir() {
		t.Errorf("temp dir under the prefix not made: %v", err)
	}
	if !strings.Contains(string(conf), filepath.Join(dir, "prefix", "error.log")) {
		t.Error("error log is not under the prefix")
	}
	if strings.Contains(string(conf), "traffic.log") {
		t.Error("traffic log without rollout.canary")
	}
	if !strings.Contains(string(conf), `"none"`) || !strings.Contains(string(conf), `"web1"`) {
		t.Error("revision header without a live link should name revision none and the node")
	}
	// The live link names the revision.
	if err := os.Symlink(filepath.Join(dir, "releases", "abc123"), s.cfg.LiveDir); err != nil {
		t.Fatal(err)
	}
	if conf, err = s.Render(canary); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(conf), `"abc123"`) {
		t.Error("revision header does not name the live link's revision")
	}
	if !strings.Contains(string(conf), "/var/lib/drover/lb/traffic.log") {
		t.Error("no traffic log with rollout.canary")
	}
}

func TestServerCheckApplyDrift(t *testing.T) {
	ctx := context.Background()
	sp := mustSpec(t, serverYAML)
	s, dir := newTestServer(t, nil)
	if err := s.Check(ctx, sp); err != nil {
		t.Fatal(err)
	}
	args, _ := os.ReadFile(filepath.Join(dir, "args"))
	if !strings.HasPrefix(string(args), "-t -q -c "+filepath.Join(dir, "conf")+"/") {
		t.Errorf("nginx -t args = %q", args)
	}
	if _, err := os.Stat(s.cfg.Config); err == nil {
		t.Error("Check installed the config")
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "conf")); len(ents) != 0 {
		t.Errorf("Check left %d files beside the config", len(ents))
	}
	os.WriteFile(filepath.Join(dir, "status"), []byte("1"), 0o644)
	if err := s.Check(ctx, sp); err == nil || !strings.Contains(err.Error(), "nginx config test") {
		t.Errorf("Check with a refusing nginx: %v", err)
	}
	os.Remove(filepath.Join(dir, "status"))

	drift, err := s.Drift(ctx, sp)
	if want := []string{"nginx config " + s.cfg.Config + " is missing", "nginx is not running"}; err != nil || !reflect.DeepEqual(drift, want) {
		t.Errorf("Drift before Apply = %q, %v", drift, err)
	}
	err = s.Apply(ctx, sp)
	if want := "nginx is not running (pid file " + s.cfg.PIDFile + "); start it, or set nginx.start in node.yaml for development"; err == nil || err.Error() != want {
		t.Errorf("Apply without nginx running = %v", err)
	}
	if drift, _ = s.Drift(ctx, sp); !reflect.DeepEqual(drift, []string{"nginx is not running"}) {
		t.Errorf("Drift after Apply = %q", drift)
	}
	os.WriteFile(s.cfg.Config, []byte("# edited\n"), 0o644)
	if drift, _ = s.Drift(ctx, sp); len(drift) != 2 || drift[0] != "nginx config "+s.cfg.Config+" was changed" {
		t.Errorf("Drift after an edit = %q", drift)
	}
}
