package spec

import (
	"fmt"
	"os"
	"path/filepath"
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
	Log        Log     `yaml:"log" json:"log"`
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
		Log:     Log{Level: "info", Format: "text"},
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
