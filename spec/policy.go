package spec

import (
	"fmt"
	"net/url"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// The node policy: what a spec pushed to the config repo may ask of a node.
// A push to the repo must not be root on every node, so every rule below is
// checked by Parse (hence by `drover validate` before the push and by the
// agent before prepare), each refusal naming the field and its line.
//
//   - user: a worker never runs as root (uid 0 by name: "root"; numeric ids
//     are not user names at all), unless the node allows it (allowRoot).
//   - dataDirs: only <prefix>/<worker> or below it, for a prefix the node
//     allows (default DataRoot): systemd chowns a worker's StateDirectory=
//     recursively, so a data dir elsewhere, e.g. /var/lib/postgresql, would
//     be handed to the worker.
//   - environmentFile: only under <prefix>/<worker>/ (default EnvRoot), so
//     that a worker cannot be pointed at node.yaml or another worker's
//     secrets.
//   - artifact URLs: https:// only, unless the node allows http:// too
//     (file:// would read node-local files, http:// leaks what is deployed;
//     the sha256 pin holds either way).
//   - env: no key that changes how a program is loaded rather than what it
//     does (see forbiddenEnv), nor any the node adds (forbiddenEnv).
//
// Parse checks a spec against DefaultPolicy; ParseFor against a node's own
// (node.yaml's policy section).
const (
	// DataRoot holds every worker's data directories, one directory each.
	DataRoot = "/var/lib/drover-data"
	// EnvRoot holds every worker's environment files, one directory each.
	EnvRoot = "/etc/drover/env"
)

// Policy is node.yaml's policy section: what a spec may ask of this node.
// Its defaults (DefaultPolicy) are the strictest sensible ones; a node
// widens or narrows them. The built-in forbidden env keys cannot be
// removed, only added to.
type Policy struct {
	// AllowRoot lets a worker name user: root.
	AllowRoot bool `yaml:"allowRoot" json:"allowRoot,omitempty"`
	// DataDirs are the prefixes P under which a worker's data dirs may be:
	// P/<worker> or below it.
	DataDirs []string `yaml:"dataDirs" json:"dataDirs"`
	// EnvironmentFiles are the prefixes P under which a worker's
	// environmentFile may be: below P/<worker>/.
	EnvironmentFiles []string `yaml:"environmentFiles" json:"environmentFiles"`
	// ArtifactSchemes are the URL schemes artifacts may be fetched over:
	// https, http.
	ArtifactSchemes []string `yaml:"artifactSchemes" json:"artifactSchemes"`
	// ForbiddenEnv are env keys refused besides the built-in ones; a key
	// ending in * is a prefix (AWS_*).
	ForbiddenEnv []string `yaml:"forbiddenEnv" json:"forbiddenEnv,omitempty"`
}

// DefaultPolicy is the policy of a node whose node.yaml has no policy
// section, and of Parse: no root, data dirs under DataRoot/<worker>,
// environment files under EnvRoot/<worker>/, https artifacts only.
func DefaultPolicy() Policy {
	return Policy{
		DataDirs:         []string{DataRoot},
		EnvironmentFiles: []string{EnvRoot},
		ArtifactSchemes:  []string{"https"},
	}
}

// artifactSchemes are the schemes a node's policy may allow.
var artifactSchemes = []string{"https", "http"}

// forbiddenEnvRE is an entry of policy.forbiddenEnv: a key, or a prefix
// ending in *.
var forbiddenEnvRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}\*?$`)

// policySection checks node.yaml's policy section. stateDir is the node's
// state dir, absolute: a prefix that holds it, or lies in it, would let a
// worker named after one of its directories (a worker "drover" under
// /var/lib) be given the releases, the journal or the git store.
func (v *validator) policySection(p *Policy, stateDir string) {
	etc := path.Dir(DefaultNodeFile)
	prefixes := func(field string, list []string, what string, inEtcOK bool) {
		var good []int
		for i, pre := range list {
			f := fmt.Sprintf("policy.%s[%d]", field, i)
			if msg := checkAbsPath(pre); msg != "" {
				v.fail(f, "%s", msg)
				continue
			}
			switch {
			case pre == "/":
				v.fail(f, "/ is not a prefix: each worker would get /<worker> for its %s", what)
			case within(stateDir, pre) || within(etc, pre):
				held := stateDir
				if within(etc, pre) {
					held = etc
				}
				v.fail(f, "%q holds %s: a worker named after a directory in it would get that directory for its %s", pre, held, what)
			case within(pre, stateDir):
				v.fail(f, "%q is inside the state dir %s, which is drover's alone", pre, stateDir)
			case within(pre, etc) && !inEtcOK:
				v.fail(f, "%q is inside %s, which holds node.yaml and the node's secrets", pre, etc)
			default:
				for _, j := range good {
					if other := list[j]; within(pre, other) || within(other, pre) {
						v.fail(f, "%q overlaps policy.%s[%d] %q: a worker named after a directory of one would get the other's workers' %s", pre, field, j, other, what)
					}
				}
				good = append(good, i)
			}
		}
	}
	prefixes("dataDirs", p.DataDirs, "data", false)
	prefixes("environmentFiles", p.EnvironmentFiles, "environment files", true)
	for i, s := range p.ArtifactSchemes {
		if !slices.Contains(artifactSchemes, s) {
			v.fail(fmt.Sprintf("policy.artifactSchemes[%d]", i), "%q is not a scheme drover fetches artifacts over (https, http)", s)
		}
	}
	for i, k := range p.ForbiddenEnv {
		if !forbiddenEnvRE.MatchString(k) {
			v.fail(fmt.Sprintf("policy.forbiddenEnv[%d]", i), "%q is not an environment variable name, or a prefix of one ending in * (AWS_*)", k)
		}
	}
}

// within reports whether p is dir or below it; both absolute and clean.
func within(p, dir string) bool {
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}

// absStateDir is the state dir as ParseNode will resolve it.
func absStateDir(stateDir, baseDir string) string {
	if !filepath.IsAbs(stateDir) {
		stateDir = filepath.Join(baseDir, stateDir)
	}
	return filepath.Clean(stateDir)
}

// forbiddenEnvPrefixes are refused as env key prefixes: the dynamic
// loader's LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT, … inject code into every
// program the worker starts.
var forbiddenEnvPrefixes = []string{"LD_"}

// forbiddenEnv are refused env keys, each with why: they load code or
// scripts into every program of their kind the worker starts, redirect
// its name lookups, or are systemd's to set. The worker's own code is the
// repo's anyway; these reach further, into every tool it runs.
var forbiddenEnv = map[string]string{
	"GCONV_PATH":       "loads shared objects into every program that converts a charset",
	"HOSTALIASES":      "rewrites host name lookups",
	"RESOLV_HOST_CONF": "rewrites host name lookups",
	"NOTIFY_SOCKET":    "is systemd's to set",
	"BASH_ENV":         "runs a script in every bash the worker starts",
	"ENV":              "runs a script in every sh the worker starts",
	"PYTHONSTARTUP":    "runs a script in every python the worker starts",
	"PERL5OPT":         "loads modules into every perl the worker starts",
}

// nodeLoaderFlagRE finds NODE_OPTIONS flags that load code from outside the
// bundle before the worker's own (--require, -r, --import, --loader,
// --experimental-loader) or open a debugger port (--inspect*).
var nodeLoaderFlagRE = regexp.MustCompile(`(^|\s)(-r|--require|--import|--loader|--experimental-loader|--inspect[a-z-]*)(=|\s|$)`)

// memorySizeRE is what a spec may give as a worker's memoryMax.
var memorySizeRE = regexp.MustCompile(`^([1-9][0-9]{0,14}[KMGT]?|infinity)$`)

// policy checks worker w (at field f) against the node policy (all but
// the node's own settings when reading a release back: see ParseRelease).
func (v *validator) policy(f string, w *Worker) {
	v.limits(f, w)
	v.builtinEnv(f, w)
	if v.released {
		return
	}
	p := &v.nodePolicy
	if w.User == "root" && !p.AllowRoot {
		v.fail(f+".user", "workers never run as root on this node (node.yaml policy.allowRoot); leave user out (a dynamic user drover-%s) or name an unprivileged user", w.Name)
	}
	var own []string
	for _, pre := range p.DataDirs {
		own = append(own, path.Join(pre, w.Name))
	}
	for j, d := range w.DataDirs {
		df := fmt.Sprintf("%s.dataDirs[%d]", f, j)
		switch {
		case len(own) == 0:
			v.fail(df, "this node allows no data dirs (node.yaml policy.dataDirs is empty)")
		case !slices.ContainsFunc(own, func(o string) bool { return within(d, o) }) || path.Clean(d) != d:
			v.fail(df, "%q is outside %s: a worker's data dirs live under its own directory of %s (node.yaml policy.dataDirs)", d, joinList(own, "and"), joinList(p.DataDirs, "and"))
		}
	}
	if e := w.EnvironmentFile; e != "" {
		var ownEnv []string
		for _, pre := range p.EnvironmentFiles {
			ownEnv = append(ownEnv, path.Join(pre, w.Name)+"/")
		}
		switch {
		case len(ownEnv) == 0:
			v.fail(f+".environmentFile", "this node allows no environment files (node.yaml policy.environmentFiles is empty)")
		case !slices.ContainsFunc(ownEnv, func(o string) bool { return strings.HasPrefix(e, o) }) || path.Clean(e) != e:
			v.fail(f+".environmentFile", "%q is outside %s: a worker's environment files live under its own directory of %s (node.yaml policy.environmentFiles)", e, joinList(ownEnv, "and"), joinList(p.EnvironmentFiles, "and"))
		}
	}
	for k, val := range w.Env {
		if entry := nodeForbidden(p.ForbiddenEnv, k); entry != "" && forbiddenEnvKey(k, val) == "" {
			v.fail(fmt.Sprintf("%s.env[%q]", f, k), "%s is not allowed on this node (node.yaml policy.forbiddenEnv: %s)", k, entry)
		}
	}
}

// limits checks w's memoryMax and tasksMax.
func (v *validator) limits(f string, w *Worker) {
	if w.MemoryMax != "" && !memorySizeRE.MatchString(w.MemoryMax) {
		v.fail(f+".memoryMax", "%q is not a size such as 512M (K, M, G or T) or infinity", w.MemoryMax)
	}
	if w.TasksMax < 0 || w.TasksMax > 65536 {
		v.fail(f+".tasksMax", "%d is not between 1 and 65536", w.TasksMax)
	}
}

// builtinEnv refuses the env keys no node may allow (forbiddenEnv).
func (v *validator) builtinEnv(f string, w *Worker) {
	for k, val := range w.Env {
		if why := forbiddenEnvKey(k, val); why != "" {
			v.fail(fmt.Sprintf("%s.env[%q]", f, k), "%s is not allowed: it %s", k, why)
		}
	}
}

// forbiddenEnvKey says why env key k (with value val) is refused, or "".
func forbiddenEnvKey(k, val string) string {
	for _, p := range forbiddenEnvPrefixes {
		if strings.HasPrefix(k, p) {
			return "changes what the dynamic loader loads into every program the worker starts"
		}
	}
	if why, ok := forbiddenEnv[k]; ok {
		return why
	}
	if k == "NODE_OPTIONS" && nodeLoaderFlagRE.MatchString(val) {
		return "loads code before the worker's own (--require, --import, --loader) or opens a debugger (--inspect); put it in the worker's exec instead"
	}
	return ""
}

// nodeForbidden is the entry of a node's forbiddenEnv that refuses key k,
// or "".
func nodeForbidden(list []string, k string) string {
	for _, e := range list {
		if pre, ok := strings.CutSuffix(e, "*"); (ok && strings.HasPrefix(k, pre)) || e == k {
			return e
		}
	}
	return ""
}

// artifactURL checks an artifact's URL against the node's schemes.
func (v *validator) artifactURL(f, raw string) {
	schemes := v.nodePolicy.ArtifactSchemes
	if v.released {
		schemes = artifactSchemes
	}
	if len(schemes) == 0 {
		v.fail(f, "this node fetches no artifacts (node.yaml policy.artifactSchemes is empty); use source")
		return
	}
	u, err := url.Parse(raw)
	if err != nil || !slices.Contains(schemes, u.Scheme) || u.Host == "" {
		var as []string
		for _, s := range schemes {
			as = append(as, s+"://")
		}
		v.fail(f, "%q is not an %s URL (the schemes this node's policy.artifactSchemes allows)", raw, joinList(as, "or"))
	}
}

// joinList joins "a", "a and b" or "a, b and c" (or conj for and).
func joinList(items []string, conj string) string {
	switch len(items) {
	case 0:
		return ""
	case 1:
		return items[0]
	}
	return strings.Join(items[:len(items)-1], ", ") + " " + conj + " " + items[len(items)-1]
}
