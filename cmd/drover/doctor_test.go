package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/testsvc"
)

// doctorEnv is everything a cluster node's doctor reaches, for real: a
// config repo served by git-http-backend behind basic auth, Redis with a
// Sentinel, PostgreSQL (and a PgBouncer in transaction mode in front of it),
// nginx's binary, and a DigitalOcean API (fakeDOAPI: the one part that
// cannot be reached here).
type doctorEnv struct {
	t                       *testing.T
	dir                     string
	repoURL                 string
	sentinel                string
	pgDSN, bouncerDSN       string
	do                      *httptest.Server
	httpsPort, healthPort   int
	statusPort, webhookPort int
	goodToken, goodDOToken  string
	// lbPort, when set, is the port the fake LB's health check asks
	// instead of the node's health port.
	lbPort                    atomic.Int64
	lbID                      string
	dropletID, otherDropletID int
}

// doctorNode is what a test varies in node.yaml.
type doctorNode struct {
	repoURL, branch, repoToken string
	sentinel, masterName       string
	doToken, dsn               string
	// webhookSecret is written to a file; unreadable makes the secret's
	// path one that cannot be read.
	webhookSecret string
	unreadable    bool
	// certValidFor is how long from now the node's certificate is valid.
	certValidFor time.Duration
}

func newDoctorEnv(t *testing.T) *doctorEnv {
	e := &doctorEnv{t: t, dir: t.TempDir(), goodToken: "ghp_good", goodDOToken: "dop_v1_good",
		lbID: "4de7ac8b-495b-4884-9a69-1050c6793cd6", dropletID: 3164444, otherDropletID: 3164445,
		httpsPort: testsvc.FreePort(t), healthPort: testsvc.FreePort(t), statusPort: testsvc.FreePort(t), webhookPort: testsvc.FreePort(t)}

	// The config repo: a valid drover.yaml with a site and a worker.
	root := t.TempDir()
	work := filepath.Join(e.dir, "work")
	apiPort := testsvc.FreePorts(t, 2)
	files := map[string]string{
		"drover.yaml": fmt.Sprintf(`version: 1
sites:
  - name: blog
    serverNames: [blog.test]
    source: sites/blog
workers:
  - name: api
    source: workers/api
    exec: [node, server.js]
    instances: 2
    port: %d
    health: {path: /healthz}
    routes: [{serverName: api.test, path: /}]
`, apiPort),
		"sites/blog/index.html":   "<h1>blog</h1>\n",
		"workers/api/server.js":   workerJS,
		"workers/api/version.txt": "1\n",
	}
	for name, content := range files {
		p := filepath.Join(work, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	gitCmd(t, work, "init", "-q", "-b", "main")
	gitCmd(t, work, "add", "-A")
	gitCmd(t, work, "commit", "-q", "-m", "platform")
	gitCmd(t, root, "clone", "-q", "--bare", work, filepath.Join(root, "origin.git"))
	backend := serveGit(t, root)
	auth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pw, ok := r.BasicAuth(); !ok || pw != e.goodToken {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		backend.Config.Handler.ServeHTTP(w, r)
	}))
	t.Cleanup(auth.Close)
	e.repoURL = auth.URL + "/origin.git"

	redis := testsvc.StartRedis(t)
	e.sentinel = testsvc.StartSentinel(t, "drover", redis.Addr, 1).Addr
	pg := testsvc.StartPostgres(t)
	e.pgDSN = pg.DSN
	e.bouncerDSN = testsvc.StartPgBouncer(t, pg.DSN, "transaction", 3).DSN("postgres")
	e.do = httptest.NewServer(http.HandlerFunc(e.fakeDOAPI))
	t.Cleanup(e.do.Close)
	return e
}

// writeCert writes a self-signed certificate for names, valid from a day
// ago until validFor from now, and its key, as nginx.tls would name them.
func writeCert(t *testing.T, dir string, validFor time.Duration, names ...string) (cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-24 * time.Hour), NotAfter: time.Now().Add(validFor)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for p, b := range map[string]*pem.Block{cert: {Type: "CERTIFICATE", Bytes: der}, key: {Type: "EC PRIVATE KEY", Bytes: kder}} {
		if err := os.WriteFile(p, pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return cert, key
}

func gitCmd(t *testing.T, dir string, args ...string) {
	t.Helper()
	runGit := append([]string{"-c", "user.name=test", "-c", "user.email=test@example.com", "-C", dir}, args...)
	if out, err := exec.Command("git", runGit...).CombinedOutput(); err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
}

// fakeDOAPI answers the two reads doctor makes, as DigitalOcean documents
// them (the metadata service's droplet ID, GET /v2/load_balancers/ID), and
// fails the test on anything else: doctor must change nothing.
func (e *doctorEnv) fakeDOAPI(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		e.t.Errorf("doctor sent %s %s: it must only read", r.Method, r.URL.Path)
	}
	if r.URL.Path == "/metadata/v1/id" {
		fmt.Fprint(w, e.dropletID)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if r.Header.Get("Authorization") != "Bearer "+e.goodDOToken {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"id":"unauthorized","message":"Unable to authenticate you"}`)
		return
	}
	if r.URL.Path != "/v2/load_balancers/"+e.lbID {
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"id":"not_found","message":"The resource you were accessing could not be found."}`)
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"load_balancer": map[string]any{
		"id": e.lbID, "name": "web-lb", "status": "active", "droplet_ids": []int{e.otherDropletID, e.dropletID},
		"health_check": map[string]any{"protocol": "http", "port": e.lbCheckPort(), "path": "/healthz",
			"check_interval_seconds": 10, "response_timeout_seconds": 5, "healthy_threshold": 5, "unhealthy_threshold": 3},
	}})
}

func (e *doctorEnv) lbCheckPort() int {
	if p := e.lbPort.Load(); p != 0 {
		return int(p)
	}
	return e.healthPort
}

func (e *doctorEnv) good() doctorNode {
	return doctorNode{repoURL: e.repoURL, branch: "main", repoToken: e.goodToken, sentinel: e.sentinel, masterName: "drover",
		doToken: e.goodDOToken, dsn: e.pgDSN, webhookSecret: "hook-secret", certValidFor: 90 * 24 * time.Hour}
}

// write makes a node.yaml of n in its own directory and returns its path.
func (e *doctorEnv) write(n doctorNode) string {
	e.t.Helper()
	dir := e.t.TempDir()
	secret := func(name, value string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(value+"\n"), 0o600); err != nil {
			e.t.Fatal(err)
		}
		return p
	}
	hook := secret("webhook.secret", n.webhookSecret)
	if n.unreadable {
		// Root reads any file whatever its mode: a directory is a path no
		// one can read as a file.
		hook = filepath.Join(dir, "webhook.secret.d")
		if err := os.Mkdir(hook, 0o700); err != nil {
			e.t.Fatal(err)
		}
	}
	cert, key := writeCert(e.t, dir, n.certValidFor, "blog.test", "api.test")
	yaml := fmt.Sprintf(`name: web1
stateDir: state
repo: {url: %q, branch: %s, tokenFile: %s}
nginx:
  binary: %s
  config: nginx/nginx.conf
  prefix: nginx
  pidFile: nginx/nginx.pid
  user: ""
  listen: 127.0.0.1
  httpsPort: %d
  healthPort: %d
  statusListen: 127.0.0.1:%d
  tls: {certificate: %s, key: %s}
supervisor: exec
cluster: {sentinels: [%s], masterName: %s}
lb:
  driver: digitalocean
  digitalocean: {loadBalancerID: %s, tokenFile: %s, apiURL: %s, metadataURL: %s}
webhook: {listen: 127.0.0.1:%d, secretFile: %s}
database: {dsnFile: %s}
`, n.repoURL, n.branch, secret("repo.token", n.repoToken), testsvc.Bin(e.t, "nginx"), e.httpsPort, e.healthPort, e.statusPort, cert, key,
		n.sentinel, n.masterName, e.lbID, secret("do.token", n.doToken), e.do.URL, e.do.URL,
		e.webhookPort, hook, secret("db.dsn", n.dsn))
	cfg := filepath.Join(dir, "node.yaml")
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return cfg
}

// doctor runs drover doctor on n and returns its exit code, its output and
// the failing checks' lines by check name.
func (e *doctorEnv) doctor(n doctorNode) (int, string, map[string]string) {
	e.t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	code := run(ctx, []string{"doctor", "--config", e.write(n)}, &out, &errb)
	if took := time.Since(start); took > 30*time.Second {
		e.t.Errorf("doctor took %s: its checks are bounded to a few seconds", took)
	}
	failed := map[string]string{}
	for _, line := range strings.Split(out.String(), "\n") {
		if rest, ok := strings.CutPrefix(line, "fail  "); ok {
			check, _, _ := strings.Cut(rest, ":")
			failed[check] = line
		}
	}
	return code, out.String() + errb.String(), failed
}

// TestDoctor: on a good node every check passes (exit 0); each way a real
// node goes wrong fails one line, naming what is wrong, and only that one.
func TestDoctor(t *testing.T) {
	e := newDoctorEnv(t)

	code, out, failed := e.doctor(e.good())
	if code != 0 || len(failed) > 0 {
		t.Fatalf("good node: exit %d, failed %v:\n%s", code, failed, out)
	}
	for _, check := range []string{"node.yaml", "nginx", "systemd", "repo", "branch", "drover.yaml", "redis", "sentinel", "clock", "lb", "lb health check", "database", "webhook", "tls", "disk", "ports"} {
		if !strings.Contains(out, "pass  "+check+": ") {
			t.Errorf("good node: no passing %s line:\n%s", check, out)
		}
	}
	t.Logf("good node:\n%s", out)

	for _, tc := range []struct {
		name   string
		change func(*doctorNode)
		check  string
		want   []string
	}{
		{"wrong repo token", func(n *doctorNode) { n.repoToken = "ghp_wrong" }, "repo", []string{"refused this node's credentials", "repo.token"}},
		{"unknown branch", func(n *doctorNode) { n.branch = "production" }, "branch", []string{`no branch "production"`}},
		{"redis down", func(n *doctorNode) { n.sentinel = "127.0.0.1:1" }, "sentinel", []string{"no Sentinel answers", "127.0.0.1:1"}},
		{"unknown sentinel master", func(n *doctorNode) { n.masterName = "mymaster" }, "sentinel", []string{`no Sentinel knows a master named "mymaster"`}},
		{"wrong DO token", func(n *doctorNode) { n.doToken = "dop_v1_wrong" }, "lb", []string{"refused the token", "do.token", "401"}},
		{"DSN through PgBouncer transaction mode", func(n *doctorNode) { n.dsn = e.bouncerDSN }, "database", []string{"transaction pooling", "pool_mode=session"}},
		{"unreadable webhook secret", func(n *doctorNode) { n.unreadable = true }, "webhook", []string{"webhook.secretFile", "is a directory"}},
		{"expired certificate", func(n *doctorNode) { n.certValidFor = -time.Hour }, "tls", []string{"cert.pem expired on"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := e.good()
			tc.change(&n)
			code, out, failed := e.doctor(n)
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			names := make([]string, 0, len(failed))
			for k := range failed {
				names = append(names, k)
			}
			if !slices.Equal(names, []string{tc.check}) {
				t.Fatalf("failed checks %v, want only %s:\n%s", names, tc.check, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(failed[tc.check], w) {
					t.Errorf("%s line %q does not say %q", tc.check, failed[tc.check], w)
				}
			}
			if !strings.Contains(out, "      fix: ") {
				t.Errorf("no fix line:\n%s", out)
			}
			t.Logf("%s", failed[tc.check])
		})
	}

	// The LB checks port 80 while this node's health endpoint is elsewhere:
	// the LB would never see it healthy, nor see it drained.
	e.lbPort.Store(80)
	code, out, failed = e.doctor(e.good())
	e.lbPort.Store(0)
	if want := fmt.Sprintf("fail  lb health check: the LB checks port 80; nginx serves the health endpoint on port %d", e.healthPort); code != 1 || len(failed) != 1 || failed["lb health check"] != want {
		t.Errorf("LB checking another port: exit %d, failed %v, want only %q:\n%s", code, failed, want, out)
	}

	// Without Sentinel: one Redis, or independent masters (Redlock), of
	// which a quorum must answer.
	r1, r2 := testsvc.StartRedis(t), testsvc.StartRedis(t)
	for _, tc := range []struct {
		redis string
		want  string
		code  int
	}{
		{"127.0.0.1:1", "fail  redis: 0 of 1 Redis servers answer (1 needed): 127.0.0.1:1:", 1},
		{r1.Addr + ", " + r2.Addr + ", 127.0.0.1:1", "warn  redis: 2 of 3 Redis servers answer: 127.0.0.1:1:", 0},
		{r1.Addr + ", 127.0.0.1:1, 127.0.0.1:2", "fail  redis: 1 of 3 Redis servers answer (2 needed)", 1},
	} {
		cfg := e.write(e.good())
		b, _ := os.ReadFile(cfg)
		b = bytes.Replace(b, []byte(fmt.Sprintf("cluster: {sentinels: [%s], masterName: drover}", e.sentinel)), []byte("cluster: {redis: ["+tc.redis+"]}"), 1)
		if err := os.WriteFile(cfg, b, 0o600); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		code := run(context.Background(), []string{"doctor", "--config", cfg}, &out, &out)
		if code != tc.code || !strings.Contains(out.String(), tc.want) {
			t.Errorf("redis [%s]: exit %d, want %d and %q:\n%s", tc.redis, code, tc.code, tc.want, out.String())
		}
	}
}
