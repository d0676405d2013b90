package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/drover-dev/drover/spec"
)

func initNodeFile(t *testing.T, stdin string, args ...string) (stdout string, err error) {
	t.Helper()
	var out, errb bytes.Buffer
	err = runInit(args, strings.NewReader(stdin), &out, &errb)
	return out.String() + errb.String(), err
}

// TestInitWritesAValidNodeConfig: the flags of a real cluster node become a
// node.yaml that the agent's own parser accepts, with each secret in a 0600
// file beside it (one of them read from stdin) and never in node.yaml.
func TestInitWritesAValidNodeConfig(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etc", "drover")
	cfg := filepath.Join(dir, "node.yaml")
	dsnFile := filepath.Join(t.TempDir(), "db.dsn")
	if err := os.WriteFile(dsnFile, []byte("postgres://drover@10.0.0.11/app\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := initNodeFile(t, "ghp_fromstdin\n",
		"--config", cfg, "--name", "web1", "--repo", "https://git.example.com/ops/platform.git", "--branch", "production",
		"--repo-token", "-",
		"--sentinel", "10.0.0.11:26379,10.0.0.12:26379", "--sentinel", "10.0.0.13:26379", "--master-name", "drover",
		"--redis-password", "s3cret-redis",
		"--do-lb-id", "4de7ac8b-495b-4884-9a69-1050c6793cd6", "--do-token", "dop_v1_abc",
		"--webhook-secret", "hook-secret", "--webhook-server-name", "deploy.example.com",
		"--dsn-file", dsnFile)
	if err != nil {
		t.Fatalf("init: %v\n%s", err, out)
	}
	n, err := spec.LoadNode(cfg)
	if err != nil {
		t.Fatalf("the written node.yaml does not parse: %v", err)
	}
	if n.Name != "web1" || n.Repo.Branch != "production" || n.Repo.URL != "https://git.example.com/ops/platform.git" {
		t.Errorf("repo: %+v", n.Repo)
	}
	if c := n.Cluster; c == nil || !slices.Equal(c.SentinelAddrs, []string{"10.0.0.11:26379", "10.0.0.12:26379", "10.0.0.13:26379"}) || c.MasterName != "drover" {
		t.Errorf("cluster: %+v", n.Cluster)
	}
	if n.LB.Driver != "digitalocean" || n.LB.DigitalOcean.LoadBalancerID != "4de7ac8b-495b-4884-9a69-1050c6793cd6" {
		t.Errorf("lb: %+v", n.LB)
	}
	if n.Webhook == nil || n.Webhook.Listen != "127.0.0.1:9095" || n.Webhook.ServerName != "deploy.example.com" {
		t.Errorf("webhook: %+v", n.Webhook)
	}
	if n.Database == nil || n.Database.DSNFile != dsnFile {
		t.Errorf("database: %+v, want the given file %s", n.Database, dsnFile)
	}
	secrets := map[string]string{
		n.Repo.TokenFile:                "ghp_fromstdin",
		n.Cluster.PasswordFile:          "s3cret-redis",
		n.LB.DigitalOcean.TokenFile:     "dop_v1_abc",
		n.Webhook.SecretFile:            "hook-secret",
		filepath.Join(dir, "node.yaml"): "",
	}
	yaml, _ := os.ReadFile(cfg)
	for file, want := range secrets {
		if filepath.Dir(file) != dir {
			t.Errorf("%s is not beside node.yaml", file)
		}
		fi, err := os.Stat(file)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", file, fi.Mode().Perm())
		}
		if want == "" {
			continue
		}
		if b, _ := os.ReadFile(file); strings.TrimSpace(string(b)) != want {
			t.Errorf("%s holds %q, want %q", file, b, want)
		}
		if bytes.Contains(yaml, []byte(want)) {
			t.Errorf("node.yaml holds the secret %q inline:\n%s", want, yaml)
		}
	}
}

// TestInitRefusesToOverwrite: an existing node.yaml or secret file is kept,
// byte for byte, unless --force; with it, both are replaced.
func TestInitRefusesToOverwrite(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "node.yaml")
	args := []string{"--config", cfg, "--name", "web1", "--repo", "https://git.example.com/ops/platform.git", "--webhook-secret", "first"}
	if out, err := initNodeFile(t, "", args...); err != nil {
		t.Fatalf("init: %v\n%s", err, out)
	}
	before, _ := os.ReadFile(cfg)
	_, err := initNodeFile(t, "", "--config", cfg, "--name", "web2", "--repo", "https://git.example.com/ops/platform.git", "--webhook-secret", "second")
	if err == nil || !strings.Contains(err.Error(), "exists") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("second init without --force: %v, want a refusal naming --force", err)
	}
	after, _ := os.ReadFile(cfg)
	secret, _ := os.ReadFile(filepath.Join(dir, "webhook.secret"))
	if !bytes.Equal(before, after) || strings.TrimSpace(string(secret)) != "first" {
		t.Fatalf("a refused init changed files: node.yaml %q → %q, secret %q", before, after, secret)
	}
	if out, err := initNodeFile(t, "", append(args[:len(args)-1:len(args)-1], "second", "--force")...); err != nil {
		t.Fatalf("init --force: %v\n%s", err, out)
	}
	secret, _ = os.ReadFile(filepath.Join(dir, "webhook.secret"))
	if strings.TrimSpace(string(secret)) != "second" {
		t.Errorf("--force kept the old secret %q", secret)
	}
}

// TestInitRefusesBadFlagsWritingNothing: flags that make an invalid node.yaml
// are refused with the field that is wrong, and no file appears.
func TestInitRefusesBadFlagsWritingNothing(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--sentinel", "10.0.0.11:26379"}, "cluster.masterName"},
		{[]string{"--redis", "10.0.0.11:6379", "--sentinel", "10.0.0.12:26379", "--master-name", "m"}, "cluster.sentinels"},
		{[]string{"--lb-driver", "haproxy", "--haproxy-socket", "/run/haproxy/admin.sock"}, "lb.haproxy.backend"},
		{[]string{"--lb-driver", "f5"}, "lb.driver"},
		{[]string{"--repo", "ftp://example.com/x.git"}, "repo.url"},
	} {
		dir := t.TempDir()
		args := append([]string{"--config", filepath.Join(dir, "node.yaml"), "--name", "web1", "--repo", "https://git.example.com/x.git"}, tc.args...)
		_, err := initNodeFile(t, "", args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "nothing written") {
			t.Errorf("%v: %v, want an error naming %s", tc.args, err, tc.want)
		}
		if ents, _ := os.ReadDir(dir); len(ents) > 0 {
			t.Errorf("%v: a refused init left %v", tc.args, ents)
		}
	}
	dir := t.TempDir()
	if _, err := initNodeFile(t, "", "--config", filepath.Join(dir, "node.yaml"), "--name", "web1", "--repo", "https://git.example.com/x.git",
		"--redis-password", "pw"); err == nil || !strings.Contains(err.Error(), "--redis-password is used only with --redis or --sentinel") {
		t.Errorf("a Redis password without Redis: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) > 0 {
		t.Errorf("a refused init left %v", ents)
	}
	if _, err := initNodeFile(t, "", "--name", "web1"); err == nil || !strings.Contains(err.Error(), "--repo") {
		t.Errorf("init without --repo: %v", err)
	}
}
