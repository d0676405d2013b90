package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/drover-dev/drover/spec"
)

// cmdInit writes this node's node.yaml from flags, so that setting up a
// server is one command rather than an edit of the README's table. Secrets
// given as values are written to 0600 files beside node.yaml (node.yaml
// only names them: secrets are never inline). The file is parsed by the
// same spec.ParseNode the agent uses before anything is written; existing
// files are kept unless --force.
func cmdInit(_ context.Context, args []string, stdout, stderr io.Writer) error {
	return runInit(args, os.Stdin, stdout, stderr)
}

// initFlags are drover init's flags; each secret has a *File flag naming an
// existing file and a value flag whose value is written to a new file.
type initFlags struct {
	config, name, repo, branch, repoDir string
	tokenUser, sshKey, knownHosts       string
	clusterName, masterName             string
	redis, sentinels                    listFlag
	lbDriver, doLB                      string
	haproxySocket, haproxyBackend       string
	haproxyServer                       string
	lbInterval                          time.Duration
	lbUnhealthy, lbHealthy              int
	webhookListen, webhookServerName    string
	webhookProvider                     string
	tlsCert, tlsKey                     string
	force                               bool
	secrets                             []*secretFlag
}

// secretFlag is one secret: --X-file PATH names a file that holds it;
// --X VALUE (or --X - to read one line from stdin, which keeps it out of
// the shell history and ps) makes drover init write it to dir/fileName.
type secretFlag struct {
	flag, fileName string
	file, value    string
}

// listFlag collects a repeatable flag; each use may also be comma-separated.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

func runInit(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("init", stderr)
	var f initFlags
	fs.StringVar(&f.config, "config", spec.DefaultNodeFile, "node config file to write")
	fs.StringVar(&f.name, "name", "", "this node's name in the cluster (required)")
	fs.StringVar(&f.repo, "repo", "", "config repo URL: https://…, ssh://…, git@host:path (required)")
	fs.StringVar(&f.branch, "branch", "main", "the branch to follow")
	fs.StringVar(&f.repoDir, "repo-dir", "", "directory of the repo holding drover.yaml (default: the root)")
	fs.StringVar(&f.tokenUser, "repo-token-user", "", "user name sent with the HTTPS token (default x-access-token)")
	fs.StringVar(&f.sshKey, "ssh-key-file", "", "SSH private key for ssh URLs")
	fs.StringVar(&f.knownHosts, "known-hosts-file", "", "known_hosts for ssh URLs (required with --ssh-key-file)")
	fs.Var(&f.redis, "redis", "Redis host:port (repeat, or comma-separate, for independent Redlock masters)")
	fs.Var(&f.sentinels, "sentinel", "Redis Sentinel host:port (repeat or comma-separate; with --master-name)")
	fs.StringVar(&f.masterName, "master-name", "", "the master's name in Sentinel")
	fs.StringVar(&f.clusterName, "cluster-name", "", "separates clusters sharing one Redis (default \"default\")")
	fs.StringVar(&f.lbDriver, "lb-driver", "", "none, healthcheck, haproxy or digitalocean (default: digitalocean with --do-lb-id, haproxy with --haproxy-socket, else none)")
	fs.StringVar(&f.doLB, "do-lb-id", "", "DigitalOcean load balancer ID")
	fs.StringVar(&f.haproxySocket, "haproxy-socket", "", "HAProxy runtime API: socket path or host:port")
	fs.StringVar(&f.haproxyBackend, "haproxy-backend", "", "HAProxy backend of this node's server")
	fs.StringVar(&f.haproxyServer, "haproxy-server", "", "this node's server in the backend (default: --name)")
	fs.DurationVar(&f.lbInterval, "lb-check-interval", 0, "the LB's health-check interval (healthcheck driver; default 10s)")
	fs.IntVar(&f.lbUnhealthy, "lb-unhealthy-threshold", 0, "the LB's unhealthy threshold (default 3)")
	fs.IntVar(&f.lbHealthy, "lb-healthy-threshold", 0, "the LB's healthy threshold (default 2)")
	fs.StringVar(&f.webhookListen, "webhook-listen", "127.0.0.1:9095", "the push webhook receiver's address (with a webhook secret)")
	fs.StringVar(&f.webhookServerName, "webhook-server-name", "", "host name on which nginx routes /_drover/webhook to the receiver")
	fs.StringVar(&f.webhookProvider, "webhook-provider", "", "github, gitlab, gitea, forgejo or bitbucket (default: any)")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "this node's TLS certificate (overrides drover.yaml's)")
	fs.StringVar(&f.tlsKey, "tls-key", "", "this node's TLS key (with --tls-cert)")
	fs.BoolVar(&f.force, "force", false, "replace node.yaml and secret files that exist")
	secret := func(name, fileName, what string) *secretFlag {
		s := &secretFlag{flag: name, fileName: fileName}
		fs.StringVar(&s.file, name+"-file", "", "file holding "+what)
		fs.StringVar(&s.value, name, "", what+", written to a 0600 file "+fileName+" beside node.yaml (- reads it from stdin)")
		f.secrets = append(f.secrets, s)
		return s
	}
	token := secret("repo-token", "repo.token", "the HTTPS access token of the config repo")
	redisPW := secret("redis-password", "redis.password", "the Redis password")
	sentinelPW := secret("sentinel-password", "sentinel.password", "the Sentinels' password")
	doToken := secret("do-token", "do.token", "the DigitalOcean API token")
	hook := secret("webhook-secret", "webhook.secret", "the push webhook's shared secret")
	dsn := secret("dsn", "db.dsn", "the PostgreSQL URL that migrations run against")
	setUsage(fs, stderr, fmt.Sprintf("Usage: drover init [--config PATH] --name NAME --repo URL [--branch B] [flags]\n\n"+
		"Writes this node's node.yaml (default %s) from the flags and checks it as the agent would.\n"+
		"Secrets are never written into node.yaml: give a file that holds one (--dsn-file F), or its value\n"+
		"(--dsn -, read from stdin; or --dsn VALUE), which is written to a 0600 file beside node.yaml.\n"+
		"Existing files are kept (exit 1) unless --force. Then run drover doctor.\n\n", spec.DefaultNodeFile))
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	if f.name == "" || f.repo == "" {
		return usageError{"--name and --repo are required"}
	}
	dir, err := filepath.Abs(filepath.Dir(f.config))
	if err != nil {
		return err
	}
	stdinUsed := ""
	for _, s := range f.secrets {
		if set[s.flag] && set[s.flag+"-file"] {
			return usageError{fmt.Sprintf("give --%s or --%s-file, not both", s.flag, s.flag+"-file")}
		}
		if set[s.flag] && s.value == "-" {
			if stdinUsed != "" {
				return usageError{fmt.Sprintf("--%s - and --%s - both read stdin; give one as a file", stdinUsed, s.flag)}
			}
			stdinUsed = s.flag
			line, err := bufio.NewReader(stdin).ReadString('\n')
			if err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("read --%s from stdin: %w", s.flag, err)
			}
			s.value = strings.TrimRight(line, "\r\n")
		}
		if set[s.flag] && s.value == "" {
			return usageError{fmt.Sprintf("--%s is empty", s.flag)}
		}
	}
	// Where each secret lives: its own file, or one drover init writes.
	path := func(s *secretFlag) string {
		switch {
		case s.file != "":
			return s.file
		case s.value != "":
			return filepath.Join(dir, s.fileName)
		}
		return ""
	}
	// A secret that node.yaml would not name is a mistake, not a file to
	// leave lying around.
	for _, u := range []struct {
		s    *secretFlag
		used bool
		why  string
	}{
		{redisPW, len(f.redis) > 0 || len(f.sentinels) > 0, "--redis or --sentinel"},
		{sentinelPW, len(f.sentinels) > 0, "--sentinel"},
		{doToken, f.lbDriver == "" || f.lbDriver == "digitalocean", "the digitalocean driver"},
	} {
		if path(u.s) != "" && !u.used {
			return usageError{fmt.Sprintf("--%s is used only with %s", u.s.flag, u.why)}
		}
	}
	var files []spec.NewFile
	for _, s := range f.secrets {
		if s.value != "" {
			files = append(files, spec.NewFile{Path: path(s), Data: []byte(s.value + "\n")})
		} else if s.file != "" {
			if _, err := os.Stat(s.file); err != nil {
				fmt.Fprintf(stderr, "drover init: warning: --%s-file: %v (drover doctor will fail until it exists)\n", s.flag, err)
			}
		}
	}
	doc := initDoc(&f, path(token), path(redisPW), path(sentinelPW), path(doToken), path(hook), path(dsn))
	written, err := spec.WriteNode(f.config, doc, files, f.force)
	for _, p := range written {
		fmt.Fprintf(stdout, "wrote %s\n", p)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "next: drover doctor --config %s\n", f.config)
	return nil
}

// initDoc is node.yaml as the flags say it: only the fields they set
// (spec.MarshalNode leaves the zero ones out, so every other field keeps
// its default).
func initDoc(f *initFlags, token, redisPW, sentinelPW, doToken, hook, dsn string) *spec.Node {
	n := &spec.Node{Name: f.name, Repo: spec.Repo{
		URL: f.repo, Branch: f.branch, Dir: f.repoDir, TokenFile: token, TokenUser: f.tokenUser,
		SSHKeyFile: f.sshKey, KnownHostsFile: f.knownHosts,
	}}
	if f.tlsCert != "" || f.tlsKey != "" {
		n.Nginx.TLS = &spec.NodeTLS{Certificate: f.tlsCert, Key: f.tlsKey}
	}
	if len(f.redis) > 0 || len(f.sentinels) > 0 || f.masterName != "" {
		n.Cluster = &spec.Cluster{Name: f.clusterName, Redis: f.redis, SentinelAddrs: f.sentinels, MasterName: f.masterName,
			PasswordFile: redisPW, SentinelPasswordFile: sentinelPW}
	}
	if hook != "" || f.webhookServerName != "" {
		n.Webhook = &spec.Webhook{Listen: f.webhookListen, ServerName: f.webhookServerName, SecretFile: hook, Provider: f.webhookProvider}
	}
	driver := f.lbDriver
	if driver == "" {
		switch {
		case f.doLB != "":
			driver = "digitalocean"
		case f.haproxySocket != "":
			driver = "haproxy"
		}
	}
	if driver != "" && driver != "none" {
		n.LB.Driver = driver
		n.LB.HealthCheck = spec.LBHealthCheck{Interval: spec.Duration(f.lbInterval),
			UnhealthyThreshold: f.lbUnhealthy, HealthyThreshold: f.lbHealthy}
		if driver == "haproxy" || f.haproxySocket != "" {
			server := f.haproxyServer
			if server == "" {
				server = f.name
			}
			n.LB.HAProxy = spec.LBHAProxy{Socket: f.haproxySocket, Backend: f.haproxyBackend, Server: server}
		}
		if driver == "digitalocean" || f.doLB != "" || doToken != "" {
			n.LB.DigitalOcean = spec.LBDigitalOcean{LoadBalancerID: f.doLB, TokenFile: doToken}
		}
	}
	if dsn != "" {
		n.Database = &spec.Database{DSNFile: dsn}
	}
	return n
}
