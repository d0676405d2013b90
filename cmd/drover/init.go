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
// server is one command rather than an edit of the README's table. What
// the flags make is spec.Init's; here are the flags, and the secrets read
// from stdin.
func cmdInit(_ context.Context, args []string, stdout, stderr io.Writer) error {
	return runInit(args, os.Stdin, stdout, stderr)
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
	in := spec.NewInit()
	config := fs.String("config", spec.DefaultNodeFile, "node config file to write")
	force := fs.Bool("force", false, "replace node.yaml and secret files that exist")
	fs.StringVar(&in.Name, "name", "", "this node's name in the cluster (required)")
	fs.StringVar(&in.Repo.URL, "repo", "", "config repo URL: https://…, ssh://…, git@host:path (required)")
	fs.StringVar(&in.Repo.Branch, "branch", "main", "the branch to follow")
	fs.StringVar(&in.Repo.Dir, "repo-dir", "", "directory of the repo holding drover.yaml (default: the root)")
	fs.StringVar(&in.Repo.TokenUser, "repo-token-user", "", "user name sent with the HTTPS token (default x-access-token)")
	fs.StringVar(&in.Repo.SSHKeyFile, "ssh-key-file", "", "SSH private key for ssh URLs")
	fs.StringVar(&in.Repo.KnownHostsFile, "known-hosts-file", "", "known_hosts for ssh URLs (required with --ssh-key-file)")
	fs.Var((*listFlag)(&in.Cluster.Redis), "redis", "Redis host:port (repeat, or comma-separate, for independent Redlock masters)")
	fs.Var((*listFlag)(&in.Cluster.SentinelAddrs), "sentinel", "Redis Sentinel host:port (repeat or comma-separate; with --master-name)")
	fs.StringVar(&in.Cluster.MasterName, "master-name", "", "the master's name in Sentinel")
	fs.StringVar(&in.Cluster.Name, "cluster-name", "", "separates clusters sharing one Redis (default \"default\")")
	fs.StringVar(&in.LB.Driver, "lb-driver", "", "none, healthcheck, haproxy or digitalocean (default: digitalocean with --do-lb-id, haproxy with --haproxy-socket, else none)")
	fs.StringVar(&in.LB.DigitalOcean.LoadBalancerID, "do-lb-id", "", "DigitalOcean load balancer ID")
	fs.StringVar(&in.LB.HAProxy.Socket, "haproxy-socket", "", "HAProxy runtime API: socket path or host:port")
	fs.StringVar(&in.LB.HAProxy.Backend, "haproxy-backend", "", "HAProxy backend of this node's server")
	fs.StringVar(&in.LB.HAProxy.Server, "haproxy-server", "", "this node's server in the backend (default: --name)")
	fs.DurationVar((*time.Duration)(&in.LB.HealthCheck.Interval), "lb-check-interval", 0, "the LB's health-check interval (healthcheck driver; default 10s)")
	fs.IntVar(&in.LB.HealthCheck.UnhealthyThreshold, "lb-unhealthy-threshold", 0, "the LB's unhealthy threshold (default 3)")
	fs.IntVar(&in.LB.HealthCheck.HealthyThreshold, "lb-healthy-threshold", 0, "the LB's healthy threshold (default 2)")
	fs.StringVar(&in.Webhook.Listen, "webhook-listen", "127.0.0.1:9095", "the push webhook receiver's address (with a webhook secret)")
	fs.StringVar(&in.Webhook.ServerName, "webhook-server-name", "", "host name on which nginx routes /_drover/webhook to the receiver")
	fs.StringVar(&in.Webhook.Provider, "webhook-provider", "", "github, gitlab, gitea, forgejo or bitbucket (default: any)")
	fs.StringVar(&in.TLS.Certificate, "tls-cert", "", "this node's TLS certificate (overrides drover.yaml's)")
	fs.StringVar(&in.TLS.Key, "tls-key", "", "this node's TLS key (with --tls-cert)")
	for _, s := range in.Secrets() {
		fs.StringVar(&s.File, s.Flag+"-file", "", "file holding "+s.What)
		fs.StringVar(&s.Value, s.Flag, "", s.What+", written to a 0600 file "+s.FileName+" beside node.yaml (- reads it from stdin)")
	}
	setUsage(fs, stderr, fmt.Sprintf("Usage: drover init [--config PATH] --name NAME --repo URL [--branch B] [flags]\n\n"+
		"Writes this node's node.yaml (default %s) from the flags and checks it as the agent would.\n"+
		"Secrets are never written into node.yaml: give a file that holds one (--dsn-file F), or its value\n"+
		"(--dsn -, read from stdin; or --dsn VALUE), which is written to a 0600 file beside node.yaml.\n"+
		"Existing files are kept (exit 1) unless --force. Then run drover doctor.\n\n", spec.DefaultNodeFile))
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if in.Name == "" || in.Repo.URL == "" {
		return usageError{"--name and --repo are required"}
	}
	if err := readSecretFlags(fs, in.Secrets(), stdin); err != nil {
		return err
	}
	dir, err := filepath.Abs(filepath.Dir(*config))
	if err != nil {
		return err
	}
	doc, files, err := in.Build(dir)
	if err != nil {
		return usageError{err.Error()}
	}
	for _, s := range in.Secrets() {
		if s.File == "" {
			continue
		}
		if _, err := os.Stat(s.File); err != nil {
			fmt.Fprintf(stderr, "drover init: warning: --%s-file: %v (drover doctor will fail until it exists)\n", s.Flag, err)
		}
	}
	written, err := spec.WriteNode(*config, doc, files, *force)
	for _, p := range written {
		fmt.Fprintf(stdout, "wrote %s\n", p)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "next: drover doctor --config %s\n", *config)
	return nil
}

// readSecretFlags checks that each secret was given one way, and reads
// the one given as "-" from stdin (which keeps it out of the shell history
// and ps; only one can be).
func readSecretFlags(fs *flag.FlagSet, secrets []*spec.InitSecret, stdin io.Reader) error {
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	stdinUsed := ""
	for _, s := range secrets {
		switch {
		case !set[s.Flag]:
			continue
		case set[s.Flag+"-file"]:
			return usageError{fmt.Sprintf("give --%s or --%s-file, not both", s.Flag, s.Flag)}
		case s.Value == "-" && stdinUsed != "":
			return usageError{fmt.Sprintf("--%s - and --%s - both read stdin; give one as a file", stdinUsed, s.Flag)}
		case s.Value == "-":
			stdinUsed = s.Flag
			line, err := bufio.NewReader(stdin).ReadString('\n')
			if err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("read --%s from stdin: %w", s.Flag, err)
			}
			s.Value = strings.TrimRight(line, "\r\n")
		}
		if s.Value == "" {
			return usageError{fmt.Sprintf("--%s is empty", s.Flag)}
		}
	}
	return nil
}
