// Package plan says what would change on this node for a revision, computed
// without changing anything: the sites and workers added, removed or
// changed (their settings, their files compared by content id, a pinned
// artifact, secrets by key with no value shown) and the rendered nginx
// config's line diff.
//
// It reads the live release through what the release store left in
// STATE/releases/<rev> (its drover.yaml, its source ids, its secret env
// files) and never opens or locks the store, so it runs beside a live
// agent. It knows neither git nor the release store's format: the caller
// hands it the revision's tree and the functions that read source ids,
// render nginx.conf and decrypt secrets. control.Plan (`drover plan`) fetches
// the revision and wires those in; cmd/drover prints the Plan.
package plan

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"reflect"
	"sort"
	"strings"

	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/secrets"
	"github.com/drover-dev/drover/spec"
)

// Plan is what a node would change to reach the branch's revision.
type Plan struct {
	Node    string   `json:"node"`
	From    string   `json:"from"`
	To      string   `json:"to"`
	Commit  string   `json:"commit,omitempty"`
	Halted  string   `json:"halted,omitempty"`
	Sites   []Change `json:"sites"`
	Workers []Change `json:"workers"`
	// NginxDiff is the change of the rendered nginx config, in diff -u
	// style without context; empty when unchanged.
	NginxDiff []string `json:"nginxDiff,omitempty"`
	// Signature is, with repo.verify, who signed To or why it is refused.
	Signature string `json:"signature,omitempty"`
}

// Change is one site or worker: added, removed, changed or unchanged.
type Change struct {
	Name   string   `json:"name"`
	Action string   `json:"action"`
	What   []string `json:"what,omitempty"`
}

// Input is the revision to plan for and how to read this node.
type Input struct {
	Node     string // the node's name
	StateDir string // the node's state directory: its releases
	// Live is the node's live revision, "" when it has none.
	Live string
	// Rev is the revision to plan for; Tree is its config directory, Dir
	// in the repo, read with the node's Policy. When Tree can name a
	// file's content (ContentID, as gitsource's tree does), files are
	// compared without reading them.
	Rev    string
	Tree   fs.FS
	Dir    string
	Policy spec.Policy
	// SourceIDs reads what a release was made from, by tree ("sites/blog"):
	// each file's slash path to "<content id> <perm in octal>", each
	// symlink's to "-> <target>" (artifacts.SourceIDs).
	SourceIDs func(stateDir, rev string) (map[string]map[string]string, error)
	// Render renders the whole nginx config of a spec.
	Render func(*spec.Spec) ([]byte, error)
	// Decrypt decrypts a worker's secretEnv from a tree; nil when the node
	// has no secrets identity, and then no secret is compared.
	Decrypt func(w spec.Worker, tree fs.FS) (secrets.Vars, error)
}

// Make compares in.Rev with the live release. It fills Node, From, To,
// Sites, Workers and NginxDiff; Commit, Halted and Signature are the
// caller's.
func Make(in Input) (*Plan, error) {
	p := &Plan{Node: in.Node, From: in.Live, To: in.Rev}
	newSpec, err := ReadSpec(in.Dir, in.Tree, in.Policy)
	if err != nil {
		return nil, err
	}
	oldSpec := &spec.Spec{}
	var oldIDs map[string]map[string]string
	if in.Live != "" {
		data, err := os.ReadFile(layout.New(in.StateDir).ReleaseSpec(in.Live))
		if err != nil {
			return nil, err
		}
		if oldSpec, err = spec.ParseRelease("live "+spec.FileName, data); err != nil {
			return nil, err
		}
		// What the live release was made from, to compare by blob id.
		if oldIDs, err = in.SourceIDs(in.StateDir, in.Live); err != nil {
			return nil, err
		}
	}
	p.Sites = diffNamed(oldSpec.Sites, newSpec.Sites, func(s spec.Site) string { return s.Name },
		func(a, b spec.Site) []string {
			return diffContent(oldIDs["sites/"+a.Name], in.Tree, b.Source, a.Artifact, b.Artifact, !reflect.DeepEqual(stripSite(a), stripSite(b)))
		})
	p.Workers = diffNamed(oldSpec.Workers, newSpec.Workers, func(w spec.Worker) string { return w.Name },
		func(a, b spec.Worker) []string {
			return diffContent(oldIDs["workers/"+a.Name], in.Tree, b.Source, a.Artifact, b.Artifact, !reflect.DeepEqual(stripWorker(a), stripWorker(b)))
		})
	if in.Decrypt != nil {
		secretChanges(in, newSpec, p.Workers)
	}
	newConf, err := in.Render(newSpec)
	if err != nil {
		return nil, err
	}
	var oldConf []byte
	if in.Live != "" {
		if oldConf, err = in.Render(oldSpec); err != nil {
			return nil, err
		}
	}
	p.NginxDiff = lineDiff(string(oldConf), string(newConf))
	return p, nil
}

// ReadSpec reads and checks the drover.yaml of a revision's tree, the
// config directory dir in the repo, against the node's policy.
func ReadSpec(dir string, fsys fs.FS, policy spec.Policy) (*spec.Spec, error) {
	data, err := spec.ReadFS(fsys, spec.FileName, spec.PathIn(dir))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", spec.PathIn(dir), err)
	}
	sp, err := spec.ParseFor(spec.PathIn(dir), data, policy)
	if err != nil {
		return nil, err
	}
	return sp, spec.CheckTree(spec.PathIn(dir), sp, fsys)
}

// stripSite and stripWorker leave out where the content comes from, so
// that comparing them tells whether the configuration changed.
func stripSite(s spec.Site) spec.Site       { s.Source, s.Artifact = "", nil; return s }
func stripWorker(w spec.Worker) spec.Worker { w.Source, w.Artifact = "", nil; return w }

// diffNamed pairs old and new by name: added, removed, changed (what
// changed says how) or kept, sorted by name.
func diffNamed[T any](old, new []T, name func(T) string, changed func(a, b T) []string) []Change {
	byName := map[string]T{}
	for _, o := range old {
		byName[name(o)] = o
	}
	var out []Change
	for _, nw := range new {
		o, ok := byName[name(nw)]
		delete(byName, name(nw))
		switch what := []string(nil); {
		case !ok:
			out = append(out, Change{Name: name(nw), Action: "add"})
		default:
			if what = changed(o, nw); len(what) > 0 {
				out = append(out, Change{Name: name(nw), Action: "change", What: what})
			} else {
				out = append(out, Change{Name: name(nw), Action: "keep"})
			}
		}
	}
	for nm := range byName {
		out = append(out, Change{Name: nm, Action: "remove"})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// diffContent says what changed between the live version of a site or
// bundle (old: its files as the release store recorded them) and the next
// one: its settings, and its files (compared by git blob id, without
// reading them) or its pinned artifact.
func diffContent(old map[string]string, newTree fs.FS, newSrc string, oldArt, newArt *spec.Artifact, settings bool) []string {
	var what []string
	if settings {
		what = append(what, "settings")
	}
	switch {
	case newArt != nil || oldArt != nil:
		if oldArt == nil || newArt == nil || oldArt.SHA256 != newArt.SHA256 {
			what = append(what, "artifact")
		}
	default:
		b, err := fileIDs(newTree, newSrc)
		if err != nil {
			what = append(what, "files (could not compare: "+err.Error()+")")
			break
		}
		var added, removed, modified int
		for f, id := range b {
			if oid, ok := old[f]; !ok {
				added++
			} else if oid != id {
				modified++
			}
		}
		for f := range old {
			if _, ok := b[f]; !ok {
				removed++
			}
		}
		if added+removed+modified > 0 {
			what = append(what, fmt.Sprintf("files: %d added, %d changed, %d removed", added, modified, removed))
		}
	}
	return what
}

// fileIDs maps each file and symlink under dir of a git tree to its
// identity, in SourceIDs' form.
func fileIDs(fsys fs.FS, dir string) (map[string]string, error) {
	// gitsource's tree names a file's content by its git blob id
	// (artifacts.ContentIDFS).
	ider, ok := fsys.(interface {
		ContentID(name string) (string, error)
	})
	if !ok {
		return nil, errors.New("no content ids")
	}
	ids := map[string]string{}
	err := fs.WalkDir(fsys, dir, func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel := strings.TrimPrefix(name, dir+"/")
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			t, err := fs.ReadLink(fsys, name)
			if err != nil {
				return err
			}
			ids[rel] = "-> " + t
		case d.Type().IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			id, err := ider.ContentID(name)
			if err != nil {
				return err
			}
			ids[rel] = fmt.Sprintf("%s %o", id, info.Mode().Perm())
		}
		return nil
	})
	return ids, err
}

// secretChanges adds "secret KEY=<changed>" lines to the plan's workers:
// the live release's decrypted file against the new revision's, by key,
// values never shown.
func secretChanges(in Input, newSpec *spec.Spec, changes []Change) {
	for i := range changes {
		c := &changes[i]
		var w *spec.Worker
		for j := range newSpec.Workers {
			if newSpec.Workers[j].Name == c.Name {
				w = &newSpec.Workers[j]
			}
		}
		if w == nil || c.Action == "remove" {
			continue
		}
		var old secrets.Vars
		if in.Live != "" {
			if lines, err := secrets.ReadEnvFile(layout.New(in.StateDir).SecretsEnv(in.Live, w.Name)); err == nil {
				for _, l := range lines {
					k, v, _ := strings.Cut(l, "=")
					old = append(old, secrets.Var{Key: k, Value: v})
				}
			}
		}
		var next secrets.Vars
		if w.SecretEnv != "" {
			vs, err := in.Decrypt(*w, in.Tree)
			if err != nil {
				c.What = append(c.What, "secrets (could not compare: "+err.Error()+")")
				continue
			}
			next = vs
		}
		diff := secrets.Diff(old, next)
		for _, d := range diff {
			c.What = append(c.What, "secret "+d)
		}
		if len(diff) > 0 && c.Action == "keep" {
			c.Action = "change"
		}
	}
}

// lineDiff returns the lines removed ("-") and added ("+") from a to b, by
// longest common subsequence: the files are a few hundred lines.
func lineDiff(a, b string) []string {
	if a == b {
		return nil
	}
	x, y := strings.Split(a, "\n"), strings.Split(b, "\n")
	if a == "" {
		x = nil
	}
	lcs := make([][]int, len(x)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(y)+1)
	}
	for i := len(x) - 1; i >= 0; i-- {
		for j := len(y) - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out []string
	i, j := 0, 0
	for i < len(x) || j < len(y) {
		switch {
		case i < len(x) && j < len(y) && x[i] == y[j]:
			i++
			j++
		case j < len(y) && (i == len(x) || lcs[i][j+1] >= lcs[i+1][j]):
			out = append(out, "+ "+y[j])
			j++
		default:
			out = append(out, "- "+x[i])
			i++
		}
	}
	return out
}
