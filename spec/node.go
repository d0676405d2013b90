package spec

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DefaultNodeFile is where the agent reads its node config on a server.
const DefaultNodeFile = "/etc/drover/node.yaml"

// Node is node.yaml: one node's own settings. Secrets are never inline; each
// *File field names a node-local file holding the secret.
//
// Relative paths are relative to the directory of node.yaml, so a node config
// kept beside a checkout runs without root.
type Node struct {
	// Name identifies the node in the cluster; default: the host name.
	Name string `yaml:"name" json:"name"`
	// StateDir holds the git repo, the releases, the journal.
	StateDir string `yaml:"stateDir" json:"stateDir"`
	// KeepReleases is how many releases stay on disk, the live one included.
	KeepReleases int       `yaml:"keepReleases" json:"keepReleases"`
	Repo         Repo      `yaml:"repo" json:"repo"`
	Nginx        NodeNginx `yaml:"nginx" json:"nginx"`
	// Supervisor runs the workers: "systemd" on servers, "exec" (child
	// processes of the agent) on development machines; empty picks systemd
	// when it is running, else exec.
	Supervisor string  `yaml:"supervisor" json:"supervisor,omitempty"`
	Systemd    Systemd `yaml:"systemd" json:"systemd"`
	// Cluster is how the nodes coordinate; absent for a single node.
	Cluster *Cluster `yaml:"cluster" json:"cluster,omitempty"`
	// Webhook receives pushes and wakes every node; absent: polling only.
	Webhook *Webhook `yaml:"webhook" json:"webhook,omitempty"`
	// LB is how this node leaves and re-joins the load balancer.
	LB LB `yaml:"lb" json:"lb"`
	// Database is where migrations run; absent: a spec with migrations is
	// refused on this node.
	Database *Database `yaml:"database" json:"database,omitempty"`
	Log      Log       `yaml:"log" json:"log"`
}

// Cluster is the Redis the nodes coordinate through: one server, several
// independent masters (Redlock), or Sentinel.
type Cluster struct {
	// Name separates clusters sharing one Redis (default "default").
	Name string `yaml:"name" json:"name"`
	// Redis lists one address, or several independent masters.
	Redis         []string `yaml:"redis" json:"redis,omitempty"`
	SentinelAddrs []string `yaml:"sentinels" json:"sentinels,omitempty"`
	MasterName    string   `yaml:"masterName" json:"masterName,omitempty"`
	Username      string   `yaml:"username" json:"username,omitempty"`
	PasswordFile  string   `yaml:"passwordFile" json:"passwordFile,omitempty"`
	// SentinelPasswordFile authenticates to the sentinels themselves.
	SentinelPasswordFile string `yaml:"sentinelPasswordFile" json:"sentinelPasswordFile,omitempty"`
	TLS                  bool   `yaml:"tls" json:"tls,omitempty"`
	CAFile               string `yaml:"caFile" json:"caFile,omitempty"`
	DB                   int    `yaml:"db" json:"db,omitempty"`
	// LockExpiry is how long the rollout lock outlives a dead holder.
	LockExpiry Duration `yaml:"lockExpiry" json:"lockExpiry"`
	// HeartbeatTTL is how long a silent node still counts as in service.
	HeartbeatTTL Duration `yaml:"heartbeatTTL" json:"heartbeatTTL"`
}

// Webhook is the push receiver. nginx routes Path on ServerName to Listen.
type Webhook struct {
	Listen     string `yaml:"listen" json:"listen"`
	Path       string `yaml:"path" json:"path"`
	ServerName string `yaml:"serverName" json:"serverName"`
	SecretFile string `yaml:"secretFile" json:"secretFile"`
	// Provider is github, gitlab, gitea, forgejo or bitbucket; empty
	// accepts any of them by its headers.
	Provider string `yaml:"provider" json:"provider,omitempty"`
}

// LB is the load balancer drain driver and its settings.
type LB struct {
	// Driver is none, healthcheck, haproxy or digitalocean.
	Driver      string        `yaml:"driver" json:"driver"`
	HealthCheck LBHealthCheck `yaml:"healthcheck" json:"healthcheck"`
	HAProxy     LBHAProxy     `yaml:"haproxy" json:"haproxy"`
	// DigitalOcean's waits follow the LB's own health-check settings.
	DigitalOcean LBDigitalOcean `yaml:"digitalocean" json:"digitalocean"`
}

// LBHealthCheck is the LB's health-check settings, for any load balancer
// that polls this node's health endpoint.
type LBHealthCheck struct {
	Interval           Duration `yaml:"interval" json:"interval"`
	UnhealthyThreshold int      `yaml:"unhealthyThreshold" json:"unhealthyThreshold"`
	HealthyThreshold   int      `yaml:"healthyThreshold" json:"healthyThreshold"`
}

// LBHAProxy names HAProxy's runtime API and this node's server in it.
type LBHAProxy struct {
	Socket  string `yaml:"socket" json:"socket,omitempty"`
	Backend string `yaml:"backend" json:"backend,omitempty"`
	Server  string `yaml:"server" json:"server,omitempty"`
}

// LBDigitalOcean is a DigitalOcean load balancer.
type LBDigitalOcean struct {
	LoadBalancerID string `yaml:"loadBalancerID" json:"loadBalancerID,omitempty"`
	TokenFile      string `yaml:"tokenFile" json:"tokenFile,omitempty"`
	// APIURL and MetadataURL override DigitalOcean's addresses (tests).
	APIURL      string `yaml:"apiURL" json:"apiURL,omitempty"`
	MetadataURL string `yaml:"metadataURL" json:"metadataURL,omitempty"`
}

// Database is the PostgreSQL that migrations run against. The DSN is a
// secret, read from a file; it must reach PostgreSQL directly (not through
// PgBouncer's transaction pooling).
type Database struct {
	DSNFile string `yaml:"dsnFile" json:"dsnFile"`
}

// Systemd says how to reach this node's systemd.
type Systemd struct {
	// Socket is systemd's private D-Bus socket.
	Socket string `yaml:"socket" json:"socket"`
	// UnitsDir is where drover writes its unit files.
	UnitsDir string `yaml:"unitsDir" json:"unitsDir"`
}

// Repo is where the desired state lives and how to reach it.
type Repo struct {
	// URL is file://, https:// or ssh:// (or scp-like git@host:path).
	URL    string `yaml:"url" json:"url"`
	Branch string `yaml:"branch" json:"branch"`
	// Dir is the directory of the repo holding drover.yaml ("" for root).
	Dir          string   `yaml:"dir" json:"dir,omitempty"`
	PollInterval Duration `yaml:"pollInterval" json:"pollInterval"`
	// SSH: a private key file and a known_hosts file (required with a key).
	SSHKeyFile     string `yaml:"sshKeyFile" json:"sshKeyFile,omitempty"`
	KnownHostsFile string `yaml:"knownHostsFile" json:"knownHostsFile,omitempty"`
	// HTTPS: a file holding a token, sent as the password of TokenUser.
	TokenFile string `yaml:"tokenFile" json:"tokenFile,omitempty"`
	TokenUser string `yaml:"tokenUser" json:"tokenUser,omitempty"`
}

// NodeNginx says how to drive this node's nginx. drover owns the whole main
// config file named by Config and rewrites it for every revision.
type NodeNginx struct {
	Binary string `yaml:"binary" json:"binary"`
	// Config is the main nginx config file, written by drover.
	Config string `yaml:"config" json:"config"`
	// Prefix is nginx's -p; empty keeps nginx's compiled-in prefix.
	Prefix  string `yaml:"prefix" json:"prefix,omitempty"`
	PIDFile string `yaml:"pidFile" json:"pidFile"`
	// User for nginx workers; empty when nginx does not run as root.
	User string `yaml:"user" json:"user,omitempty"`
	// Start makes drover start nginx when it is not running (development;
	// on servers nginx is a systemd service).
	Start bool `yaml:"start" json:"start,omitempty"`
	// Listen is the address nginx binds (default: all addresses).
	Listen string `yaml:"listen" json:"listen,omitempty"`
	// HTTPSPort and HealthPort override drover.yaml's when set, e.g. to
	// run unprivileged on a laptop.
	HTTPSPort  int `yaml:"httpsPort" json:"httpsPort,omitempty"`
	HealthPort int `yaml:"healthPort" json:"healthPort,omitempty"`
	// TLS overrides drover.yaml's certificate paths.
	TLS *NodeTLS `yaml:"tls" json:"tls,omitempty"`
	// Includes are extra http-level include globs kept from the operator.
	Includes []string `yaml:"includes" json:"includes,omitempty"`
	// StatusListen is a loopback host:port where nginx serves stub_status,
	// which the drain step reads to wait for in-flight requests. Default
	// 127.0.0.1:8099 when an lb driver is set.
	StatusListen string `yaml:"statusListen" json:"statusListen,omitempty"`
}

// NodeTLS is this node's certificate; SelfSigned makes drover generate one
// into the state dir (development only).
type NodeTLS struct {
	Certificate string `yaml:"certificate" json:"certificate,omitempty"`
	Key         string `yaml:"key" json:"key,omitempty"`
	SelfSigned  bool   `yaml:"selfSigned" json:"selfSigned,omitempty"`
}

// Log configures the agent's structured log.
type Log struct {
	Level  string `yaml:"level" json:"level"`   // debug, info, warn, error
	Format string `yaml:"format" json:"format"` // text or json
}

func defaultNode() Node {
	return Node{
		StateDir:     "/var/lib/drover",
		KeepReleases: 5,
		Repo:         Repo{Branch: "main", PollInterval: Duration(10 * time.Second)},
		Nginx: NodeNginx{
			Binary:  "nginx",
			Config:  "/etc/nginx/nginx.conf",
			PIDFile: "/run/nginx.pid",
			User:    "www-data",
		},
		Systemd: Systemd{Socket: "/run/systemd/private", UnitsDir: "/etc/systemd/system"},
		LB: LB{
			Driver:      "none",
			HealthCheck: LBHealthCheck{Interval: Duration(10 * time.Second), UnhealthyThreshold: 3, HealthyThreshold: 2},
		},
		Log: Log{Level: "info", Format: "text"},
	}
}

// ParseNode decodes and validates node.yaml; relative paths are resolved
// against baseDir.
func ParseNode(file string, data []byte, baseDir string) (*Node, error) {
	n := defaultNode()
	pos, errs := decodeFile(file, data, &n)
	if pos == nil {
		return nil, errs
	}
	if n.Name == "" {
		host, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("%s: name is empty and the host name is unknown: %w", file, err)
		}
		n.Name = host
	}
	n.applyDefaults()
	v := &validator{file: file, pos: pos}
	v.node(&n)
	if errs = mergeErrors(errs, v.errs); len(errs) > 0 {
		return nil, errs
	}
	n.resolvePaths(baseDir)
	return &n, nil
}

// LoadNode reads and parses a node.yaml file.
func LoadNode(path string) (*Node, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read node config: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	return ParseNode(path, data, filepath.Dir(abs))
}

// applyDefaults fills the optional sections that the file wrote.
func (n *Node) applyDefaults() {
	if c := n.Cluster; c != nil {
		if c.Name == "" {
			c.Name = "default"
		}
		if c.LockExpiry == 0 {
			c.LockExpiry = Duration(30 * time.Second)
		}
		if c.HeartbeatTTL == 0 {
			c.HeartbeatTTL = Duration(30 * time.Second)
		}
	}
	if w := n.Webhook; w != nil && w.Path == "" {
		w.Path = "/_drover/webhook"
	}
	if n.LB.Driver != "none" && n.Nginx.StatusListen == "" {
		n.Nginx.StatusListen = "127.0.0.1:8099"
	}
}

func (n *Node) resolvePaths(base string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
	abs(&n.StateDir)
	abs(&n.Repo.SSHKeyFile)
	abs(&n.Repo.KnownHostsFile)
	abs(&n.Repo.TokenFile)
	abs(&n.Nginx.Config)
	abs(&n.Nginx.Prefix)
	abs(&n.Nginx.PIDFile)
	abs(&n.Systemd.Socket)
	abs(&n.Systemd.UnitsDir)
	if c := n.Cluster; c != nil {
		abs(&c.PasswordFile)
		abs(&c.SentinelPasswordFile)
		abs(&c.CAFile)
	}
	if w := n.Webhook; w != nil {
		abs(&w.SecretFile)
	}
	if len(n.LB.HAProxy.Socket) > 0 && !strings.Contains(n.LB.HAProxy.Socket, ":") {
		abs(&n.LB.HAProxy.Socket)
	}
	abs(&n.LB.DigitalOcean.TokenFile)
	if n.Database != nil {
		abs(&n.Database.DSNFile)
	}
	if n.Nginx.TLS != nil {
		abs(&n.Nginx.TLS.Certificate)
		abs(&n.Nginx.TLS.Key)
	}
	for i := range n.Nginx.Includes {
		abs(&n.Nginx.Includes[i])
	}
	if u, ok := localRepoPath(n.Repo.URL); ok && !filepath.IsAbs(u) {
		n.Repo.URL = "file://" + filepath.Join(base, u)
	}
}
