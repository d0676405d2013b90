package spec

import (
	"fmt"
	"net"
	"net/url"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"time"
	"unicode"
)

// validator checks a decoded file and collects every problem, each placed at
// the position of the offending field (or of its nearest written parent).
type validator struct {
	file string
	pos  map[string]Pos
	errs Errors
	// nodePolicy is what a spec may ask of the node (policy.go).
	nodePolicy Policy
	// released: the spec is read back from a release (ParseRelease), and
	// the node policy's own settings are not checked again.
	released bool
}

func (v *validator) fail(field, format string, args ...any) {
	v.errs = append(v.errs, &FieldError{File: v.file, Pos: v.posOf(field), Field: field, Msg: fmt.Sprintf(format, args...)})
}

// posOf finds where field was written, or where its closest parent was.
func (v *validator) posOf(field string) Pos {
	for f := field; f != ""; {
		if p, ok := v.pos[f]; ok {
			return p
		}
		i := strings.LastIndexAny(f, ".[")
		if i < 0 {
			break
		}
		f = f[:i]
	}
	return v.pos[""]
}

var (
	nameRE       = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$`)
	headerNameRE = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)
	envKeyRE     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
	userRE       = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
	sha256RE     = regexp.MustCompile(`^[0-9a-f]{64}$`)
	urlPathRE    = regexp.MustCompile(`^/[A-Za-z0-9/._~%+-]*$`)
	bodySizeRE   = regexp.MustCompile(`^[0-9]{1,9}[kKmMgG]?$`)
	hostLabelRE  = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	nodeNameRE   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,62})$`)
	// refRE is a conservative subset of git's ref-name rules.
	refRE = regexp.MustCompile(`^[A-Za-z0-9._/-]{1,200}$`)
)

// checkServerName accepts a hostname, or a wildcard whose "*" is a whole
// first label ("*.example.com"), as nginx's server_name understands them.
func checkServerName(s string) string {
	if s == "" {
		return "must not be empty"
	}
	if len(s) > 253 {
		return "is longer than 253 characters"
	}
	labels := strings.Split(s, ".")
	for i, l := range labels {
		if i == 0 && l == "*" && len(labels) > 2 {
			continue
		}
		if !hostLabelRE.MatchString(l) {
			return fmt.Sprintf("%q is not a lowercase hostname or a wildcard such as *.example.com", s)
		}
	}
	return ""
}

// checkText refuses characters that would end or extend a directive in an
// nginx or systemd file: control characters (newline, NUL) always, and the
// characters in extra.
func checkText(s, extra string) string {
	for _, r := range s {
		if r == 0 || r == '\n' || r == '\r' || unicode.IsControl(r) {
			return fmt.Sprintf("%q contains a control character (newline, NUL, ...)", s)
		}
		if strings.ContainsRune(extra, r) {
			return fmt.Sprintf("%q contains %q, which is not allowed here", s, r)
		}
	}
	return ""
}

// nginxUnsafe are characters refused in values drover writes into nginx
// directives, even quoted: nginx expands $variables in quoted strings and
// has no escape for them, and a quote or backslash would end the string.
const nginxUnsafe = "\"\\$`"

// checkRepoPath refuses paths that could leave the repo directory.
func checkRepoPath(p string) string {
	if p == "" {
		return "must not be empty"
	}
	if msg := checkText(p, nginxUnsafe+";{}"); msg != "" {
		return msg
	}
	if path.IsAbs(p) || strings.HasPrefix(p, `\`) {
		return fmt.Sprintf("%q is absolute; write a path inside the repo", p)
	}
	for _, el := range strings.Split(p, "/") {
		if el == ".." {
			return fmt.Sprintf("%q leaves the repo (contains ..)", p)
		}
	}
	if path.Clean(p) != strings.TrimSuffix(p, "/") {
		return fmt.Sprintf("%q is not a clean path (write %q)", p, path.Clean(p))
	}
	return ""
}

func checkAbsPath(p string) string {
	if msg := checkText(p, nginxUnsafe+";{}"); msg != "" {
		return msg
	}
	if !path.IsAbs(p) {
		return fmt.Sprintf("%q must be an absolute path", p)
	}
	if path.Clean(p) != p {
		return fmt.Sprintf("%q is not a clean path (write %q)", p, path.Clean(p))
	}
	return ""
}

func (v *validator) check(field, msg string) {
	if msg != "" {
		v.fail(field, "%s", msg)
	}
}

func (v *validator) port(field string, p int) {
	if p < 1 || p > 65535 {
		v.fail(field, "port %d is not between 1 and 65535", p)
	}
}

func (v *validator) spec(s *Spec) {
	if _, ok := v.pos["version"]; !ok {
		v.fail("version", "is required (write version: 1)")
	} else if s.Version != 1 {
		v.fail("version", "version %d is not supported; this drover reads version 1", s.Version)
	}
	v.rollout(&s.Rollout)
	v.nginx(&s.Nginx)
	v.extraChecks(s.Health)

	siteNames := map[string]string{}
	hostOwner := map[string]string{} // server name -> site field that serves it
	for i := range s.Sites {
		f := fmt.Sprintf("sites[%d]", i)
		v.site(f, &s.Sites[i])
		name := s.Sites[i].Name
		if prev, ok := siteNames[name]; ok && name != "" {
			v.fail(f+".name", "site %q is already defined at %s", name, prev)
		} else {
			siteNames[name] = f
		}
		for j, h := range s.Sites[i].ServerNames {
			if prev, ok := hostOwner[h]; ok {
				v.fail(fmt.Sprintf("%s.serverNames[%d]", f, j), "server name %q is already served by %s", h, prev)
			} else {
				hostOwner[h] = f
			}
		}
	}

	workerNames := map[string]string{}
	type portUse struct {
		field    string
		from, to int
	}
	var ports []portUse
	routes := map[string]string{}
	for i := range s.Workers {
		f := fmt.Sprintf("workers[%d]", i)
		w := &s.Workers[i]
		v.worker(f, w)
		if prev, ok := workerNames[w.Name]; ok && w.Name != "" {
			v.fail(f+".name", "worker %q is already defined at %s", w.Name, prev)
		} else {
			workerNames[w.Name] = f
		}
		if w.Port > 0 && w.Instances > 0 {
			from, to := w.Port, w.Port+w.Instances-1
			for _, p := range ports {
				if from <= p.to && p.from <= to {
					v.fail(f+".port", "ports %d-%d overlap the ports %d-%d of %s", from, to, p.from, p.to, p.field)
				}
			}
			for _, np := range []struct {
				name string
				port int
			}{{"nginx.httpsPort", s.Nginx.HTTPSPort}, {"nginx.healthPort", s.Nginx.HealthPort}} {
				if from <= np.port && np.port <= to {
					v.fail(f+".port", "ports %d-%d include %s %d", from, to, np.name, np.port)
				}
			}
			ports = append(ports, portUse{f, from, to})
		}
		for j, r := range w.Routes {
			key := r.ServerName + r.Path
			rf := fmt.Sprintf("%s.routes[%d]", f, j)
			if prev, ok := routes[key]; ok {
				v.fail(rf, "route %s%s is already taken by %s", r.ServerName, r.Path, prev)
			} else {
				routes[key] = rf
			}
			if owner, ok := hostOwner[r.ServerName]; ok && r.Path == "/" {
				v.fail(rf+".path", "path / of %s is served by %s; route a sub-path such as /api/", r.ServerName, owner)
			}
		}
	}
	v.altPorts(s)
	if s.Migrations != nil {
		v.check("migrations.dir", checkRepoPath(s.Migrations.Dir))
	}
}

func (v *validator) rollout(r *Rollout) {
	if r.MaxUnavailable < 1 {
		v.fail("rollout.maxUnavailable", "must be at least 1")
	}
	positive := func(field string, d Duration) {
		if d <= 0 {
			v.fail(field, "must be longer than 0s")
		}
	}
	positive("rollout.drainTimeout", r.DrainTimeout)
	positive("rollout.healthTimeout", r.HealthTimeout)
	positive("rollout.progressDeadline", r.ProgressDeadline)
	if r.ProgressDeadline > 0 && r.ProgressDeadline < r.HealthTimeout+r.DrainTimeout {
		v.fail("rollout.progressDeadline", "%s is shorter than drainTimeout + healthTimeout (%s)",
			r.ProgressDeadline, (r.HealthTimeout + r.DrainTimeout).D())
	}
	if r.OnFailure != "rollback" && r.OnFailure != "halt" {
		v.fail("rollout.onFailure", "%q is not rollback or halt", r.OnFailure)
	}
	v.canary(r.Canary)
	if r.Handover != HandoverAuto && r.Handover != HandoverRestart && r.Handover != HandoverOverlap {
		v.fail("rollout.handover", "%q is not auto, overlap or restart", r.Handover)
	}
}

func (v *validator) nginx(n *Nginx) {
	v.port("nginx.healthPort", n.HealthPort)
	v.port("nginx.httpsPort", n.HTTPSPort)
	if n.HealthPort == n.HTTPSPort {
		v.fail("nginx.healthPort", "must differ from httpsPort (%d)", n.HTTPSPort)
	}
	if !urlPathRE.MatchString(n.HealthPath) {
		v.fail("nginx.healthPath", "%q is not a URL path such as /healthz", n.HealthPath)
	}
	if n.TLS != nil {
		v.check("nginx.tls.certificate", checkAbsPath(n.TLS.Certificate))
		v.check("nginx.tls.key", checkAbsPath(n.TLS.Key))
	}
	if n.ClientMaxBodySize != "" && !bodySizeRE.MatchString(n.ClientMaxBodySize) {
		v.fail("nginx.clientMaxBodySize", "%q is not a size such as 10m", n.ClientMaxBodySize)
	}
}

func (v *validator) name(field, name string) {
	if !nameRE.MatchString(name) {
		v.fail(field, "%q must be 1-42 lowercase letters, digits and dashes, starting and ending with a letter or digit", name)
	}
}

func (v *validator) source(f, src string, a *Artifact) {
	switch {
	case src == "" && a == nil:
		v.fail(f+".source", "one of source or artifact is required")
	case src != "" && a != nil:
		v.fail(f+".artifact", "give either source or artifact, not both")
	case src != "":
		v.check(f+".source", checkRepoPath(src))
		if wholeRepo(src) {
			v.fail(f+".source", "%q is the whole config directory (.git, migrations, node secrets' names and all); put the site's or worker's files in a directory of their own", src)
		}
	default:
		// The node policy's schemes (https only by default): file:// would
		// read the node's own files, such as /etc/drover/*, into a release
		// nginx serves.
		v.artifactURL(f+".artifact.url", a.URL)
		if !sha256RE.MatchString(a.SHA256) {
			v.fail(f+".artifact.sha256", "%q is not 64 lowercase hex digits", a.SHA256)
		}
		if a.StripComponents < 0 || a.StripComponents > 16 {
			v.fail(f+".artifact.stripComponents", "must be between 0 and 16")
		}
	}
}

func (v *validator) site(f string, s *Site) {
	v.name(f+".name", s.Name)
	if len(s.ServerNames) == 0 {
		v.fail(f+".serverNames", "at least one server name is required")
	}
	for j, h := range s.ServerNames {
		v.check(fmt.Sprintf("%s.serverNames[%d]", f, j), checkServerName(h))
	}
	v.source(f, s.Source, s.Artifact)
	for k, val := range s.Headers {
		hf := fmt.Sprintf("%s.headers[%q]", f, k)
		if !headerNameRE.MatchString(k) {
			v.fail(hf, "%q is not a header name (letters, digits and dashes)", k)
		}
		v.check(hf, checkText(val, nginxUnsafe))
	}
	if s.Health != nil {
		if !urlPathRE.MatchString(s.Health.Path) {
			v.fail(f+".health.path", "%q is not a URL path", s.Health.Path)
		}
		if s.Health.Status < 100 || s.Health.Status > 599 {
			v.fail(f+".health.status", "%d is not an HTTP status", s.Health.Status)
		}
	}
}

func (v *validator) worker(f string, w *Worker) {
	v.name(f+".name", w.Name)
	v.source(f, w.Source, w.Artifact)
	if len(w.Exec) == 0 {
		v.fail(f+".exec", "is required: the command line of one instance, as a list")
	}
	for j, a := range w.Exec {
		af := fmt.Sprintf("%s.exec[%d]", f, j)
		if a == "" {
			v.fail(af, "must not be empty")
		}
		v.check(af, checkText(a, ""))
	}
	for j, a := range w.Install {
		af := fmt.Sprintf("%s.install[%d]", f, j)
		if a == "" {
			v.fail(af, "must not be empty")
		}
		v.check(af, checkText(a, ""))
	}
	if w.Instances < 1 || w.Instances > 64 {
		v.fail(f+".instances", "%d is not between 1 and 64", w.Instances)
	}
	if w.Port < 1024 || w.Port+w.Instances-1 > 65535 {
		v.fail(f+".port", "ports %d-%d are not between 1024 and 65535", w.Port, w.Port+w.Instances-1)
	}
	for k, val := range w.Env {
		ef := fmt.Sprintf("%s.env[%q]", f, k)
		if !envKeyRE.MatchString(k) {
			v.fail(ef, "%q is not an environment variable name", k)
		} else if k == "PORT" {
			v.fail(ef, "PORT is set by drover for each instance (port + instance number)")
		}
		v.check(ef, checkText(val, ""))
	}
	if w.EnvironmentFile != "" {
		v.check(f+".environmentFile", checkAbsPath(w.EnvironmentFile))
	}
	if w.SecretEnv != "" {
		v.check(f+".secretEnv", checkRepoPath(w.SecretEnv))
	}
	if w.User != "" && !userRE.MatchString(w.User) {
		v.fail(f+".user", "%q is not a user name", w.User)
	}
	for j, d := range w.DataDirs {
		v.check(fmt.Sprintf("%s.dataDirs[%d]", f, j), checkAbsPath(d))
	}
	v.policy(f, w)
	if w.Health.Path == "" {
		v.fail(f+".health.path", "is required: the path each instance answers when healthy, e.g. /healthz")
	} else if !urlPathRE.MatchString(w.Health.Path) {
		v.fail(f+".health.path", "%q is not a URL path", w.Health.Path)
	}
	if w.Health.Status < 100 || w.Health.Status > 599 {
		v.fail(f+".health.status", "%d is not an HTTP status", w.Health.Status)
	}
	if w.Health.Successes < 1 || w.Health.Successes > 100 {
		v.fail(f+".health.successes", "%d is not between 1 and 100", w.Health.Successes)
	}
	for j, r := range w.Routes {
		rf := fmt.Sprintf("%s.routes[%d]", f, j)
		v.check(rf+".serverName", checkServerName(r.ServerName))
		if !urlPathRE.MatchString(r.Path) {
			v.fail(rf+".path", "%q is not a URL path prefix such as / or /api/", r.Path)
		}
	}
}

func (v *validator) node(n *Node) {
	if !nodeNameRE.MatchString(n.Name) {
		v.fail("name", "%q must be letters, digits, dots, dashes and underscores", n.Name)
	}
	if n.StateDir == "" {
		v.fail("stateDir", "must not be empty")
	} else {
		v.check("stateDir", checkText(n.StateDir, nginxUnsafe+";{}"))
	}
	if n.KeepReleases < 2 {
		v.fail("keepReleases", "must be at least 2: the live release and the one to roll back to")
	}
	r := &n.Repo
	if r.URL == "" {
		v.fail("repo.url", "is required")
	} else if msg := checkRepoURL(r.URL); msg != "" {
		v.fail("repo.url", "%s", msg)
	}
	if !refRE.MatchString(r.Branch) || strings.Contains(r.Branch, "..") || strings.HasPrefix(r.Branch, "-") {
		v.fail("repo.branch", "%q is not a branch name", r.Branch)
	}
	if r.Dir != "" {
		v.check("repo.dir", checkRepoPath(r.Dir))
	}
	if r.PollInterval.D() < time.Second {
		v.fail("repo.pollInterval", "%s is shorter than 1s", r.PollInterval)
	}
	if r.SSHKeyFile != "" && r.KnownHostsFile == "" {
		v.fail("repo.knownHostsFile", "is required with sshKeyFile: drover does not trust unknown host keys")
	}
	if r.TokenFile != "" && !strings.HasPrefix(r.URL, "https://") && !strings.HasPrefix(r.URL, "http://") {
		v.fail("repo.tokenFile", "a token is only sent over http(s) URLs")
	}
	ng := &n.Nginx
	if ng.Binary == "" {
		v.fail("nginx.binary", "must not be empty")
	}
	if ng.Config == "" {
		v.fail("nginx.config", "must not be empty")
	}
	for field, s := range map[string]string{"nginx.config": ng.Config, "nginx.prefix": ng.Prefix, "nginx.pidFile": ng.PIDFile} {
		v.check(field, checkText(s, nginxUnsafe+";{}"))
	}
	if ng.User != "" && !userRE.MatchString(ng.User) {
		v.fail("nginx.user", "%q is not a user name", ng.User)
	}
	if ng.Listen != "" && net.ParseIP(ng.Listen) == nil {
		v.fail("nginx.listen", "%q is not an IP address", ng.Listen)
	}
	if ng.HTTPSPort != 0 {
		v.port("nginx.httpsPort", ng.HTTPSPort)
	}
	if ng.HealthPort != 0 {
		v.port("nginx.healthPort", ng.HealthPort)
	}
	if t := ng.TLS; t != nil {
		if !t.SelfSigned && (t.Certificate == "" || t.Key == "") {
			v.fail("nginx.tls", "give certificate and key, or selfSigned: true")
		}
		if t.SelfSigned && (t.Certificate != "" || t.Key != "") {
			v.fail("nginx.tls.selfSigned", "drover writes the self-signed pair itself; remove certificate and key")
		}
		for field, s := range map[string]string{"nginx.tls.certificate": t.Certificate, "nginx.tls.key": t.Key} {
			v.check(field, checkText(s, nginxUnsafe+";{}"))
		}
	}
	if ng.StatusListen != "" {
		if host, _, err := net.SplitHostPort(ng.StatusListen); err != nil || !net.ParseIP(host).IsLoopback() {
			v.fail("nginx.statusListen", "%q is not a loopback host:port such as 127.0.0.1:8099", ng.StatusListen)
		}
	}
	for i, inc := range ng.Includes {
		v.check(fmt.Sprintf("nginx.includes[%d]", i), checkText(inc, nginxUnsafe+";{}"))
	}
	v.repoVerify(r.Verify)
	v.nodeSecrets(n.Secrets)
	v.cluster(n.Cluster)
	v.webhook(n.Webhook)
	v.lb(&n.LB)
	v.guard(&n.Guard)
	if n.History.Keep < 1 || n.History.Keep > 100000 {
		v.fail("history.keep", "%d is not between 1 and 100000", n.History.Keep)
	}
	v.notify(n.Notify)
	if m := n.Metrics; m != nil {
		if _, port, err := net.SplitHostPort(m.Listen); err != nil || port == "" {
			v.fail("metrics.listen", "%q is not host:port (e.g. 127.0.0.1:9469)", m.Listen)
		}
	}
	if n.Database != nil && n.Database.DSNFile == "" {
		v.fail("database.dsnFile", "is required: a file holding the PostgreSQL URL")
	}
	switch n.Supervisor {
	case "", "systemd", "exec":
	default:
		v.fail("supervisor", "%q is not systemd or exec", n.Supervisor)
	}
	switch n.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		v.fail("log.level", "%q is not debug, info, warn or error", n.Log.Level)
	}
	if n.Log.Format != "text" && n.Log.Format != "json" {
		v.fail("log.format", "%q is not text or json", n.Log.Format)
	}
}

// localRepoPath reports whether a repo URL names a local directory, and
// which: file:///abs, /abs, ./rel or ../rel.
func localRepoPath(u string) (string, bool) {
	if p, ok := strings.CutPrefix(u, "file://"); ok {
		return p, true
	}
	if strings.HasPrefix(u, "/") || strings.HasPrefix(u, "./") || strings.HasPrefix(u, "../") {
		return u, true
	}
	return "", false
}

func checkRepoURL(s string) string {
	if msg := checkText(s, ""); msg != "" {
		return msg
	}
	if _, ok := localRepoPath(s); ok {
		return ""
	}
	if u, err := url.Parse(s); err == nil && u.Scheme != "" {
		switch u.Scheme {
		case "https", "http", "ssh":
			if u.Host == "" {
				return fmt.Sprintf("%q has no host", s)
			}
			if _, set := u.User.Password(); set {
				return "put no password in the URL; use tokenFile"
			}
			return ""
		default:
			return fmt.Sprintf("scheme %q is not supported (https, ssh, file)", u.Scheme)
		}
	}
	// scp-like: git@host:owner/repo.git
	if user, rest, ok := strings.Cut(s, "@"); ok && user != "" {
		if host, p, ok := strings.Cut(rest, ":"); ok && host != "" && p != "" {
			return ""
		}
	}
	return fmt.Sprintf("%q is not a repository URL (https://…, ssh://…, git@host:path, file:///path or ./path)", s)
}

func (v *validator) cluster(c *Cluster) {
	if c == nil {
		return
	}
	if !nameRE.MatchString(c.Name) {
		v.fail("cluster.name", "%q must be lowercase letters, digits and dashes", c.Name)
	}
	switch {
	case len(c.Redis) == 0 && len(c.SentinelAddrs) == 0:
		v.fail("cluster.redis", "give the Redis address (or several independent masters), or sentinels with masterName")
	case len(c.Redis) > 0 && len(c.SentinelAddrs) > 0:
		v.fail("cluster.sentinels", "give either redis or sentinels, not both")
	case len(c.SentinelAddrs) > 0 && c.MasterName == "":
		v.fail("cluster.masterName", "is required with sentinels")
	case len(c.Redis) == 2:
		v.fail("cluster.redis", "2 independent masters cannot form a majority; give 1, or 3 or more")
	}
	for i, a := range append(append([]string{}, c.Redis...), c.SentinelAddrs...) {
		field := fmt.Sprintf("cluster.redis[%d]", i)
		if i >= len(c.Redis) {
			field = fmt.Sprintf("cluster.sentinels[%d]", i-len(c.Redis))
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			v.fail(field, "%q is not host:port", a)
		}
	}
	// caFile and db were once checked only by cluster.Open, under its own
	// field names; spec is where node.yaml is validated, so they are here.
	if c.CAFile != "" && !c.TLS {
		v.fail("cluster.caFile", "is set but tls is not: set tls: true, or drop caFile")
	}
	if c.DB < 0 {
		v.fail("cluster.db", "%d is negative", c.DB)
	}
	if c.LockExpiry.D() < 2*time.Second {
		v.fail("cluster.lockExpiry", "%s is shorter than 2s", c.LockExpiry)
	}
	if c.HeartbeatTTL.D() < time.Second {
		v.fail("cluster.heartbeatTTL", "%s is shorter than 1s", c.HeartbeatTTL)
	}
}

func (v *validator) webhook(w *Webhook) {
	if w == nil {
		return
	}
	if _, _, err := net.SplitHostPort(w.Listen); err != nil {
		v.fail("webhook.listen", "%q is not host:port (e.g. 127.0.0.1:9095)", w.Listen)
	}
	if !urlPathRE.MatchString(w.Path) {
		v.fail("webhook.path", "%q is not a URL path", w.Path)
	}
	if w.ServerName != "" {
		v.check("webhook.serverName", checkServerName(w.ServerName))
	}
	if w.SecretFile == "" {
		v.fail("webhook.secretFile", "is required: a file holding the webhook secret")
	}
	switch w.Provider {
	case "", "github", "gitlab", "gitea", "forgejo", "bitbucket":
	default:
		v.fail("webhook.provider", "%q is not github, gitlab, gitea, forgejo or bitbucket", w.Provider)
	}
}

func (v *validator) lb(l *LB) {
	// This is the only validation of node.yaml's lb section: lbdrain's own
	// Config.Validate only catches a Config built wrong in code, so every
	// rule a user can break is checked here, under node.yaml's field name.
	switch l.Driver {
	case "none":
	case "healthcheck":
		hc := l.HealthCheck
		if hc.Interval.D() < 100*time.Millisecond {
			v.fail("lb.healthcheck.interval", "%s is shorter than 100ms", hc.Interval)
		}
		if hc.UnhealthyThreshold < 1 {
			v.fail("lb.healthcheck.unhealthyThreshold", "must be at least 1 (the LB's fall count), got %d", hc.UnhealthyThreshold)
		}
		if hc.HealthyThreshold < 1 {
			v.fail("lb.healthcheck.healthyThreshold", "must be at least 1 (the LB's rise count), got %d", hc.HealthyThreshold)
		}
	case "haproxy":
		x := l.HAProxy
		if x.Socket == "" {
			v.fail("lb.haproxy.socket", "is required with driver haproxy: a unix socket path or host:port of the runtime API")
		}
		// The names go into runtime API commands (`set server B/S ...`),
		// where a space or slash would split them.
		for _, f := range []struct{ field, what, val string }{
			{"lb.haproxy.backend", "backend", x.Backend}, {"lb.haproxy.server", "server", x.Server},
		} {
			if f.val == "" {
				v.fail(f.field, "is required with driver haproxy")
			} else if strings.ContainsAny(f.val, "/ \n") {
				v.fail(f.field, "%q must be a %s name without spaces or slashes", f.val, f.what)
			}
		}
	case "digitalocean":
		d := l.DigitalOcean
		if d.LoadBalancerID == "" {
			v.fail("lb.digitalocean.loadBalancerID", "is required with driver digitalocean")
		}
		if d.TokenFile == "" {
			v.fail("lb.digitalocean.tokenFile", "is required: a file holding the API token")
		}
		for _, f := range []struct{ field, url string }{
			{"lb.digitalocean.apiURL", d.APIURL}, {"lb.digitalocean.metadataURL", d.MetadataURL},
		} {
			if u, err := url.Parse(f.url); f.url != "" && (err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https")) {
				v.fail(f.field, "%q is not an http(s) URL", f.url)
			}
		}
	default:
		v.fail("lb.driver", "%q is not none, healthcheck, haproxy or digitalocean", l.Driver)
	}
}

func (v *validator) guard(g *Guard) {
	if g.Disabled {
		return
	}
	if g.Interval.D() < 100*time.Millisecond || g.Interval.D() > 10*time.Minute {
		v.fail("guard.interval", "%s is not between 100ms and 10m", g.Interval)
	}
	for _, c := range []struct {
		field string
		n     int
	}{{"guard.unhealthyAfter", g.UnhealthyAfter}, {"guard.healthyAfter", g.HealthyAfter}} {
		if c.n < 1 || c.n > 100 {
			v.fail(c.field, "%d is not between 1 and 100", c.n)
		}
	}
	if g.RestartAfter.D() < g.Interval.D() {
		v.fail("guard.restartAfter", "%s is shorter than guard.interval (%s)", g.RestartAfter, g.Interval)
	}
}

func (v *validator) notify(nt *Notify) {
	if nt == nil {
		return
	}
	if len(nt.Webhooks) == 0 && nt.Email == nil {
		v.fail("notify", "names no receiver: add webhooks or email")
	}
	for i, w := range nt.Webhooks {
		f := fmt.Sprintf("notify.webhooks[%d]", i)
		switch {
		case (w.URL == "") == (w.URLFile == ""):
			v.fail(f, "set one of url or urlFile")
		case w.URL != "" && !strings.HasPrefix(w.URL, "http://") && !strings.HasPrefix(w.URL, "https://"):
			v.fail(f+".url", "%q is not an http(s) URL", w.URL)
		}
		if w.Format != "json" && w.Format != "slack" {
			v.fail(f+".format", "%q is not json or slack", w.Format)
		}
	}
	if e := nt.Email; e != nil {
		if len(e.To) == 0 {
			v.fail("notify.email.to", "is required: who gets the mail")
		}
		if e.From == "" {
			v.fail("notify.email.from", "is required")
		}
		if !filepath.IsAbs(e.Sendmail) {
			v.fail("notify.email.sendmail", "%q is not an absolute path", e.Sendmail)
		}
	}
	if d := nt.Timeout.D(); d < 100*time.Millisecond || d > 5*time.Minute {
		v.fail("notify.timeout", "%s is not between 100ms and 5m", nt.Timeout)
	}
}
