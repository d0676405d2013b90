// Package spec defines drover's two configuration files and every rule they
// must satisfy: drover.yaml (the desired state of a node, kept in the config
// repo) and node.yaml (a node's own settings, never in git).
//
// Parsing is strict (an unknown field is an error) and validation reports
// every problem at once, each as file:line:col, the field path
// (workers[1].port) and why. A spec that Parse returns without error is safe
// to render into nginx and systemd files: every value that reaches them has
// been checked against injection, and every path stays inside the repo.
package spec

import (
	"fmt"
	"time"
)

// FileName is the name of the spec at the root of the config directory.
const FileName = "drover.yaml"

// Spec is drover.yaml, version 1.
type Spec struct {
	Version    int         `yaml:"version" json:"version"`
	Rollout    Rollout     `yaml:"rollout" json:"rollout"`
	Sites      []Site      `yaml:"sites" json:"sites,omitempty"`
	Workers    []Worker    `yaml:"workers" json:"workers,omitempty"`
	Nginx      Nginx       `yaml:"nginx" json:"nginx"`
	Migrations *Migrations `yaml:"migrations" json:"migrations,omitempty"`
	// Health holds the node's extra checks (a database, a dependency).
	Health *HealthChecks `yaml:"health" json:"health,omitempty"`

	// pos is where each field was written, for the errors of checks made
	// after Parse (CheckTree).
	pos map[string]Pos
}

// Rollout is the policy for moving the cluster to a new revision.
type Rollout struct {
	// MaxUnavailable is how many nodes may be out of service at once.
	MaxUnavailable int `yaml:"maxUnavailable" json:"maxUnavailable"`
	// DrainTimeout bounds the wait for in-flight requests after a drain.
	DrainTimeout Duration `yaml:"drainTimeout" json:"drainTimeout"`
	// HealthTimeout bounds the health checks after a switch on one node.
	HealthTimeout Duration `yaml:"healthTimeout" json:"healthTimeout"`
	// Soak is how long a node must stay healthy after its checks pass
	// before it re-joins the load balancer and hands the lock on.
	Soak Duration `yaml:"soak" json:"soak"`
	// ProgressDeadline bounds a whole node's turn, lock wait included.
	ProgressDeadline Duration `yaml:"progressDeadline" json:"progressDeadline"`
	// OnFailure is "rollback" (switch back to the previous release) or
	// "halt" (stay drained on the failed release for inspection).
	OnFailure string `yaml:"onFailure" json:"onFailure"`
	// Canary holds the rollout after the first node for a judgement of its
	// real traffic; nil (absent) is no canary. See canary.go.
	Canary *Canary `yaml:"canary" json:"canary,omitempty"`
	// Handover is how a node moves its workers to a new release: "overlap"
	// (before the drain, the new release's instances start on the worker's
	// other port range and must be healthy; the drained window only flips
	// nginx's upstreams; the old instances stop after the node is back in
	// the LB), "restart" (in the drained window, each instance restarted in
	// place on its port: what a memory-tight node wants), or "auto", the
	// default: overlap, unless the node lacks the memory to run both
	// ranges, a second range collides with another port, or something
	// already listens on it; then restart for that rollout, with an event
	// saying why (see package reconcile). With overlap named, the second
	// ranges are validated and must be free.
	Handover string `yaml:"handover" json:"handover,omitempty"`
}

// Handover kinds, as rollout.handover names them.
const (
	HandoverRestart = "restart"
	HandoverOverlap = "overlap"
	HandoverAuto    = "auto"
)

// Site is a directory of static files served by nginx.
type Site struct {
	Name        string   `yaml:"name" json:"name"`
	ServerNames []string `yaml:"serverNames" json:"serverNames"`
	// Exactly one of Source (a directory of the config repo) and Artifact.
	Source   string    `yaml:"source" json:"source,omitempty"`
	Artifact *Artifact `yaml:"artifact" json:"artifact,omitempty"`
	// SPA serves index.html for any path that is not a file.
	SPA bool `yaml:"spa" json:"spa,omitempty"`
	// Headers are added to every response of the site.
	Headers map[string]string `yaml:"headers" json:"headers,omitempty"`
	// Health is the request that proves the site is served; default GET /.
	Health *SiteHealth `yaml:"health" json:"health,omitempty"`
}

// SiteHealth is the check of a site, made through the local nginx.
type SiteHealth struct {
	Path   string `yaml:"path" json:"path"`
	Status int    `yaml:"status" json:"status"`
}

// Artifact is a tarball built elsewhere (by CI), pinned by its digest.
type Artifact struct {
	URL    string `yaml:"url" json:"url"`
	SHA256 string `yaml:"sha256" json:"sha256"`
	// StripComponents removes leading path elements, like tar's option.
	StripComponents int `yaml:"stripComponents" json:"stripComponents,omitempty"`
}

// Worker is a long-running process with Instances copies; instance n (from 0)
// listens on Port+n and gets PORT in its environment. nginx proxies to them.
type Worker struct {
	Name     string    `yaml:"name" json:"name"`
	Source   string    `yaml:"source" json:"source,omitempty"`
	Artifact *Artifact `yaml:"artifact" json:"artifact,omitempty"`
	// Install runs in the new release's bundle directory before anything
	// switches (e.g. yarn install --frozen-lockfile --production).
	Install        []string `yaml:"install" json:"install,omitempty"`
	InstallTimeout Duration `yaml:"installTimeout" json:"installTimeout,omitempty"`
	// Exec is the argv of one instance. A bare argv[0] ("node") is looked
	// up in PATH; one with a slash ("bin/server") is relative to the bundle.
	Exec      []string `yaml:"exec" json:"exec"`
	Instances int      `yaml:"instances" json:"instances"`
	Port      int      `yaml:"port" json:"port"`
	// AltPort starts the worker's second port range, used with
	// rollout.handover: overlap: a release's instances run on Port..
	// or AltPort.., the new release on the range the live one does not
	// use. Default Port+Instances (the range right above).
	AltPort int               `yaml:"altPort" json:"altPort,omitempty"`
	Env     map[string]string `yaml:"env" json:"env,omitempty"`
	// EnvironmentFile is a node-local file of secrets (KEY=value lines).
	EnvironmentFile string   `yaml:"environmentFile" json:"environmentFile,omitempty"`
	User            string   `yaml:"user" json:"user,omitempty"`
	DataDirs        []string `yaml:"dataDirs" json:"dataDirs,omitempty"`
	Health          Health   `yaml:"health" json:"health"`
	Routes          []Route  `yaml:"routes" json:"routes,omitempty"`
	// MemoryMax and TasksMax bound the worker's each instance (systemd's
	// MemoryMax= and TasksMax=); empty or 0 is drover's default (see
	// package units).
	MemoryMax string `yaml:"memoryMax" json:"memoryMax,omitempty"`
	TasksMax  int    `yaml:"tasksMax" json:"tasksMax,omitempty"`
	// SecretEnv is an age-encrypted environment file in the repo (see
	// package secrets), decrypted by each node into the release.
	SecretEnv string `yaml:"secretEnv" json:"secretEnv,omitempty"`
}

// Health is the HTTP check of each instance of a worker: GET Path on the
// instance's port must answer Status (default 200) Successes times in a row,
// Interval apart (a starting instance is asked every 100 ms until it first
// answers well; see package health).
type Health struct {
	Path      string   `yaml:"path" json:"path"`
	Status    int      `yaml:"status" json:"status,omitempty"`
	Interval  Duration `yaml:"interval" json:"interval,omitempty"`
	Successes int      `yaml:"successes" json:"successes,omitempty"`
	// Timeout bounds one request.
	Timeout Duration `yaml:"timeout" json:"timeout,omitempty"`
}

// Route sends requests for ServerName whose path starts with Path to a worker.
type Route struct {
	ServerName string `yaml:"serverName" json:"serverName"`
	Path       string `yaml:"path" json:"path"`
}

// Nginx holds the cluster-wide nginx settings.
type Nginx struct {
	// HealthPort is the plain-HTTP port that serves only the LB health
	// endpoint.
	HealthPort int `yaml:"healthPort" json:"healthPort"`
	// HealthPath is the load balancer's health endpoint on HealthPort.
	HealthPath string `yaml:"healthPath" json:"healthPath"`
	// HTTPSPort serves the sites and routes.
	HTTPSPort int  `yaml:"httpsPort" json:"httpsPort"`
	TLS       *TLS `yaml:"tls" json:"tls,omitempty"`
	// ClientMaxBodySize is nginx's client_max_body_size, e.g. "10m".
	ClientMaxBodySize string `yaml:"clientMaxBodySize" json:"clientMaxBodySize,omitempty"`
}

// TLS names the certificate files on every node.
type TLS struct {
	Certificate string `yaml:"certificate" json:"certificate"`
	Key         string `yaml:"key" json:"key"`
}

// Migrations configures SQL migrations kept in the repo.
type Migrations struct {
	Dir              string   `yaml:"dir" json:"dir"`
	LockTimeout      Duration `yaml:"lockTimeout" json:"lockTimeout,omitempty"`
	StatementTimeout Duration `yaml:"statementTimeout" json:"statementTimeout,omitempty"`
}

// Defaults for drover.yaml.
const (
	DefaultMaxUnavailable   = 1
	DefaultDrainTimeout     = 30 * time.Second
	DefaultHealthTimeout    = 60 * time.Second
	DefaultSoak             = 5 * time.Second
	DefaultProgressDeadline = 10 * time.Minute
	DefaultInstallTimeout   = 5 * time.Minute
	DefaultHealthInterval   = time.Second
	DefaultHealthSuccesses  = 3
	DefaultHealthReqTimeout = 2 * time.Second
)

func defaultSpec() Spec {
	return Spec{
		Rollout: Rollout{
			MaxUnavailable:   DefaultMaxUnavailable,
			DrainTimeout:     Duration(DefaultDrainTimeout),
			HealthTimeout:    Duration(DefaultHealthTimeout),
			Soak:             Duration(DefaultSoak),
			ProgressDeadline: Duration(DefaultProgressDeadline),
			OnFailure:        "rollback",
			Handover:         HandoverAuto,
		},
		Nginx: Nginx{HealthPort: 80, HTTPSPort: 443, HealthPath: "/healthz"},
	}
}

// applyDefaults fills what the file left out inside lists, where the
// defaults cannot be set before decoding; pos tells what the file wrote, so
// that an explicit 0 is validated rather than replaced.
func (s *Spec) applyDefaults(pos map[string]Pos) {
	for i := range s.Workers {
		w := &s.Workers[i]
		if _, set := pos[fmt.Sprintf("workers[%d].instances", i)]; !set {
			w.Instances = 1
		}
		if _, set := pos[fmt.Sprintf("workers[%d].altPort", i)]; !set {
			w.AltPort = w.Port + w.Instances
		}
		if w.InstallTimeout == 0 {
			w.InstallTimeout = Duration(DefaultInstallTimeout)
		}
		h := &w.Health
		if h.Status == 0 {
			h.Status = 200
		}
		if h.Interval == 0 {
			h.Interval = Duration(DefaultHealthInterval)
		}
		if h.Successes == 0 {
			h.Successes = DefaultHealthSuccesses
		}
		if h.Timeout == 0 {
			h.Timeout = Duration(DefaultHealthReqTimeout)
		}
		for j := range w.Routes {
			if w.Routes[j].Path == "" {
				w.Routes[j].Path = "/"
			}
		}
	}
	for i := range s.Sites {
		site := &s.Sites[i]
		if site.Health == nil {
			site.Health = &SiteHealth{}
		}
		if site.Health.Path == "" {
			site.Health.Path = "/"
		}
		if site.Health.Status == 0 {
			site.Health.Status = 200
		}
	}
	if s.Migrations != nil {
		if s.Migrations.Dir == "" {
			s.Migrations.Dir = "migrations"
		}
		if s.Migrations.LockTimeout == 0 {
			s.Migrations.LockTimeout = Duration(5 * time.Second)
		}
		if s.Migrations.StatementTimeout == 0 {
			s.Migrations.StatementTimeout = Duration(5 * time.Minute)
		}
	}
}

// Parse decodes and validates drover.yaml against DefaultPolicy, for callers
// without a node.yaml. file is the name used in errors. The error, if any,
// is an Errors listing every problem.
func Parse(file string, data []byte) (*Spec, error) {
	return ParseFor(file, data, DefaultPolicy())
}

// ParseFor decodes and validates drover.yaml against a node's policy (its
// node.yaml's policy section): a spec outside it is refused like any other
// invalid spec, each breach with its field and line.
func ParseFor(file string, data []byte, policy Policy) (*Spec, error) {
	return parse(&validator{file: file, nodePolicy: policy}, data)
}

// ParseRelease decodes and validates the drover.yaml of a release this
// node already prepared, which its policy let in then (ParseFor, before
// prepare): every rule applies but the node policy's own settings (root,
// data dir and environment file prefixes, artifact schemes besides https
// and http, the node's forbidden env keys), so that a policy tightened
// since never stops the node re-applying or rolling back to what it
// served. A push still meets the policy before it is prepared; a worker
// that now asks for root is still refused by the supervisors unless the
// node allows root (units.Config.AllowRoot).
func ParseRelease(file string, data []byte) (*Spec, error) {
	return parse(&validator{file: file, released: true}, data)
}

func parse(v *validator, data []byte) (*Spec, error) {
	file := v.file
	s := defaultSpec()
	pos, errs := decodeFile(file, data, &s)
	if pos == nil {
		return nil, errs
	}
	s.applyDefaults(pos)
	s.applyCanaryDefaults(pos)
	s.applyCheckDefaults()
	v.pos = pos
	v.spec(&s)
	if errs = mergeErrors(errs, v.errs); len(errs) > 0 {
		return nil, errs
	}
	s.pos = pos
	return &s, nil
}

// PathIn names drover.yaml in the repo directory dir ("" for the root), as
// errors show it.
func PathIn(dir string) string {
	if dir == "" {
		return FileName
	}
	return dir + "/" + FileName
}

// InstancePorts returns the port of each instance of w, in order.
func (w *Worker) InstancePorts() []int {
	ports := make([]int, w.Instances)
	for i := range ports {
		ports[i] = w.Port + i
	}
	return ports
}

// AltPorts returns the port of each instance of w in its second range
// (AltPort..), in order.
func (w *Worker) AltPorts() []int {
	ports := make([]int, w.Instances)
	for i := range ports {
		ports[i] = w.AltPort + i
	}
	return ports
}

// OnAlt returns w with its instances on its second range: Port is AltPort
// and AltPort is Port, so InstancePorts names the second range and
// OnAlt(OnAlt(w)) is w. Supervisors and nginx see an ordinary worker.
func (w Worker) OnAlt() Worker {
	w.Port, w.AltPort = w.AltPort, w.Port
	return w
}
