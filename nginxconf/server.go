package nginxconf

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"

	"github.com/drover-dev/drover/internal/atomicfile"
	"github.com/drover-dev/drover/spec"
)

// ServerConfig is what a Server needs from node.yaml's nginx section and
// the node's paths.
type ServerConfig struct {
	// Binary, Config, Prefix and PIDFile drive nginx (see Nginx).
	Binary, Config, Prefix, PIDFile string
	// Start makes Apply start nginx when it is not running (development).
	Start bool
	// LiveDir and HealthDir are the live release and the LB health files.
	LiveDir, HealthDir string
	// Listen, HTTPSPort, HealthPort, User, Includes and StatusListen are
	// node.yaml's overrides, as in Params.
	Listen                string
	HTTPSPort, HealthPort int
	User                  string
	Includes              []string
	StatusListen          string
	// HealthAccessLog logs the LB's checks (Params); "" = none.
	HealthAccessLog string
	// TrafficLog receives a line per request while the spec has
	// rollout.canary; "" never.
	TrafficLog string
	// Webhook routes the push webhook to the agent; nil = none.
	Webhook *Webhook
	// TLS is the node's own certificate, which overrides the spec's; nil
	// takes the spec's.
	TLS *ServerTLS
	// RevisionHeader adds the live revision and NodeName to every answer.
	RevisionHeader bool
	NodeName       string
}

// ServerTLS is a node's own certificate pair, or a self-signed one.
type ServerTLS struct {
	// Certificate and Key are the pair's files.
	Certificate, Key string
	// SelfSignedDir, when set, is where the server keeps a self-signed pair
	// for the spec's server names instead (development only).
	SelfSignedDir string
}

// Server is nginx as the rollout sees it: render the config of a spec with
// this node's settings, test it, install it, and tell how the installed
// one drifted. It satisfies reconcile's WebServer and WebDrift.
type Server struct {
	cfg    ServerConfig
	nginx  *Nginx
	params Params
	log    *slog.Logger

	mu sync.Mutex
	// rendered is the config of the last spec Drift compared, which the
	// guard passes again every round.
	rendered map[*spec.Spec][]byte
}

// NewServer returns the server for cfg; it touches nothing.
func NewServer(cfg ServerConfig, log *slog.Logger) *Server {
	p := Params{
		LiveDir:         cfg.LiveDir,
		HealthDir:       cfg.HealthDir,
		Listen:          cfg.Listen,
		HTTPSPort:       cfg.HTTPSPort,
		HealthPort:      cfg.HealthPort,
		User:            cfg.User,
		PIDFile:         cfg.PIDFile,
		Includes:        cfg.Includes,
		StatusListen:    cfg.StatusListen,
		HealthAccessLog: cfg.HealthAccessLog,
		Webhook:         cfg.Webhook,
	}
	if cfg.Prefix != "" {
		p.ErrorLog = filepath.Join(cfg.Prefix, "error.log")
		p.TempDir = filepath.Join(cfg.Prefix, "tmp")
	}
	return &Server{
		cfg:    cfg,
		params: p,
		log:    log,
		nginx: &Nginx{
			Binary:  cfg.Binary,
			Config:  cfg.Config,
			Prefix:  cfg.Prefix,
			PIDFile: cfg.PIDFile,
			Log:     log,
		},
	}
}

// tls returns the certificate pair for sp: the node's, a self-signed one,
// or drover.yaml's; empty for none.
func (w *Server) tls(sp *spec.Spec) (cert, key string, err error) {
	switch t := w.cfg.TLS; {
	case t != nil && t.SelfSignedDir != "":
		return EnsureSelfSigned(t.SelfSignedDir, serverNames(sp))
	case t != nil:
		return t.Certificate, t.Key, nil
	case sp.Nginx.TLS != nil:
		return sp.Nginx.TLS.Certificate, sp.Nginx.TLS.Key, nil
	}
	return "", "", nil
}

// serverNames are every host sp's sites and routes serve, sorted.
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

// Render returns the nginx.conf for sp on this node.
func (w *Server) Render(sp *spec.Spec) ([]byte, error) {
	p := w.params
	p.Spec = sp
	if sp.Rollout.Canary != nil {
		p.TrafficLog = w.cfg.TrafficLog
	}
	if w.cfg.RevisionHeader {
		// The revision the live link names: Apply runs after the switch
		// (and after the switch back, when restoring).
		target, err := os.Readlink(p.LiveDir)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("revision header: %w", err)
		}
		if p.Revision = filepath.Base(target); target == "" {
			p.Revision = "none"
		}
		p.Node = w.cfg.NodeName
	}
	var err error
	if p.TLSCert, p.TLSKey, err = w.tls(sp); err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	if p.TempDir != "" {
		if err := os.MkdirAll(p.TempDir, 0o755); err != nil {
			return nil, err
		}
	}
	return Render(p)
}

// Check renders sp's config beside the live one and runs nginx -t on it.
func (w *Server) Check(ctx context.Context, sp *spec.Spec) error {
	conf, err := w.Render(sp)
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
// the config says to (development).
func (w *Server) Apply(ctx context.Context, sp *spec.Spec) error {
	conf, err := w.Render(sp)
	if err != nil {
		return err
	}
	if _, err := w.nginx.Install(ctx, conf); err != nil {
		return err
	}
	if _, running := w.nginx.Running(); !running {
		if !w.cfg.Start {
			return fmt.Errorf("nginx is not running (pid file %s); start it, or set nginx.start in node.yaml for development", w.cfg.PIDFile)
		}
		return w.nginx.Start(ctx)
	}
	return nil
}

// Drift says how the installed nginx config differs from sp's, and whether
// nginx runs (reconcile.WebDrift); Apply puts the config back.
func (w *Server) Drift(_ context.Context, sp *spec.Spec) ([]string, error) {
	// The guard asks every few seconds with the same spec: render once.
	w.mu.Lock()
	want := w.rendered[sp]
	w.mu.Unlock()
	if want == nil {
		var err error
		if want, err = w.Render(sp); err != nil {
			return nil, err
		}
		w.mu.Lock()
		w.rendered = map[*spec.Spec][]byte{sp: want}
		w.mu.Unlock()
	}
	var drift []string
	cur, err := os.ReadFile(w.nginx.Config)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		drift = append(drift, "nginx config "+w.nginx.Config+" is missing")
	case err != nil:
		return nil, err
	case !bytes.Equal(cur, want):
		drift = append(drift, "nginx config "+w.nginx.Config+" was changed")
	}
	if _, running := w.nginx.Running(); !running {
		drift = append(drift, "nginx is not running")
	}
	return drift, nil
}

// SiteURL is where this node's nginx serves sp's sites, for health checks.
func (w *Server) SiteURL(sp *spec.Spec) string {
	port := w.cfg.HTTPSPort
	if port == 0 {
		port = sp.Nginx.HTTPSPort
	}
	host := w.cfg.Listen
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	scheme := "https"
	if cert, _, err := w.tls(sp); err == nil && cert == "" {
		scheme = "http"
	}
	return scheme + "://" + net.JoinHostPort(host, strconv.Itoa(port))
}
