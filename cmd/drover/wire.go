package main

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/drover-dev/drover/artifacts"
	"github.com/drover-dev/drover/cluster"
	"github.com/drover-dev/drover/gitsource"
	"github.com/drover-dev/drover/internal/atomicfile"
	"github.com/drover-dev/drover/nginxconf"
	"github.com/drover-dev/drover/reconcile"
	"github.com/drover-dev/drover/spec"
	"github.com/drover-dev/drover/units"
)

// node is one node's parts, built from node.yaml: the agent, plan and
// status all start here.
type node struct {
	cfg   *spec.Node
	log   *slog.Logger
	repo  *gitsource.Repo
	store *artifacts.Store
	web   *webServer
	// reg is the node-local registry; cl the cluster's (nil for a single
	// node), which then holds the halts and the status.
	reg *reconcile.FileRegistry
	cl  *cluster.Cluster
	lb  *lbDrainer
}

// openNode reads node.yaml, opens the repo and the release store, and
// connects to the cluster. It changes nothing on the node.
func openNode(ctx context.Context, configPath string, stderr io.Writer) (*node, error) {
	cfg, err := spec.LoadNode(configPath)
	if err != nil {
		return nil, err
	}
	log, err := newLogger(cfg.Log, stderr)
	if err != nil {
		return nil, err
	}
	log = log.With("node", cfg.Name)
	if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	repo, err := gitsource.Open(gitsource.Config{
		URL:            cfg.Repo.URL,
		Branch:         cfg.Repo.Branch,
		Dir:            filepath.Join(cfg.StateDir, "git"),
		SSHKeyFile:     cfg.Repo.SSHKeyFile,
		KnownHostsFile: cfg.Repo.KnownHostsFile,
		TokenFile:      cfg.Repo.TokenFile,
		TokenUser:      cfg.Repo.TokenUser,
	}, log.With("part", "git"))
	if err != nil {
		return nil, err
	}
	store, err := artifacts.Open(cfg.StateDir, artifacts.Options{Log: log.With("part", "releases")})
	if err != nil {
		repo.Close()
		return nil, err
	}
	n := &node{cfg: cfg, log: log, repo: repo, store: store, reg: &reconcile.FileRegistry{Dir: cfg.StateDir}}
	n.web = newWebServer(cfg, store.LiveDir(), log.With("part", "nginx"))
	if n.lb, err = newLBDrainer(cfg, log.With("part", "lb")); err != nil {
		n.Close()
		return nil, err
	}
	if n.cl, err = openCluster(ctx, cfg, log); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

func (n *node) Close() {
	if n.cl != nil {
		n.cl.Close()
	}
	n.store.Close()
	n.repo.Close()
}

// registry is where halts and status live: the cluster's, or the state
// dir's for a single node.
func (n *node) registry() reconcile.Registry {
	if n.cl != nil {
		return n.cl
	}
	return n.reg
}

func newLogger(c spec.Log, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

// healthDir is where the LB health files (up, drain) live.
func (n *node) healthDir() string { return filepath.Join(n.cfg.StateDir, "lb") }

// reconciler builds the state machine over the node's parts.
func (n *node) reconciler(sup reconcile.Supervisor) (*reconcile.Node, error) {
	return reconcile.New(reconcile.Config{
		Name:         n.cfg.Name,
		RepoDir:      n.cfg.Repo.Dir,
		StateDir:     n.cfg.StateDir,
		LiveDir:      n.store.LiveDir(),
		HealthDir:    n.healthDir(),
		KeepReleases: n.cfg.KeepReleases,
		SiteURL:      n.web.siteURL,
		WorkerHost:   "127.0.0.1",
		Log:          n.log,
	}, n.deps(sup))
}

func (n *node) deps(sup reconcile.Supervisor) reconcile.Deps {
	d := reconcile.Deps{
		Source:     treeSource{n.repo},
		Releases:   releaseStore{n.store},
		Web:        n.web,
		Supervisor: sup,
		Drainer:    n.lb,
		Migrator:   newMigrator(n.cfg, n.log),
		Registry:   n.registry(),
	}
	if n.cl != nil {
		d.Lock, d.Capacity = n.cl, n.cl
	}
	return d
}

// newSupervisor picks how workers run on this node.
func (n *node) newSupervisor() (units.Supervisor, error) {
	kind := n.cfg.Supervisor
	if kind == "" {
		kind = units.Detect()
	}
	base := units.Config{Log: n.log.With("part", "workers")}
	var sup units.Supervisor
	switch kind {
	case units.KindSystemd:
		sup = units.NewSystemd(units.SystemdConfig{
			Config:    base,
			Socket:    n.cfg.Systemd.Socket,
			UnitsDir:  n.cfg.Systemd.UnitsDir,
			StateFile: filepath.Join(n.cfg.StateDir, "units.json"),
		})
	case units.KindExec:
		sup = units.NewExec(units.ExecConfig{Config: base})
	default:
		return nil, fmt.Errorf("supervisor %q is not systemd or exec", kind)
	}
	// Workers left running across a release keep theirs from Prune.
	n.store.SetInUse(sup.ReleasesInUse)
	return sup, nil
}

// treeSource adapts gitsource to reconcile.Source.
type treeSource struct{ *gitsource.Repo }

func (s treeSource) Tree(ctx context.Context, rev, dir string) (fs.FS, error) {
	return s.Repo.Tree(ctx, rev, dir)
}

// releaseStore adapts artifacts to reconcile.Releases.
type releaseStore struct{ *artifacts.Store }

func (s releaseStore) Prepare(ctx context.Context, rev string, specBytes []byte, sp *spec.Spec, fsys fs.FS) error {
	_, err := s.Store.Prepare(ctx, rev, specBytes, sp, fsys)
	return err
}

func (s releaseStore) SpecOf(rev string) ([]byte, error) {
	r, err := s.Store.Release(rev)
	if err != nil {
		return nil, err
	}
	return os.ReadFile(r.SpecFile())
}

// webServer is nginx as the rollout sees it: render the config of a spec
// with this node's settings, test it, install it.
type webServer struct {
	cfg    *spec.Node
	nginx  *nginxconf.Nginx
	params nginxconf.Params
	log    *slog.Logger
}

func newWebServer(cfg *spec.Node, liveDir string, log *slog.Logger) *webServer {
	ng := cfg.Nginx
	p := nginxconf.Params{
		LiveDir:      liveDir,
		HealthDir:    filepath.Join(cfg.StateDir, "lb"),
		Listen:       ng.Listen,
		HTTPSPort:    ng.HTTPSPort,
		HealthPort:   ng.HealthPort,
		User:         ng.User,
		PIDFile:      ng.PIDFile,
		Includes:     ng.Includes,
		StatusListen: ng.StatusListen,
	}
	if observesChecks(cfg) {
		p.HealthAccessLog = healthLogPath(cfg)
	}
	if w := cfg.Webhook; w != nil && w.ServerName != "" {
		p.Webhook = &nginxconf.Webhook{ServerName: w.ServerName, Path: w.Path, Upstream: w.Listen}
	}
	if ng.Prefix != "" {
		p.ErrorLog = filepath.Join(ng.Prefix, "error.log")
		p.TempDir = filepath.Join(ng.Prefix, "tmp")
	}
	return &webServer{
		cfg:    cfg,
		params: p,
		log:    log,
		nginx: &nginxconf.Nginx{
			Binary:  ng.Binary,
			Config:  ng.Config,
			Prefix:  ng.Prefix,
			PIDFile: ng.PIDFile,
			Log:     log,
		},
	}
}

// tls returns the certificate pair for sp: node.yaml's, a self-signed one,
// or drover.yaml's; empty for none.
func (w *webServer) tls(sp *spec.Spec) (cert, key string, err error) {
	switch t := w.cfg.Nginx.TLS; {
	case t != nil && t.SelfSigned:
		return nginxconf.EnsureSelfSigned(filepath.Join(w.cfg.StateDir, "tls"), serverNames(sp))
	case t != nil:
		return t.Certificate, t.Key, nil
	case sp.Nginx.TLS != nil:
		return sp.Nginx.TLS.Certificate, sp.Nginx.TLS.Key, nil
	}
	return "", "", nil
}

func serverNames(sp *spec.Spec) []string {
	seen := map[string]bool{}
	for _, s := range sp.Sites {
		for _, h := range s.ServerNames {
			seen[h] = true
		}
	}
	for _, wk := range sp.Workers {
		for _, r := range wk.Routes {
			seen[r.ServerName] = true
		}
	}
	names := make([]string, 0, len(seen))
	for h := range seen {
		names = append(names, h)
	}
	sort.Strings(names)
	return names
}

func (w *webServer) render(sp *spec.Spec) ([]byte, error) {
	p := w.params
	p.Spec = sp
	var err error
	if p.TLSCert, p.TLSKey, err = w.tls(sp); err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	if p.TempDir != "" {
		if err := os.MkdirAll(p.TempDir, 0o755); err != nil {
			return nil, err
		}
	}
	return nginxconf.Render(p)
}

// Check renders sp's config beside the live one and runs nginx -t on it.
func (w *webServer) Check(ctx context.Context, sp *spec.Spec) error {
	conf, err := w.render(sp)
	if err != nil {
		return err
	}
	dir := filepath.Dir(w.nginx.Config)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cand, err := atomicfile.WriteTemp(w.nginx.Config, conf, 0o644)
	if err != nil {
		return err
	}
	defer os.Remove(cand)
	return w.nginx.Test(ctx, cand)
}

// Apply installs sp's config and reloads nginx, starting it first when
// node.yaml asks drover to (development).
func (w *webServer) Apply(ctx context.Context, sp *spec.Spec) error {
	conf, err := w.render(sp)
	if err != nil {
		return err
	}
	if _, err := w.nginx.Install(ctx, conf); err != nil {
		return err
	}
	if _, running := w.nginx.Running(); !running {
		if !w.cfg.Nginx.Start {
			return fmt.Errorf("nginx is not running (pid file %s); start it, or set nginx.start in node.yaml for development", w.cfg.Nginx.PIDFile)
		}
		return w.nginx.Start(ctx)
	}
	return nil
}

// siteURL is where this node's nginx serves sp's sites, for health checks.
func (w *webServer) siteURL(sp *spec.Spec) string {
	port := w.cfg.Nginx.HTTPSPort
	if port == 0 {
		port = sp.Nginx.HTTPSPort
	}
	host := w.cfg.Nginx.Listen
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	scheme := "https"
	if cert, _, err := w.tls(sp); err == nil && cert == "" {
		scheme = "http"
	}
	return scheme + "://" + net.JoinHostPort(host, strconv.Itoa(port))
}

// shortRev abbreviates a commit id for people.
func shortRev(rev string) string {
	if len(rev) > 12 {
		return rev[:12]
	}
	if rev == "" {
		return "(none)"
	}
	return strings.TrimSpace(rev)
}
