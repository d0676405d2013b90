package spec

import (
	"reflect"
	"strings"
	"testing"
)

// TestPolicyRefusals: each thing a push to the config repo must not be able
// to ask of a node is refused with the field, the line and why; and what
// stays inside a worker's own directories is accepted.
func TestPolicyRefusals(t *testing.T) {
	worker := func(extra string) string {
		return base + extra
	}
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"root", worker("    user: root\n"), []string{"drover.yaml:13:11: workers[0].user: workers never run as root"}},
		{"uid 0", worker("    user: \"0\"\n"), []string{"drover.yaml:13:11: workers[0].user: \"0\" is not a user name"}},
		{"data dir at /", worker("    dataDirs: [/]\n"), []string{"drover.yaml:13:16: workers[0].dataDirs[0]: \"/\" is outside /var/lib/drover-data/api"}},
		{"data dir of postgres", worker("    dataDirs:\n      - /var/lib/drover-data/api/cache\n      - /var/lib/postgresql\n"),
			[]string{"drover.yaml:15:9: workers[0].dataDirs[1]: \"/var/lib/postgresql\" is outside"}},
		{"data dir of drover", worker("    dataDirs: [/var/lib/drover]\n"), []string{"workers[0].dataDirs[0]: \"/var/lib/drover\" is outside"}},
		{"data dir of another worker", worker("    dataDirs: [/var/lib/drover-data/admin/x]\n"), []string{"workers[0].dataDirs[0]", "is outside /var/lib/drover-data/api"}},
		{"data dir prefix trick", worker("    dataDirs: [/var/lib/drover-data/api-evil]\n"), []string{"workers[0].dataDirs[0]", "is outside"}},
		{"data dir dotdot", worker("    dataDirs: [/var/lib/drover-data/api/../admin]\n"), []string{"workers[0].dataDirs[0]", "not a clean path"}},
		{"environment file node.yaml", worker("    environmentFile: /etc/drover/node.yaml\n"),
			[]string{"drover.yaml:13:22: workers[0].environmentFile: \"/etc/drover/node.yaml\" is outside /etc/drover/env/api/"}},
		{"environment file of another worker", worker("    environmentFile: /etc/drover/env/admin/secrets\n"), []string{"workers[0].environmentFile", "is outside"}},
		{"file artifact", strings.Replace(base, "source: sites/blog", "artifact: {url: 'file:///etc/drover/webhook.secret', sha256: "+strings.Repeat("a", 64)+"}", 1),
			[]string{"drover.yaml:5:21: sites[0].artifact.url: \"file:///etc/drover/webhook.secret\" is not an https:// URL"}},
		{"http artifact", strings.Replace(base, "source: sites/blog", "artifact: {url: 'http://ci.example.com/a.tgz', sha256: "+strings.Repeat("a", 64)+"}", 1),
			[]string{"sites[0].artifact.url", "is not an https:// URL"}},
		{"LD_PRELOAD", worker("    env: {LD_PRELOAD: /tmp/evil.so}\n"), []string{"drover.yaml:13:23: workers[0].env[\"LD_PRELOAD\"]: LD_PRELOAD is not allowed"}},
		{"LD_LIBRARY_PATH", worker("    env: {LD_LIBRARY_PATH: /tmp}\n"), []string{"workers[0].env[\"LD_LIBRARY_PATH\"]: LD_LIBRARY_PATH is not allowed"}},
		{"LD_AUDIT", worker("    env: {LD_AUDIT: /tmp/a.so}\n"), []string{"LD_AUDIT is not allowed"}},
		{"GCONV_PATH", worker("    env: {GCONV_PATH: /tmp}\n"), []string{"GCONV_PATH is not allowed"}},
		{"NODE_OPTIONS require", worker("    env: {NODE_OPTIONS: '--max-old-space-size=256 --require /tmp/x.js'}\n"), []string{"NODE_OPTIONS is not allowed"}},
		{"NODE_OPTIONS -r", worker("    env: {NODE_OPTIONS: '-r /tmp/x.js'}\n"), []string{"NODE_OPTIONS is not allowed"}},
		{"NODE_OPTIONS inspect", worker("    env: {NODE_OPTIONS: '--inspect=0.0.0.0:9229'}\n"), []string{"NODE_OPTIONS is not allowed"}},
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
		})
	}
}

func TestPolicyAllows(t *testing.T) {
	y := base + "    user: api\n" +
		"    dataDirs: [/var/lib/drover-data/api, /var/lib/drover-data/api/uploads]\n" +
		"    environmentFile: /etc/drover/env/api/secrets.env\n" +
		"    env: {NODE_OPTIONS: --max-old-space-size=256, NODE_ENV: production, XLD_X: ok}\n"
	y = strings.Replace(y, "source: sites/blog", "artifact: {url: 'https://ci.example.com/a.tgz', sha256: "+strings.Repeat("a", 64)+"}", 1)
	if _, err := Parse("drover.yaml", []byte(y)); err != nil {
		t.Fatalf("a worker inside its own directories was refused:\n%v", err)
	}
}

// TestNodePolicy: a node's policy section widens what the default refuses
// (root, a data dir and an environment file under its own prefixes, http
// artifacts) and narrows it (its own forbidden env keys), while the
// built-in refusals stay; the same spec is refused by Parse (the default).
func TestNodePolicy(t *testing.T) {
	n, err := ParseNode("node.yaml", []byte(`repo: {url: /srv/repo}
policy:
  allowRoot: true
  dataDirs: [/var/lib/drover-data, /srv/data]
  environmentFiles: [/etc/drover/env, /run/secrets]
  artifactSchemes: [https, http]
  forbiddenEnv: [AWS_*, DATABASE_URL]
`), "/")
	if err != nil {
		t.Fatal(err)
	}
	wide := base + "    user: root\n" +
		"    dataDirs: [/var/lib/drover-data/api, /srv/data/api/uploads]\n" +
		"    environmentFile: /run/secrets/api/env\n"
	wide = strings.Replace(wide, "source: sites/blog", "artifact: {url: 'http://ci.internal/a.tgz', sha256: "+strings.Repeat("a", 64)+"}", 1)
	if _, err := ParseFor("drover.yaml", []byte(wide), n.Policy); err != nil {
		t.Fatalf("refused by the node policy that allows it:\n%v", err)
	}
	_, err = Parse("drover.yaml", []byte(wide))
	for _, w := range []string{
		"drover.yaml:5:21: sites[0].artifact.url: \"http://ci.internal/a.tgz\" is not an https:// URL",
		"drover.yaml:13:11: workers[0].user: workers never run as root",
		"drover.yaml:14:42: workers[0].dataDirs[1]: \"/srv/data/api/uploads\" is outside /var/lib/drover-data/api",
		"drover.yaml:15:22: workers[0].environmentFile: \"/run/secrets/api/env\" is outside /etc/drover/env/api/",
	} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("the default policy did not refuse it with %q:\n%v", w, err)
		}
	}

	for _, c := range []struct{ name, yaml, want string }{
		{"file artifact", strings.Replace(base, "source: sites/blog", "artifact: {url: 'file:///etc/drover/node.yaml', sha256: "+strings.Repeat("a", 64)+"}", 1),
			"drover.yaml:5:21: sites[0].artifact.url: \"file:///etc/drover/node.yaml\" is not an https:// or http:// URL"},
		{"LD_PRELOAD stays refused", base + "    env: {LD_PRELOAD: /tmp/evil.so}\n", "drover.yaml:13:23: workers[0].env[\"LD_PRELOAD\"]: LD_PRELOAD is not allowed"},
		{"node's prefix", base + "    env: {AWS_SECRET_ACCESS_KEY: x}\n", "drover.yaml:13:34: workers[0].env[\"AWS_SECRET_ACCESS_KEY\"]: AWS_SECRET_ACCESS_KEY is not allowed on this node (node.yaml policy.forbiddenEnv: AWS_*)"},
		{"node's key", base + "    env: {DATABASE_URL: x}\n", "workers[0].env[\"DATABASE_URL\"]: DATABASE_URL is not allowed on this node"},
		{"another worker's data", base + "    dataDirs: [/srv/data/admin]\n", "workers[0].dataDirs[0]: \"/srv/data/admin\" is outside /var/lib/drover-data/api and /srv/data/api"},
		{"another worker's env", base + "    environmentFile: /run/secrets/admin/env\n", "workers[0].environmentFile: \"/run/secrets/admin/env\" is outside /etc/drover/env/api/ and /run/secrets/api/"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := ParseFor("drover.yaml", []byte(c.yaml), n.Policy); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v, want %q", err, c.want)
			}
		})
	}
	if _, err := ParseFor("drover.yaml", []byte(base+"    env: {AWS: x, NODE_ENV: production}\n"), n.Policy); err != nil {
		t.Errorf("a key the node does not forbid was refused: %v", err)
	}

	// A node may allow nothing at all of a kind.
	none, err := ParseNode("node.yaml", []byte("repo: {url: /srv/repo}\npolicy: {dataDirs: [], environmentFiles: [], artifactSchemes: []}\n"), "/")
	if err != nil {
		t.Fatal(err)
	}
	y := strings.Replace(base, "source: sites/blog", "artifact: {url: 'https://ci.example.com/a.tgz', sha256: "+strings.Repeat("a", 64)+"}", 1) +
		"    dataDirs: [/var/lib/drover-data/api]\n    environmentFile: /etc/drover/env/api/env\n"
	_, err = ParseFor("drover.yaml", []byte(y), none.Policy)
	for _, w := range []string{
		"sites[0].artifact.url: this node fetches no artifacts (node.yaml policy.artifactSchemes is empty)",
		"workers[0].dataDirs[0]: this node allows no data dirs",
		"workers[0].environmentFile: this node allows no environment files",
	} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("lacks %q:\n%v", w, err)
		}
	}
}

// TestDefaultPolicy: a node.yaml without a policy section has today's fixed
// policy, and ParseFor with it is Parse.
func TestDefaultPolicy(t *testing.T) {
	n, err := ParseNode("node.yaml", []byte("repo: {url: /srv/repo}\n"), "/")
	if err != nil {
		t.Fatal(err)
	}
	want := Policy{DataDirs: []string{"/var/lib/drover-data"}, EnvironmentFiles: []string{"/etc/drover/env"}, ArtifactSchemes: []string{"https"}}
	if !reflect.DeepEqual(n.Policy, want) || !reflect.DeepEqual(DefaultPolicy(), want) {
		t.Fatalf("default policy %+v (DefaultPolicy %+v), want %+v", n.Policy, DefaultPolicy(), want)
	}
	y := base + "    user: root\n"
	_, e1 := Parse("drover.yaml", []byte(y))
	_, e2 := ParseFor("drover.yaml", []byte(y), n.Policy)
	if e1 == nil || e2 == nil || e1.Error() != e2.Error() {
		t.Fatalf("Parse and ParseFor(default) differ:\n%v\n%v", e1, e2)
	}
}

// TestPolicySectionRefusals: every bad field of node.yaml's policy section
// at once, each with its line: a prefix that is not absolute and clean, one
// that would hand a worker the state dir or /etc/drover, prefixes that
// overlap, an unknown scheme, a bad env key.
func TestPolicySectionRefusals(t *testing.T) {
	_, err := ParseNode("node.yaml", []byte(`repo: {url: /srv/repo}
stateDir: /var/lib/drover
policy:
  allowRoot: maybe
  dataDirs:
    - data
    - /srv/data/../x
    - /
    - /var/lib
    - /var/lib/drover/releases
    - /etc/drover/data
    - /srv/a
    - /srv/a/b
  environmentFiles: [/etc, /etc/drover, /etc/drover/env]
  artifactSchemes: [https, file, ftp]
  forbiddenEnv: [AWS_*, "1X", "*", "A*B"]
`), "/")
	want := []string{
		`node.yaml:4:14: policy.allowRoot: "maybe" is not true or false`,
		`node.yaml:6:7: policy.dataDirs[0]: "data" must be an absolute path`,
		`node.yaml:7:7: policy.dataDirs[1]: "/srv/data/../x" is not a clean path`,
		`node.yaml:8:7: policy.dataDirs[2]: / is not a prefix`,
		`node.yaml:9:7: policy.dataDirs[3]: "/var/lib" holds /var/lib/drover: a worker named after a directory in it would get that directory for its data`,
		`node.yaml:10:7: policy.dataDirs[4]: "/var/lib/drover/releases" is inside the state dir /var/lib/drover`,
		`node.yaml:11:7: policy.dataDirs[5]: "/etc/drover/data" is inside /etc/drover, which holds node.yaml`,
		`node.yaml:13:7: policy.dataDirs[7]: "/srv/a/b" overlaps policy.dataDirs[6] "/srv/a"`,
		`node.yaml:14:22: policy.environmentFiles[0]: "/etc" holds /etc/drover`,
		`node.yaml:14:28: policy.environmentFiles[1]: "/etc/drover" holds /etc/drover`,
		`node.yaml:15:28: policy.artifactSchemes[1]: "file" is not a scheme drover fetches artifacts over (https, http)`,
		`node.yaml:15:34: policy.artifactSchemes[2]: "ftp" is not a scheme`,
		`node.yaml:16:25: policy.forbiddenEnv[1]: "1X" is not an environment variable name`,
		`node.yaml:16:31: policy.forbiddenEnv[2]: "*" is not an environment variable name`,
		`node.yaml:16:36: policy.forbiddenEnv[3]: "A*B" is not`,
	}
	if err == nil {
		t.Fatal("accepted")
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("lacks %q", w)
		}
	}
	if t.Failed() {
		t.Logf("got:\n%v", err)
	}
	if strings.Contains(err.Error(), "environmentFiles[2]") {
		t.Errorf("/etc/drover/env (the default) was refused:\n%v", err)
	}
}

// TestParseRelease: a release's spec, read back by the node that prepared
// it, is not held to the node's policy again (a policy tightened since must
// not stop the node re-applying or rolling back to it), but every other
// rule holds, the built-in forbidden env keys and https/http-only
// artifacts included.
func TestParseRelease(t *testing.T) {
	y := base + "    user: root\n" +
		"    dataDirs: [/srv/data/api]\n" +
		"    environmentFile: /run/secrets/api/env\n" +
		"    env: {AWS_SECRET_ACCESS_KEY: x}\n"
	y = strings.Replace(y, "source: sites/blog", "artifact: {url: 'http://ci.internal/a.tgz', sha256: "+strings.Repeat("a", 64)+"}", 1)
	if _, err := ParseRelease("drover.yaml", []byte(y)); err != nil {
		t.Fatalf("a release let in by a wider policy was refused:\n%v", err)
	}
	if _, err := ParseFor("drover.yaml", []byte(y), Policy{ForbiddenEnv: []string{"AWS_*"}}); err == nil {
		t.Fatal("ParseFor accepted it with a narrow policy")
	}
	for _, c := range []struct{ name, yaml, want string }{
		{"LD_PRELOAD", base + "    env: {LD_PRELOAD: /tmp/evil.so}\n", `workers[0].env["LD_PRELOAD"]: LD_PRELOAD is not allowed`},
		{"file artifact", strings.Replace(base, "source: sites/blog", "artifact: {url: 'file:///etc/drover/node.yaml', sha256: "+strings.Repeat("a", 64)+"}", 1), `sites[0].artifact.url: "file:///etc/drover/node.yaml" is not an https:// or http:// URL`},
		{"memoryMax", base + "    memoryMax: lots\n", `workers[0].memoryMax: "lots" is not a size`},
		{"relative data dir", base + "    dataDirs: [data]\n", `workers[0].dataDirs[0]: "data" must be an absolute path`},
	} {
		if _, err := ParseRelease("drover.yaml", []byte(c.yaml)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.name, err, c.want)
		}
	}
}
