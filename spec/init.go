package spec

import (
	"fmt"
	"path/filepath"
)

// Init is what drover init is told about a node: its flags, as the parts
// of node.yaml they fill. Build turns it into the node.yaml to write. The
// fields that come from a secret (the token and password files) are set
// by Build from the secrets, and its messages name drover init's flags,
// because that is what the operator typed.
type Init struct {
	Name    string
	Repo    Repo    // TokenFile: from RepoToken
	Cluster Cluster // PasswordFile, SentinelPasswordFile: from the secrets
	// LB.Driver may be empty: digitalocean with a load balancer ID,
	// haproxy with a socket, else none. LB.HAProxy.Server defaults to Name.
	LB      LB
	Webhook Webhook // SecretFile: from WebhookSecret
	TLS     NodeTLS

	RepoToken, RedisPassword, SentinelPassword, DOToken, WebhookSecret, DSN InitSecret
}

// InitSecret is one secret given to drover init: File names a file that
// holds it, or Value is written to a new 0600 file FileName beside
// node.yaml. node.yaml only ever names the file.
type InitSecret struct {
	Flag     string // --Flag VALUE or --Flag-file PATH
	FileName string
	What     string // for the flag's help
	File     string
	Value    string
}

// NewInit returns an Init whose secrets know their flags and file names.
func NewInit() *Init {
	in := &Init{}
	for _, s := range []struct {
		s                    *InitSecret
		flag, fileName, what string
	}{
		{&in.RepoToken, "repo-token", "repo.token", "the HTTPS access token of the config repo"},
		{&in.RedisPassword, "redis-password", "redis.password", "the Redis password"},
		{&in.SentinelPassword, "sentinel-password", "sentinel.password", "the Sentinels' password"},
		{&in.DOToken, "do-token", "do.token", "the DigitalOcean API token"},
		{&in.WebhookSecret, "webhook-secret", "webhook.secret", "the push webhook's shared secret"},
		{&in.DSN, "dsn", "db.dsn", "the PostgreSQL URL that migrations run against"},
	} {
		*s.s = InitSecret{Flag: s.flag, FileName: s.fileName, What: s.what}
	}
	return in
}

// Secrets returns the secrets, in flag order.
func (in *Init) Secrets() []*InitSecret {
	return []*InitSecret{&in.RepoToken, &in.RedisPassword, &in.SentinelPassword, &in.DOToken, &in.WebhookSecret, &in.DSN}
}

// Build returns node.yaml as in says, with only the fields it was given
// (MarshalNode leaves the zero ones out, so every other field keeps its
// default), and the secret files to write beside it in dir. A secret that
// node.yaml would not name is refused: it is a mistake, not a file to
// leave lying around.
func (in *Init) Build(dir string) (*Node, []NewFile, error) {
	path := func(s *InitSecret) string {
		switch {
		case s.File != "":
			return s.File
		case s.Value != "":
			return filepath.Join(dir, s.FileName)
		}
		return ""
	}
	lb := in.LB
	if lb.Driver == "" {
		switch {
		case lb.DigitalOcean.LoadBalancerID != "":
			lb.Driver = "digitalocean"
		case lb.HAProxy.Socket != "":
			lb.Driver = "haproxy"
		}
	}
	c, redis := in.Cluster, len(in.Cluster.Redis) > 0 || len(in.Cluster.SentinelAddrs) > 0
	for _, u := range []struct {
		s    *InitSecret
		used bool
		why  string
	}{
		{&in.RedisPassword, redis, "--redis or --sentinel"},
		{&in.SentinelPassword, len(c.SentinelAddrs) > 0, "--sentinel"},
		{&in.DOToken, lb.Driver == "digitalocean", "the digitalocean driver (--do-lb-id, or --lb-driver digitalocean)"},
	} {
		if path(u.s) != "" && !u.used {
			return nil, nil, fmt.Errorf("--%s is used only with %s", u.s.Flag, u.why)
		}
	}

	n := &Node{Name: in.Name, Repo: in.Repo}
	n.Repo.TokenFile = path(&in.RepoToken)
	if in.TLS != (NodeTLS{}) {
		tls := in.TLS
		n.Nginx.TLS = &tls
	}
	if redis || c.MasterName != "" {
		c.PasswordFile, c.SentinelPasswordFile = path(&in.RedisPassword), path(&in.SentinelPassword)
		n.Cluster = &c
	}
	if w := in.Webhook; in.WebhookSecret.present() || w.ServerName != "" {
		w.SecretFile = path(&in.WebhookSecret)
		n.Webhook = &w
	}
	if lb.Driver != "" && lb.Driver != "none" {
		n.LB.Driver, n.LB.HealthCheck = lb.Driver, lb.HealthCheck
		if lb.Driver == "haproxy" || lb.HAProxy.Socket != "" {
			n.LB.HAProxy = lb.HAProxy
			if n.LB.HAProxy.Server == "" {
				n.LB.HAProxy.Server = in.Name
			}
		}
		if lb.Driver == "digitalocean" || lb.DigitalOcean.LoadBalancerID != "" || in.DOToken.present() {
			n.LB.DigitalOcean = LBDigitalOcean{LoadBalancerID: lb.DigitalOcean.LoadBalancerID, TokenFile: path(&in.DOToken)}
		}
	}
	if in.DSN.present() {
		n.Database = &Database{DSNFile: path(&in.DSN)}
	}

	var files []NewFile
	for _, s := range in.Secrets() {
		if s.File == "" && s.Value != "" {
			files = append(files, NewFile{Path: path(s), Data: []byte(s.Value + "\n")})
		}
	}
	return n, files, nil
}

func (s *InitSecret) present() bool { return s.File != "" || s.Value != "" }
