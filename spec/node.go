package spec

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// DefaultNodeFile is where the agent reads its node config on a server.
const DefaultNodeFile = "/etc/drover/node.yaml"

// Node is node.yaml: one node's own settings. Secrets are never inline; each
// *File field names a node-local file holding the secret.
//
// Relative paths are relative to the directory of node.yaml, so a node config
// kept beside a checkout runs without root.
//
// These types are node.yaml's one definition, read by ParseNode and written
// by MarshalNode (drover init): hence omitempty on the yaml tags, so that a
// written file holds only the fields set and every other keeps its default.
type Node struct {
	// Name identifies the node in the cluster; default: the host name.
	Name string `yaml:"name,omitempty" json:"name"`
	// StateDir holds the git repo, the releases, the journal.
	StateDir string `yaml:"stateDir,omitempty" json:"stateDir"`
	// KeepReleases is how many releases stay on disk, the live one included.
	KeepReleases int       `yaml:"keepReleases,omitempty" json:"keepReleases"`
	Repo         Repo      `yaml:"repo,omitempty" json:"repo"`
	Nginx        NodeNginx `yaml:"nginx,omitempty" json:"nginx"`
	// Supervisor runs the workers: "systemd" on servers, "exec" (child
	// processes of the agent) on development machines; empty picks systemd
	// when it is running, else exec.
	Supervisor string  `yaml:"supervisor,omitempty" json:"supervisor,omitempty"`
	Systemd    Systemd `yaml:"systemd,omitempty" json:"systemd"`
	// Cluster is how the nodes coordinate; absent for a single node.
	Cluster *Cluster `yaml:"cluster,omitempty" json:"cluster,omitempty"`
	// Webhook receives pushes and wakes every node; absent: polling only.
	Webhook *Webhook `yaml:"webhook,omitempty" json:"webhook,omitempty"`
	// LB is how this node leaves and re-joins the load balancer.
	LB LB `yaml:"lb,omitempty" json:"lb"`
	// Database is where migrations run; absent: a spec with migrations is
	// refused on this node.
	Database *Database `yaml:"database,omitempty" json:"database,omitempty"`
	Log      Log       `yaml:"log,omitempty" json:"log"`
	// Guard watches the live release between rollouts.
	Guard Guard `yaml:"guard,omitempty" json:"guard"`
	// Secrets decrypts workers' secretEnv files; absent: a spec with
	// secretEnv is refused on this node.
	Secrets *NodeSecrets `yaml:"secrets,omitempty" json:"secrets,omitempty"`
	// History is the cluster's durable record of revisions (drover history).
	History History `yaml:"history,omitempty" json:"history"`
	// Metrics serves Prometheus metrics; absent: off.
	Metrics *Metrics `yaml:"metrics,omitempty" json:"metrics,omitempty"`
	// Notify tells people about rollouts, halts and pins; absent: nobody.
	Notify *Notify `yaml:"notify,omitempty" json:"notify,omitempty"`
	// Policy is what a spec may ask of this node (see Policy); absent:
	// DefaultPolicy.
	Policy Policy `yaml:"policy,omitempty" json:"policy"`
}

// Notify is where notifications go. Every node of a cluster should say
// the same: whichever node sees an event first sends it, once.
type Notify struct {
	// Webhooks get the event as JSON (format json, the default) or as a
	// Slack-compatible {"text": …} (format slack).
	Webhooks []NotifyWebhook `yaml:"webhooks,omitempty" json:"webhooks,omitempty"`
	Email    *NotifyEmail    `yaml:"email,omitempty" json:"email,omitempty"`
	// Timeout bounds each try of each receiver (default 5s).
	Timeout Duration `yaml:"timeout,omitempty" json:"timeout"`
}

// NotifyWebhook is one HTTP receiver. Its URL often holds a secret (Slack's
// does): URLFile reads it from a file instead.
type NotifyWebhook struct {
	URL     string `yaml:"url,omitempty" json:"url,omitempty"`
	URLFile string `yaml:"urlFile,omitempty" json:"urlFile,omitempty"`
	Format  string `yaml:"format,omitempty" json:"format,omitempty"`
}

// NotifyEmail mails through the local sendmail (postfix's, or any
// sendmail-compatible program).
type NotifyEmail struct {
	Sendmail string   `yaml:"sendmail,omitempty" json:"sendmail"`
	From     string   `yaml:"from,omitempty" json:"from"`
	To       []string `yaml:"to,omitempty" json:"to"`
}

// History says how many revisions the history keeps (in Redis, or in the
// state dir without a cluster); every node should say the same.
type History struct {
	Keep int `yaml:"keep,omitempty" json:"keep"`
}

// Metrics is the node-local Prometheus endpoint (GET /metrics).
type Metrics struct {
	// Listen is host:port; keep it on loopback (or a private address the
	// scraper reaches): the metrics name revisions and nodes.
	Listen string `yaml:"listen,omitempty" json:"listen"`
}

// Guard is the steady-state guard: between rollouts the agent runs the live
// release's checks every Interval; after UnhealthyAfter failed rounds in a
// row the node takes itself out of the LB (within the capacity rule), and
// after HealthyAfter good rounds in a row it comes back. A worker instance
// that fails its check for RestartAfter is restarted.
type Guard struct {
	// Disabled turns the guard off: the health endpoint then says what the
	// last rollout verified, as before the guard existed.
	Disabled       bool     `yaml:"disabled,omitempty" json:"disabled,omitempty"`
	Interval       Duration `yaml:"interval,omitempty" json:"interval"`
	UnhealthyAfter int      `yaml:"unhealthyAfter,omitempty" json:"unhealthyAfter"`
	HealthyAfter   int      `yaml:"healthyAfter,omitempty" json:"healthyAfter"`
	RestartAfter   Duration `yaml:"restartAfter,omitempty" json:"restartAfter"`
}

// Cluster is the Redis the nodes coordinate through: one server, several
// independent masters (Redlock), or Sentinel.
type Cluster struct {
	// Name separates clusters sharing one Redis (default "default").
	Name string `yaml:"name,omitempty" json:"name"`
	// Redis lists one address, or several independent masters.
	Redis         []string `yaml:"redis,omitempty,flow" json:"redis,omitempty"`
	SentinelAddrs []string `yaml:"sentinels,omitempty,flow" json:"sentinels,omitempty"`
	MasterName    string   `yaml:"masterName,omitempty" json:"masterName,omitempty"`
	Username      string   `yaml:"username,omitempty" json:"username,omitempty"`
	PasswordFile  string   `yaml:"passwordFile,omitempty" json:"passwordFile,omitempty"`
	// SentinelPasswordFile authenticates to the sentinels themselves.
	SentinelPasswordFile string `yaml:"sentinelPasswordFile,omitempty" json:"sentinelPasswordFile,omitempty"`
	TLS                  bool   `yaml:"tls,omitempty" json:"tls,omitempty"`
	CAFile               string `yaml:"caFile,omitempty" json:"caFile,omitempty"`
	DB                   int    `yaml:"db,omitempty" json:"db,omitempty"`
	// LockExpiry is how long the rollout lock outlives a dead holder.
	LockExpiry Duration `yaml:"lockExpiry,omitempty" json:"lockExpiry"`
	// HeartbeatTTL is how long a silent node still counts as in service.
	HeartbeatTTL Duration `yaml:"heartbeatTTL,omitempty" json:"heartbeatTTL"`
}

// Webhook is the push receiver. nginx routes Path on ServerName to Listen.
type Webhook struct {
	Listen     string `yaml:"listen,omitempty" json:"listen"`
	Path       string `yaml:"path,omitempty" json:"path"`
	ServerName string `yaml:"serverName,omitempty" json:"serverName"`
	SecretFile string `yaml:"secretFile,omitempty" json:"secretFile"`
	// Provider is github, gitlab, gitea, forgejo or bitbucket; empty
	// accepts any of them by its headers.
	Provider string `yaml:"provider,omitempty" json:"provider,omitempty"`
}

// LB is the load balancer drain driver and its settings.
type LB struct {
	// Driver is none, healthcheck, haproxy or digitalocean.
	Driver      string        `yaml:"driver,omitempty" json:"driver"`
	HealthCheck LBHealthCheck `yaml:"healthcheck,omitempty" json:"healthcheck"`
	HAProxy     LBHAProxy     `yaml:"haproxy,omitempty" json:"haproxy"`
	// DigitalOcean's waits follow the LB's own health-check settings.
	DigitalOcean LBDigitalOcean `yaml:"digitalocean,omitempty" json:"digitalocean"`
}

// LBHealthCheck is the LB's health-check settings, for any load balancer
// that polls this node's health endpoint.
type LBHealthCheck struct {
	Interval           Duration `yaml:"interval,omitempty" json:"interval"`
	UnhealthyThreshold int      `yaml:"unhealthyThreshold,omitempty" json:"unhealthyThreshold"`
	HealthyThreshold   int      `yaml:"healthyThreshold,omitempty" json:"healthyThreshold"`
}

// LBHAProxy names HAProxy's runtime API and this node's server in it.
type LBHAProxy struct {
	Socket  string `yaml:"socket,omitempty" json:"socket,omitempty"`
	Backend string `yaml:"backend,omitempty" json:"backend,omitempty"`
	Server  string `yaml:"server,omitempty" json:"server,omitempty"`
}

// LBDigitalOcean is a DigitalOcean load balancer.
type LBDigitalOcean struct {
	LoadBalancerID string `yaml:"loadBalancerID,omitempty" json:"loadBalancerID,omitempty"`
	TokenFile      string `yaml:"tokenFile,omitempty" json:"tokenFile,omitempty"`
	// APIURL and MetadataURL override DigitalOcean's addresses (tests).
	APIURL      string `yaml:"apiURL,omitempty" json:"apiURL,omitempty"`
	MetadataURL string `yaml:"metadataURL,omitempty" json:"metadataURL,omitempty"`
}

// Database is the PostgreSQL that migrations run against. The DSN is a
// secret, read from a file; it must reach PostgreSQL directly (not through
// PgBouncer's transaction pooling).
type Database struct {
	DSNFile string `yaml:"dsnFile,omitempty" json:"dsnFile"`
}

// Systemd says how to reach this node's systemd.
type Systemd struct {
	// Socket is systemd's private D-Bus socket.
	Socket string `yaml:"socket,omitempty" json:"socket"`
	// UnitsDir is where drover writes its unit files.
	UnitsDir string `yaml:"unitsDir,omitempty" json:"unitsDir"`
}

// Repo is where the desired state lives and how to reach it.
type Repo struct {
	// URL is file://, https:// or ssh:// (or scp-like git@host:path).
	URL string `yaml:"url,omitempty" json:"url"`
	// Branch is written even when empty: its default is main, so a Node
	// saying "" must be refused by ParseNode, not read back as main.
	Branch string `yaml:"branch" json:"branch"`
	// Dir is the directory of the repo holding drover.yaml ("" for root).
	Dir          string   `yaml:"dir,omitempty" json:"dir,omitempty"`
	PollInterval Duration `yaml:"pollInterval,omitempty" json:"pollInterval"`
	// SSH: a private key file and a known_hosts file (required with a key).
	SSHKeyFile     string `yaml:"sshKeyFile,omitempty" json:"sshKeyFile,omitempty"`
	KnownHostsFile string `yaml:"knownHostsFile,omitempty" json:"knownHostsFile,omitempty"`
	// HTTPS: a file holding a token, sent as the password of TokenUser.
	TokenFile string `yaml:"tokenFile,omitempty" json:"tokenFile,omitempty"`
	TokenUser string `yaml:"tokenUser,omitempty" json:"tokenUser,omitempty"`
	// Verify requires signed revisions; absent: the git server is trusted.
	Verify *RepoVerify `yaml:"verify,omitempty" json:"verify,omitempty"`
}

// NodeNginx says how to drive this node's nginx. drover owns the whole main
// config file named by Config and rewrites it for every revision.
type NodeNginx struct {
	Binary string `yaml:"binary,omitempty" json:"binary"`
	// Config is the main nginx config file, written by drover.
	Config string `yaml:"config,omitempty" json:"config"`
	// Prefix is nginx's -p; empty keeps nginx's compiled-in prefix.
	Prefix  string `yaml:"prefix,omitempty" json:"prefix,omitempty"`
	PIDFile string `yaml:"pidFile,omitempty" json:"pidFile"`
	// User for nginx workers; empty when nginx does not run as root.
	User string `yaml:"user,omitempty" json:"user,omitempty"`
	// Start makes drover start nginx when it is not running (development;
	// on servers nginx is a systemd service).
	Start bool `yaml:"start,omitempty" json:"start,omitempty"`
	// Listen is the address nginx binds (default: all addresses).
	Listen string `yaml:"listen,omitempty" json:"listen,omitempty"`
	// HTTPSPort and HealthPort override drover.yaml's when set, e.g. to
	// run unprivileged on a laptop.
	HTTPSPort  int `yaml:"httpsPort,omitempty" json:"httpsPort,omitempty"`
	HealthPort int `yaml:"healthPort,omitempty" json:"healthPort,omitempty"`
	// TLS overrides drover.yaml's certificate paths.
	TLS *NodeTLS `yaml:"tls,omitempty" json:"tls,omitempty"`
	// Includes are extra http-level include globs kept from the operator.
	Includes []string `yaml:"includes,omitempty" json:"includes,omitempty"`
	// StatusListen is a loopback host:port where nginx serves stub_status,
	// which the drain step reads to wait for in-flight requests. Default
	// 127.0.0.1:8099 when an lb driver is set.
	StatusListen string `yaml:"statusListen,omitempty" json:"statusListen,omitempty"`
	// RevisionHeader adds X-Drover-Revision (the live revision's commit
	// id) and X-Drover-Node (this node's name) to every answer of every
	// site and route, so that a client can tell which release of which
	// node answered it (the e2e lab checks every answer this way). Off by
	// default: it tells the world what is deployed.
	RevisionHeader bool `yaml:"revisionHeader,omitempty" json:"revisionHeader,omitempty"`
}

// NodeTLS is this node's certificate; SelfSigned makes drover generate one
// into the state dir (development only).
type NodeTLS struct {
	Certificate string `yaml:"certificate,omitempty" json:"certificate,omitempty"`
	Key         string `yaml:"key,omitempty" json:"key,omitempty"`
	SelfSigned  bool   `yaml:"selfSigned,omitempty" json:"selfSigned,omitempty"`
}

// Log configures the agent's structured log.
type Log struct {
	Level  string `yaml:"level,omitempty" json:"level"`   // debug, info, warn, error
	Format string `yaml:"format,omitempty" json:"format"` // text or json
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
		Log:     Log{Level: "info", Format: "text"},
		Guard:   Guard{Interval: Duration(2 * time.Second), UnhealthyAfter: 3, HealthyAfter: 3, RestartAfter: Duration(30 * time.Second)},
		History: History{Keep: 500},
		Policy:  DefaultPolicy(),
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
	v.policySection(&n.Policy, absStateDir(n.StateDir, baseDir))
	if errs = mergeErrors(errs, v.errs); len(errs) > 0 {
		return nil, errs
	}
	n.resolvePaths(baseDir)
	return &n, nil
}

// LoadNode reads and parses a node.yaml file, and refuses its secret files
// when their group or others can read them (CheckSecretFiles).
func LoadNode(path string) (*Node, error) {
	data, err := readFileLimited(path)
	if err != nil {
		return nil, fmt.Errorf("read node config: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	n, err := ParseNode(path, data, filepath.Dir(abs))
	if err != nil {
		return nil, err
	}
	if err := CheckSecretFiles(path, n); err != nil {
		return nil, err
	}
	return n, nil
}

// MarshalNode writes n as node.yaml, in the order of the fields of Node
// (the README's), for ParseNode to read back. A zero field is left out
// and so keeps its default; an empty list is zero too, so a policy list
// meant as [] (allow none) cannot be written this way.
func MarshalNode(n *Node) ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return nil, fmt.Errorf("encode node.yaml: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode node.yaml: %w", err)
	}
	return buf.Bytes(), nil
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
	if nt := n.Notify; nt != nil {
		if nt.Timeout == 0 {
			nt.Timeout = Duration(5 * time.Second)
		}
		for i := range nt.Webhooks {
			if nt.Webhooks[i].Format == "" {
				nt.Webhooks[i].Format = "json"
			}
		}
		if e := nt.Email; e != nil && e.Sendmail == "" {
			e.Sendmail = "/usr/sbin/sendmail"
		}
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
	if rv := n.Repo.Verify; rv != nil {
		abs(&rv.OpenPGPKeyring)
		abs(&rv.SSHAllowedSigners)
	}
	if n.Secrets != nil {
		abs(&n.Secrets.IdentityFile)
	}
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
	if nt := n.Notify; nt != nil {
		for i := range nt.Webhooks {
			abs(&nt.Webhooks[i].URLFile)
		}
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
