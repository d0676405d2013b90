// Package agent is one node's drover agent, built from node.yaml: it opens
// the config repo, the release store, nginx, the workers' supervisor, the
// load-balancer driver and the cluster, hands them to reconcile's state
// machine, and runs what goes beside it (the guard, the webhook, the
// traffic counter of the canary, metrics, alerts, the history recorder).
// cmd/drover's agent command only parses flags and calls Run or RunOnce;
// the other commands take the parts they share with the agent from here
// (OpenCluster, OpenCLIRepo, NewWebServer, OpenHistory, NotifyNow), so a
// command and the agent always read node.yaml the same way.
package agent

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/drover-dev/drover/artifacts"
	"github.com/drover-dev/drover/cluster"
	"github.com/drover-dev/drover/gitsource"
	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/lbdrain"
	"github.com/drover-dev/drover/nginxconf"
	"github.com/drover-dev/drover/reconcile"
	"github.com/drover-dev/drover/secretenv"
	"github.com/drover-dev/drover/secrets"
	"github.com/drover-dev/drover/spec"
	"github.com/drover-dev/drover/units"
)

// Node is one node's parts, built from node.yaml.
type Node struct {
	cfg   *spec.Node
	log   *slog.Logger
	repo  *gitsource.Repo
	store *artifacts.Store
	web   *nginxconf.Server
	// reg is the node-local registry; cl the cluster's (nil for a single
	// node), which then holds the halts and the status.
	reg *reconcile.FileRegistry
	cl  *cluster.Cluster
	lb  *lbdrain.Drainer
	// verifier checks signatures (nil without repo.verify).
	verifier *gitsource.Verifier
	// obs is the registry as the rollout sees it (observed).
	obs *observedRegistry
	// traffic is the node's own request figures (traffic.go); nil before
	// startTraffic or without a cluster.
	traffic reconcile.Traffic
}

// Open reads node.yaml at configPath (logging to stderr as its log section
// says), opens the repo and the release store, and
// connects to the cluster. It changes nothing on the node.
func Open(ctx context.Context, configPath string, stderr io.Writer) (*Node, error) {
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
	repo, err := OpenRepo(cfg, layout.New(cfg.StateDir).Git(), log)
	if err != nil {
		return nil, err
	}
	store, err := artifacts.Open(cfg.StateDir, artifacts.Options{ArtifactSchemes: cfg.Policy.ArtifactSchemes, Log: log.With("part", "releases")})
	if err != nil {
		repo.Close()
		return nil, err
	}
	n := &Node{cfg: cfg, log: log, repo: repo, store: store, reg: &reconcile.FileRegistry{Dir: cfg.StateDir}}
	if cfg.Secrets != nil {
		// Fail at start on an identity that is missing or readable by others.
		if _, err := secrets.LoadIdentity(cfg.Secrets.IdentityFile); err != nil {
			n.Close()
			return nil, err
		}
	}
	if n.verifier, err = newSigVerifier(repo, cfg.Repo.Verify, cfg.StateDir); err != nil {
		n.Close()
		return nil, err
	}
	if n.lb, err = newLBDrainer(cfg, log.With("part", "lb")); err != nil {
		n.Close()
		return nil, err
	}
	if n.cl, err = OpenCluster(ctx, cfg, log); err != nil {
		n.Close()
		return nil, err
	}
	trafficLog := ""
	if n.cl != nil {
		trafficLog = layout.New(cfg.StateDir).TrafficLog()
	}
	n.web = NewWebServer(cfg, store.LiveDir(), trafficLog, log.With("part", "nginx"))
	return n, nil
}

// OpenRepo opens node.yaml's config repo with its git store in dir.
func OpenRepo(cfg *spec.Node, dir string, log *slog.Logger) (*gitsource.Repo, error) {
	return gitsource.Open(gitsource.Config{
		URL:            cfg.Repo.URL,
		Branch:         cfg.Repo.Branch,
		Dir:            dir,
		SSHKeyFile:     cfg.Repo.SSHKeyFile,
		KnownHostsFile: cfg.Repo.KnownHostsFile,
		TokenFile:      cfg.Repo.TokenFile,
		TokenUser:      cfg.Repo.TokenUser,
	}, log.With("part", "git"))
}

// OpenCLIRepo opens the config repo for commands that run beside a live
// agent (plan, migrate, pin), in a store of their own: the agent's
// (STATE/git) is the agent's alone, since go-git is not safe across
// processes.
func OpenCLIRepo(cfg *spec.Node, log *slog.Logger) (*gitsource.Repo, error) {
	return OpenRepo(cfg, layout.New(cfg.StateDir).GitCLI(), log)
}

func (n *Node) Close() {
	if n.cl != nil {
		n.cl.Close()
	}
	n.store.Close()
	n.repo.Close()
}

// observed is the registry the rollout reports to, watched by the history
// recorder (cluster/recorder.go) and the metrics (metrics.go), the alerts (alerts.go).
func (n *Node) observed() *observedRegistry {
	if n.obs != nil {
		return n.obs
	}
	n.obs = &observedRegistry{Registry: n.registry()}
	var signer func(rev string) string
	if n.verifier != nil {
		signer = n.verifier.Signer
	}
	commit := func(ctx context.Context, rev string) (cluster.RevisionMeta, error) {
		c, err := n.repo.Commit(ctx, rev)
		return cluster.RevisionMeta{Author: c.Author, Committer: c.Committer, Subject: c.Message}, err
	}
	rec := cluster.NewHistoryRecorder(OpenHistory(n.cfg, n.cl), n.cfg.Name, commit, signer, n.log.With("part", "history"))
	n.obs.watch = append(n.obs.watch, rec.Observe)
	if n.cl == nil {
		// The cluster's Halt records itself in the history.
		n.obs.onHalt = append(n.obs.onHalt, rec.Halt)
	}
	return n.obs
}

// registry is where halts and status live: the cluster's, or the state
// dir's for a single node.
func (n *Node) registry() reconcile.Registry {
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

// reconciler builds the state machine over the node's parts.
func (n *Node) reconciler(sup reconcile.Supervisor) (*reconcile.Node, error) {
	return reconcile.New(reconcile.Config{
		Name:         n.cfg.Name,
		RepoDir:      n.cfg.Repo.Dir,
		StateDir:     n.cfg.StateDir,
		LiveDir:      n.store.LiveDir(),
		HealthDir:    layout.New(n.cfg.StateDir).LBDir(),
		KeepReleases: n.cfg.KeepReleases,
		SiteURL:      n.web.SiteURL,
		WorkerHost:   "127.0.0.1",
		Guard:        guardConfig(n.cfg.Guard),
		Policy:       &n.cfg.Policy,
		Log:          n.log,
		// The overlap handover starts a release's workers from its own
		// directory, before current moves.
		Handover: reconcile.HandoverConfig{ReleaseDir: n.store.ReleaseDir},
	}, n.deps(sup))
}

func (n *Node) deps(sup reconcile.Supervisor) reconcile.Deps {
	d := reconcile.Deps{
		Source:     treeSource{n.repo},
		Releases:   n.releases(),
		Web:        n.web,
		Supervisor: sup,
		Drainer:    n.lb,
		Migrator:   NewMigrator(n.cfg, n.log),
		Registry:   n.observed(),
	}
	if n.cl != nil {
		d.Lock, d.Capacity, d.Room, d.Pinner = n.cl, n.cl, n.cl, n.cl
		if n.traffic != nil {
			d.Canaries, d.Traffic = n.cl, n.traffic
		}
	}
	if n.verifier != nil {
		d.Verifier = n.verifier
	}
	return d
}

// releases is the release store as reconcile drives it: with workers'
// secretEnv files decrypted into each release.
func (n *Node) releases() reconcile.Releases {
	r := secretenv.Releases{Store: releaseStore{n.store}}
	if n.cfg.Secrets != nil {
		r.IdentityFile = n.cfg.Secrets.IdentityFile
	}
	return r
}

// guardConfig is node.yaml's guard section for reconcile; disabled is a zero
// interval.
func guardConfig(g spec.Guard) reconcile.GuardConfig {
	if g.Disabled {
		return reconcile.GuardConfig{}
	}
	return reconcile.GuardConfig{
		Interval:       g.Interval.D(),
		UnhealthyAfter: g.UnhealthyAfter,
		HealthyAfter:   g.HealthyAfter,
		RestartAfter:   g.RestartAfter.D(),
	}
}

// newSupervisor picks how workers run on this node.
func (n *Node) newSupervisor() (units.Supervisor, error) {
	kind := n.cfg.Supervisor
	if kind == "" {
		kind = units.Detect()
	}
	base := units.Config{Log: n.log.With("part", "workers"), AllowRoot: n.cfg.Policy.AllowRoot}
	var sup units.Supervisor
	switch kind {
	case units.KindSystemd:
		// Install steps get the workers' sandbox too, in transient units.
		n.store.RunInstallsInUnits()
		sup = units.NewSystemd(units.SystemdConfig{
			Config:    base,
			Socket:    n.cfg.Systemd.Socket,
			UnitsDir:  n.cfg.Systemd.UnitsDir,
			StateFile: layout.New(n.cfg.StateDir).Units(),
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

// The release store, with or without workers' secretEnv files, is
// reconcile's Releases.
var (
	_ reconcile.Releases = releaseStore{}
	_ reconcile.Releases = secretenv.Releases{}
)

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

// The nginx server is reconcile's web server, guard drift included.
var (
	_ reconcile.WebServer = (*nginxconf.Server)(nil)
	_ reconcile.WebDrift  = (*nginxconf.Server)(nil)
)

// NewWebServer builds the nginx server from node.yaml's nginx section;
// trafficLog is the canary's request log ("" for none).
func NewWebServer(cfg *spec.Node, liveDir, trafficLog string, log *slog.Logger) *nginxconf.Server {
	ng := cfg.Nginx
	sc := nginxconf.ServerConfig{
		Binary:         ng.Binary,
		Config:         ng.Config,
		Prefix:         ng.Prefix,
		PIDFile:        ng.PIDFile,
		Start:          ng.Start,
		LiveDir:        liveDir,
		HealthDir:      layout.New(cfg.StateDir).LBDir(),
		Listen:         ng.Listen,
		HTTPSPort:      ng.HTTPSPort,
		HealthPort:     ng.HealthPort,
		User:           ng.User,
		Includes:       ng.Includes,
		StatusListen:   ng.StatusListen,
		TrafficLog:     trafficLog,
		RevisionHeader: ng.RevisionHeader,
		NodeName:       cfg.Name,
	}
	if lbdrain.ObservesChecks(cfg.LB.Driver) {
		sc.HealthAccessLog = layout.New(cfg.StateDir).HealthLog()
	}
	if w := cfg.Webhook; w != nil && w.ServerName != "" {
		sc.Webhook = &nginxconf.Webhook{ServerName: w.ServerName, Path: w.Path, Upstream: w.Listen}
	}
	switch t := ng.TLS; {
	case t != nil && t.SelfSigned:
		sc.TLS = &nginxconf.ServerTLS{SelfSignedDir: filepath.Join(cfg.StateDir, "tls")}
	case t != nil:
		sc.TLS = &nginxconf.ServerTLS{Certificate: t.Certificate, Key: t.Key}
	}
	return nginxconf.NewServer(sc, log)
}

// Name is the node's name in node.yaml.
func (n *Node) Name() string { return n.cfg.Name }
