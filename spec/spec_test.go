package spec

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

func TestExampleParsesWithDefaults(t *testing.T) {
	file := filepath.Join("..", "examples", "config", FileName)
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Parse(file, data)
	if err != nil {
		t.Fatalf("the shipped example is invalid:\n%v", err)
	}
	api := s.Workers[0]
	if api.Name != "feedback-api" || api.Instances != 2 || api.Health.Successes != DefaultHealthSuccesses {
		t.Fatalf("feedback-api decoded as %+v", api)
	}
	if got := api.InstancePorts(); len(got) != 2 || got[0] != 3000 || got[1] != 3001 {
		t.Fatalf("instance ports %v, want [3000 3001]", got)
	}
	if s.Rollout.DrainTimeout.D() != 30*time.Second || s.Rollout.ProgressDeadline.D() != DefaultProgressDeadline {
		t.Fatalf("rollout %+v", s.Rollout)
	}
	if s.Sites[1].Health.Path != "/" || s.Sites[1].Health.Status != 200 {
		t.Fatalf("site health default %+v", s.Sites[1].Health)
	}
	if !strings.Contains(s.Sites[1].Headers["Content-Security-Policy"], "default-src 'self';") {
		t.Fatalf("CSP header lost: %q", s.Sites[1].Headers)
	}
}

const base = `version: 1
sites:
  - name: blog
    serverNames: [blog.example.com]
    source: sites/blog
workers:
  - name: api
    source: workers/api
    exec: [node, server.js]
    port: 3000
    instances: 2
    health: {path: /healthz}
`

// TestBadSpecs checks that each bad input is refused with the field path, the
// position and the reason, and that all problems are reported together.
func TestBadSpecs(t *testing.T) {
	cases := []struct {
		name string
		yaml string
		want []string // substrings, each expected in the error
	}{
		{"unknown field", strings.Replace(base, "    port: 3000", "    prot: 3000", 1),
			[]string{"drover.yaml:10:5: workers[0].prot: unknown field (did you mean \"port\"?)"}},
		{"wrong type", strings.Replace(base, "instances: 2", "instances: two", 1),
			[]string{"drover.yaml:11:16: workers[0].instances: \"two\" is not an integer"}},
		{"list for a string", strings.Replace(base, "source: sites/blog", "source: [a]", 1),
			[]string{"sites[0].source: must be a string, not a list"}},
		{"missing version", strings.Replace(base, "version: 1\n", "", 1), []string{"version: is required"}},
		{"unsupported version", strings.Replace(base, "version: 1", "version: 2", 1), []string{"version 2 is not supported"}},
		{"duplicate site", base[:strings.Index(base, "workers:")] + "  - name: blog\n    serverNames: [b.example.com]\n    source: x\n" + base[strings.Index(base, "workers:"):],
			[]string{"sites[1].name: site \"blog\" is already defined at sites[0]"}},
		{"duplicate server name", base[:strings.Index(base, "workers:")] + "  - name: blog2\n    serverNames: [blog.example.com]\n    source: x\n" + base[strings.Index(base, "workers:"):],
			[]string{"sites[1].serverNames[0]: server name \"blog.example.com\" is already served by sites[0]"}},
		{"two workers one port", base + "  - name: admin\n    source: w\n    exec: [x]\n    port: 3001\n    health: {path: /h}\n",
			[]string{"workers[1].port: ports 3001-3001 overlap the ports 3000-3001 of workers[0]"}},
		{"duplicate worker", base + "  - name: api\n    source: w\n    exec: [x]\n    port: 4000\n    health: {path: /h}\n",
			[]string{"workers[1].name: worker \"api\" is already defined"}},
		{"dotdot", strings.Replace(base, "source: sites/blog", "source: sites/../../etc", 1), []string{"sites[0].source: \"sites/../../etc\" leaves the repo"}},
		{"absolute", strings.Replace(base, "source: sites/blog", "source: /etc", 1), []string{"sites[0].source: \"/etc\" is absolute"}},
		{"server name injection", strings.Replace(base, "[blog.example.com]", "[\"blog.example.com; return 302 http://evil\"]", 1),
			[]string{"sites[0].serverNames[0]", "is not a lowercase hostname"}},
		{"server name brace", strings.Replace(base, "[blog.example.com]", "[\"a}b\"]", 1), []string{"is not a lowercase hostname"}},
		{"header value newline", strings.Replace(base, "    source: sites/blog\n", "    source: sites/blog\n    headers: {X-A: \"a\\nadd_header X-Evil 1\"}\n", 1),
			[]string{"sites[0].headers[\"X-A\"]", "control character"}},
		{"header value dollar", strings.Replace(base, "    source: sites/blog\n", "    source: sites/blog\n    headers: {X-A: \"$host\"}\n", 1),
			[]string{"contains '$'"}},
		{"header value quote", strings.Replace(base, "    source: sites/blog\n", "    source: sites/blog\n    headers: {X-A: 'a\" always; root /'}\n", 1),
			[]string{"contains '\"'"}},
		{"header name", strings.Replace(base, "    source: sites/blog\n", "    source: sites/blog\n    headers: {\"X-A b\": v}\n", 1),
			[]string{"is not a header name"}},
		{"env newline", strings.Replace(base, "    port: 3000\n", "    port: 3000\n    env: {A: \"x\\nExecStartPre=/bin/evil\"}\n", 1),
			[]string{"workers[0].env[\"A\"]", "control character"}},
		{"env key", strings.Replace(base, "    port: 3000\n", "    port: 3000\n    env: {\"A=B\": x}\n", 1), []string{"is not an environment variable name"}},
		{"env PORT", strings.Replace(base, "    port: 3000\n", "    port: 3000\n    env: {PORT: \"1\"}\n", 1), []string{"PORT is set by drover"}},
		{"argv NUL", strings.Replace(base, "exec: [node, server.js]", "exec: [node, \"a\\0b\"]", 1), []string{"workers[0].exec[1]", "control character"}},
		{"no exec", strings.Replace(base, "    exec: [node, server.js]\n", "", 1), []string{"workers[0].exec: is required"}},
		{"route path", strings.Replace(base, "    health: {path: /healthz}\n", "    health: {path: /healthz}\n    routes: [{serverName: api.example.com, path: \"/a;b\"}]\n", 1),
			[]string{"workers[0].routes[0].path"}},
		{"route on site root", strings.Replace(base, "    health: {path: /healthz}\n", "    health: {path: /healthz}\n    routes: [{serverName: blog.example.com}]\n", 1),
			[]string{"path / of blog.example.com is served by sites[0]"}},
		{"source and artifact", strings.Replace(base, "source: sites/blog", "source: sites/blog\n    artifact: {url: https://ci.example.com/a.tgz, sha256: abc}", 1),
			[]string{"sites[0].artifact: give either source or artifact"}},
		{"bad sha", strings.Replace(base, "source: sites/blog", "artifact: {url: https://ci.example.com/a.tgz, sha256: abc}", 1),
			[]string{"sites[0].artifact.sha256: \"abc\" is not 64 lowercase hex digits"}},
		{"bad duration", strings.Replace(base, "version: 1\n", "version: 1\nrollout: {healthTimeout: soon}\n", 1),
			[]string{"rollout.healthTimeout: \"soon\" is not a duration"}},
		{"yaml syntax", "version: 1\nsites: [\n", []string{"drover.yaml:2:1: invalid YAML"}},
		{"alias", "version: 1\nx: &a 1\n", []string{"x: unknown field"}},
		{"empty", "", []string{"the file is empty"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := Parse("drover.yaml", []byte(c.yaml))
			if err == nil {
				t.Fatalf("accepted:\n%s\nas %+v", c.yaml, s)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if es, ok := AsErrors(err); !ok || len(es) == 0 {
				t.Errorf("error is %T, want Errors", err)
			}
		})
	}
}

func TestAllErrorsAtOnce(t *testing.T) {
	y := strings.NewReplacer("instances: 2", "instances: 0", "source: sites/blog", "source: ../x", "port: 3000", "port: 80", "exec: [node, server.js]", "exec: []", "version: 1", "version: 1\nbogus: true").Replace(base)
	_, err := Parse("drover.yaml", []byte(y))
	es, _ := AsErrors(err)
	for _, w := range []string{"bogus: unknown field", "sites[0].source", "workers[0].instances", "workers[0].port", "workers[0].exec"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in:\n%v", w, err)
		}
	}
	for i := 1; i < len(es); i++ {
		if es[i].Pos.Line < es[i-1].Pos.Line {
			t.Errorf("errors not sorted by line:\n%v", err)
		}
	}
}

func TestCheckTree(t *testing.T) {
	s, err := Parse("drover.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	good := fstest.MapFS{
		"sites/blog/index.html":   {Data: []byte("hi")},
		"sites/blog/latest":       {Data: []byte("index.html"), Mode: 0o777 | os.ModeSymlink},
		"workers/api/server.js":   {Data: []byte("x")},
		"workers/api/lib/util.js": {Data: []byte("x")},
	}
	if err := CheckTree("drover.yaml", s, good); err != nil {
		t.Fatalf("good tree refused: %v", err)
	}
	escape := fstest.MapFS{
		"sites/blog/passwd":     {Data: []byte("../../../etc/passwd"), Mode: 0o777 | os.ModeSymlink},
		"workers/api/server.js": {Data: []byte("x")},
	}
	err = CheckTree("drover.yaml", s, escape)
	if err == nil || !strings.Contains(err.Error(), "sites/blog/passwd: symlink to \"../../../etc/passwd\" leaves the repo") {
		t.Fatalf("escape not refused: %v", err)
	}
	absLink := fstest.MapFS{
		"sites/blog/x":          {Data: []byte("/etc/shadow"), Mode: 0o777 | os.ModeSymlink},
		"workers/api/server.js": {Data: []byte("x")},
	}
	if err := CheckTree("drover.yaml", s, absLink); err == nil || !strings.Contains(err.Error(), "absolute path") {
		t.Fatalf("absolute link not refused: %v", err)
	}
	dirLink := fstest.MapFS{
		"sites/blog":            {Data: []byte("../../etc"), Mode: 0o777 | os.ModeSymlink},
		"workers/api/server.js": {Data: []byte("x")},
	}
	if err := CheckTree("drover.yaml", s, dirLink); err == nil || !strings.Contains(err.Error(), "sites/blog is a symlink") {
		t.Fatalf("source through a symlink not refused: %v", err)
	}
	missing := fstest.MapFS{"sites/blog/index.html": {Data: []byte("hi")}}
	if err := CheckTree("drover.yaml", s, missing); err == nil || !strings.Contains(err.Error(), "workers[0].source: workers does not exist") {
		t.Fatalf("missing source not reported: %v", err)
	}
}

func TestCheckLink(t *testing.T) {
	for _, c := range []struct {
		name, target string
		ok           bool
	}{
		{"a/b", "c", true}, {"a/b", "../c", true}, {"a/b", "../../c", false}, {"a", "/etc", false},
		{"a/b/c", "../../x/../y", true}, {"a", "..", false}, {"a/b", "", false},
	} {
		if err := CheckLink(c.name, c.target); (err == nil) != c.ok {
			t.Errorf("CheckLink(%q, %q) = %v, want ok=%v", c.name, c.target, err, c.ok)
		}
	}
}

func TestNodeConfig(t *testing.T) {
	n, err := ParseNode("node.yaml", []byte("name: web1\nstateDir: state\nrepo: {url: ../repo}\nnginx: {config: nginx/nginx.conf, tls: {selfSigned: true}}\n"), "/srv/drover")
	if err != nil {
		t.Fatal(err)
	}
	if n.StateDir != "/srv/drover/state" || n.Repo.URL != "file:///srv/repo" || n.Nginx.Config != "/srv/drover/nginx/nginx.conf" {
		t.Fatalf("paths not resolved against the node.yaml dir: %+v", n)
	}
	if n.Repo.Branch != "main" || n.Repo.PollInterval.D() != 10*time.Second || n.KeepReleases != 5 {
		t.Fatalf("defaults not applied: %+v", n.Repo)
	}
	_, err = ParseNode("node.yaml", []byte("name: web1\nrepo: {url: 'https://u:pw@example.com/r.git', sshKeyFile: k, branch: 'a..b'}\nkeepReleases: 1\nlog: {level: loud}\nnginx: {listen: nowhere, tls: {}}\n"), "/")
	for _, w := range []string{"repo.url: put no password in the URL", "repo.knownHostsFile: is required with sshKeyFile", "repo.branch", "keepReleases: must be at least 2", "log.level", "nginx.listen", "nginx.tls: give certificate and key"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in:\n%v", w, err)
		}
	}
}

func TestExampleNodeParses(t *testing.T) {
	n, err := LoadNode(filepath.Join("..", "examples", "node.local.yaml"))
	if err != nil {
		t.Fatalf("the shipped node config is invalid:\n%v", err)
	}
	if !filepath.IsAbs(n.StateDir) || n.Nginx.HTTPSPort != 8443 || n.Supervisor != "exec" || n.Nginx.User != "" {
		t.Fatalf("decoded as %+v", n)
	}
}

func TestNodeClusterSections(t *testing.T) {
	good := `repo: {url: /srv/repo}
cluster: {redis: [10.0.0.2:6379], passwordFile: redis.pw}
webhook: {listen: 127.0.0.1:9095, serverName: deploy.example.com, secretFile: hook.secret}
lb: {driver: haproxy, haproxy: {socket: /run/haproxy/admin.sock, backend: app, server: web1}}
database: {dsnFile: db.dsn}
`
	n, err := ParseNode("node.yaml", []byte(good), "/etc/drover")
	if err != nil {
		t.Fatal(err)
	}
	if n.Cluster.Name != "default" || n.Cluster.LockExpiry.D() != 30*time.Second || n.Cluster.PasswordFile != "/etc/drover/redis.pw" ||
		n.Webhook.Path != "/_drover/webhook" || n.Database.DSNFile != "/etc/drover/db.dsn" {
		t.Fatalf("decoded as %+v %+v %+v", n.Cluster, n.Webhook, n.Database)
	}
	bad := `repo: {url: /srv/repo}
cluster: {redis: [a:1, b:2], sentinels: [c]}
webhook: {listen: nowhere, provider: svn}
lb: {driver: f5}
`
	_, err = ParseNode("node.yaml", []byte(bad), "/")
	for _, w := range []string{"cluster.sentinels: give either redis or sentinels", "cluster.sentinels[0]", "webhook.listen", "webhook.secretFile: is required", "webhook.provider", "lb.driver"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in:\n%v", w, err)
		}
	}
}

// Each wrong value in node.yaml's lb and cluster sections is one message,
// at its line, naming node.yaml's field: spec is the only validator of
// these sections (lbdrain and cluster only check a Config built in code),
// so the rules they used to apply on their own are here too.
func TestNodeLBAndClusterMessages(t *testing.T) {
	for _, c := range []struct {
		name, yaml string
		want       []string // the whole error, one line each
	}{
		{"thresholds", `repo: {url: /srv/repo}
lb:
  driver: healthcheck
  healthcheck:
    interval: 2s
    unhealthyThreshold: 0
    healthyThreshold: 2
`, []string{"node.yaml:6:25: lb.healthcheck.unhealthyThreshold: must be at least 1 (the LB's fall count), got 0"}},
		{"haproxy names", `repo: {url: /srv/repo}
lb:
  driver: haproxy
  haproxy: {socket: /run/haproxy/admin.sock, backend: app, server: "web 1"}
`, []string{`node.yaml:4:68: lb.haproxy.server: "web 1" must be a server name without spaces or slashes`}},
		{"digitalocean URLs", `repo: {url: /srv/repo}
lb:
  driver: digitalocean
  digitalocean: {loadBalancerID: lb1, tokenFile: do.token, apiURL: api.digitalocean.com}
`, []string{`node.yaml:4:68: lb.digitalocean.apiURL: "api.digitalocean.com" is not an http(s) URL`}},
		{"sentinel address", `repo: {url: /srv/repo}
cluster:
  sentinels: [10.0.0.1:26379, nohost]
  masterName: mymaster
`, []string{`node.yaml:3:31: cluster.sentinels[1]: "nohost" is not host:port`}},
		{"caFile without tls", `repo: {url: /srv/repo}
cluster: {redis: [10.0.0.2:6379], caFile: ca.pem, db: -1}
`, []string{"node.yaml:2:43: cluster.caFile: is set but tls is not: set tls: true, or drop caFile",
			"node.yaml:2:55: cluster.db: -1 is negative"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseNode("node.yaml", []byte(c.yaml), "/etc/drover")
			if err == nil {
				t.Fatalf("accepted; want %q", c.want)
			}
			if got := strings.Split(err.Error(), "\n"); strings.Join(got, "\n") != strings.Join(c.want, "\n") {
				t.Errorf("error:\n%v\nwant:\n%s", err, strings.Join(c.want, "\n"))
			}
		})
	}
}
