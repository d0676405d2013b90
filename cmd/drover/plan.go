package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"

	"github.com/drover-dev/drover/artifacts"
	"github.com/drover-dev/drover/cluster"
	"github.com/drover-dev/drover/reconcile"
	"github.com/drover-dev/drover/spec"
)

// plan is what a node would change to reach the branch's revision.
type plan struct {
	Node    string   `json:"node"`
	From    string   `json:"from"`
	To      string   `json:"to"`
	Commit  string   `json:"commit,omitempty"`
	Halted  string   `json:"halted,omitempty"`
	Sites   []change `json:"sites"`
	Workers []change `json:"workers"`
	// NginxDiff is the change of the rendered nginx config, in diff -u
	// style without context; empty when unchanged.
	NginxDiff []string `json:"nginxDiff,omitempty"`
}

// change is one site or worker: added, removed, changed or unchanged.
type change struct {
	Name   string   `json:"name"`
	Action string   `json:"action"`
	What   []string `json:"what,omitempty"`
}

func cmdPlan(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags := newFlags("plan", stderr)
	config := flags.String("config", spec.DefaultNodeFile, "node config file")
	output := flags.String("o", "text", "output format: text or json")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	if *output != "text" && *output != "json" {
		return usageError{"-o must be text or json"}
	}
	cfg, err := spec.LoadNode(*config)
	if err != nil {
		return err
	}
	p, err := makePlan(ctx, cfg)
	if err != nil {
		return err
	}
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(p)
	}
	p.print(stdout)
	return nil
}

// makePlan compares the branch's revision with this node's live release. It
// reads the node's state but never locks or changes it, so it runs beside a
// live agent.
func makePlan(ctx context.Context, cfg *spec.Node) (*plan, error) {
	log := slog.New(slog.DiscardHandler)
	repo, err := openCLIRepo(cfg, log)
	if err != nil {
		return nil, err
	}
	defer repo.Close()
	rev, err := repo.Remote(ctx)
	if err != nil {
		return nil, err
	}
	if err := repo.Fetch(ctx, rev); err != nil {
		return nil, err
	}
	cur := ""
	if _, err := os.Lstat(filepath.Join(cfg.StateDir, "current")); err == nil {
		if cur, err = liveRevision(cfg); err != nil {
			return nil, err
		}
	}
	p := &plan{Node: cfg.Name, From: cur, To: rev}
	if c, err := repo.Commit(ctx, rev); err == nil {
		p.Commit = fmt.Sprintf("%s (%s, %s)", c.Message, c.Author, c.When.Format("2006-01-02 15:04"))
	}
	err = withCluster(ctx, "", cfg, func(_ *spec.Node, c *cluster.Cluster) error {
		var reg reconcile.Registry = &reconcile.FileRegistry{Dir: cfg.StateDir}
		if c != nil {
			reg = c
		}
		reason, halted, err := reg.Halted(ctx, rev)
		if err == nil && halted {
			p.Halted = reason
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	newTree, err := repo.Tree(ctx, rev, cfg.Repo.Dir)
	if err != nil {
		return nil, err
	}
	newSpec, err := readSpec(cfg.Repo.Dir, newTree)
	if err != nil {
		return nil, err
	}
	oldSpec := &spec.Spec{}
	var oldIDs map[string]map[string]string
	if cur != "" {
		data, err := os.ReadFile(filepath.Join(cfg.StateDir, "releases", cur, spec.FileName))
		if err != nil {
			return nil, err
		}
		if oldSpec, err = spec.Parse("live "+spec.FileName, data); err != nil {
			return nil, err
		}
		// What the live release was made from, to compare by blob id.
		if oldIDs, err = artifacts.SourceIDs(cfg.StateDir, cur); err != nil {
			return nil, err
		}
	}
	p.Sites = diffNamed(oldSpec.Sites, newSpec.Sites, func(s spec.Site) string { return s.Name },
		func(a, b spec.Site) []string {
			return diffContent(oldIDs["sites/"+a.Name], newTree, b.Source, a.Artifact, b.Artifact, !reflect.DeepEqual(stripSite(a), stripSite(b)))
		})
	p.Workers = diffNamed(oldSpec.Workers, newSpec.Workers, func(w spec.Worker) string { return w.Name },
		func(a, b spec.Worker) []string {
			return diffContent(oldIDs["workers/"+a.Name], newTree, b.Source, a.Artifact, b.Artifact, !reflect.DeepEqual(stripWorker(a), stripWorker(b)))
		})
	web := newWebServer(cfg, filepath.Join(cfg.StateDir, "current"), log)
	newConf, err := web.render(newSpec)
	if err != nil {
		return nil, err
	}
	var oldConf []byte
	if cur != "" {
		if oldConf, err = web.render(oldSpec); err != nil {
			return nil, err
		}
	}
	p.NginxDiff = lineDiff(string(oldConf), string(newConf))
	return p, nil
}

func readSpec(dir string, fsys fs.FS) (*spec.Spec, error) {
	data, err := fs.ReadFile(fsys, spec.FileName)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", spec.PathIn(dir), err)
	}
	sp, err := spec.Parse(spec.PathIn(dir), data)
	if err != nil {
		return nil, err
	}
	return sp, spec.CheckTree(spec.PathIn(dir), sp, fsys)
}

// stripSite and stripWorker leave out where the content comes from, so
// that comparing them tells whether the configuration changed.
func stripSite(s spec.Site) spec.Site       { s.Source, s.Artifact = "", nil; return s }
func stripWorker(w spec.Worker) spec.Worker { w.Source, w.Artifact = "", nil; return w }

func diffNamed[T any](old, new []T, name func(T) string, changed func(a, b T) []string) []change {
	byName := map[string]T{}
	for _, o := range old {
		byName[name(o)] = o
	}
	var out []change
	for _, nw := range new {
		o, ok := byName[name(nw)]
		delete(byName, name(nw))
		switch what := []string(nil); {
		case !ok:
			out = append(out, change{Name: name(nw), Action: "add"})
		default:
			if what = changed(o, nw); len(what) > 0 {
				out = append(out, change{Name: name(nw), Action: "change", What: what})
			} else {
				out = append(out, change{Name: name(nw), Action: "keep"})
			}
		}
	}
	for nm := range byName {
		out = append(out, change{Name: nm, Action: "remove"})
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
// identity, in artifacts.SourceIDs' form.
func fileIDs(fsys fs.FS, dir string) (map[string]string, error) {
	ider, ok := fsys.(artifacts.ContentIDFS)
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

func (p *plan) print(w io.Writer) {
	if p.From == p.To {
		fmt.Fprintf(w, "%s is on %s: nothing to do\n", p.Node, shortRev(p.To))
		return
	}
	fmt.Fprintf(w, "%s: %s -> %s", p.Node, shortRev(p.From), shortRev(p.To))
	if p.Commit != "" {
		fmt.Fprintf(w, "  %s", p.Commit)
	}
	fmt.Fprintln(w)
	if p.Halted != "" {
		fmt.Fprintf(w, "HALTED: this revision failed and will not be applied: %s\n", firstLine(p.Halted))
	}
	section := func(title string, cs []change) {
		fmt.Fprintf(w, "\n%s:\n", title)
		for _, c := range cs {
			sign := map[string]string{"add": "+", "remove": "-", "change": "~", "keep": "="}[c.Action]
			fmt.Fprintf(w, "  %s %s", sign, c.Name)
			if len(c.What) > 0 {
				fmt.Fprintf(w, " (%s)", strings.Join(c.What, "; "))
			}
			fmt.Fprintln(w)
		}
	}
	section("sites", p.Sites)
	section("workers", p.Workers)
	if len(p.NginxDiff) == 0 {
		fmt.Fprintf(w, "\nnginx config: unchanged\n")
		return
	}
	fmt.Fprintf(w, "\nnginx config:\n")
	for _, l := range p.NginxDiff {
		fmt.Fprintf(w, "  %s\n", l)
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
