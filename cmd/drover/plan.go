package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"reflect"
	"sort"
	"strings"

	"github.com/drover-dev/drover/artifacts"
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
	n, err := openNode(ctx, *config, io.Discard)
	if err != nil {
		return err
	}
	defer n.Close()
	p, err := n.plan(ctx)
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

func (n *node) plan(ctx context.Context) (*plan, error) {
	rev, err := n.repo.Remote(ctx)
	if err != nil {
		return nil, err
	}
	if err := n.repo.Fetch(ctx, rev); err != nil {
		return nil, err
	}
	cur, err := n.store.Current()
	if err != nil {
		return nil, err
	}
	p := &plan{Node: n.cfg.Name, From: cur, To: rev}
	if c, err := n.repo.Commit(ctx, rev); err == nil {
		p.Commit = fmt.Sprintf("%s (%s, %s)", c.Message, c.Author, c.When.Format("2006-01-02 15:04"))
	}
	if reason, halted, err := n.registry().Halted(ctx, rev); err == nil && halted {
		p.Halted = reason
	}
	newTree, err := n.repo.Tree(ctx, rev, n.cfg.Repo.Dir)
	if err != nil {
		return nil, err
	}
	newSpec, err := readSpec(n.cfg.Repo.Dir, newTree)
	if err != nil {
		return nil, err
	}
	var oldSpec *spec.Spec
	var oldTree fs.FS
	if cur != "" {
		data, err := releaseStore{n.store}.SpecOf(cur)
		if err != nil {
			return nil, err
		}
		if oldSpec, err = spec.Parse("live "+spec.FileName, data); err != nil {
			return nil, err
		}
		if t, err := n.repo.Tree(ctx, cur, n.cfg.Repo.Dir); err == nil {
			oldTree = t
		}
	}
	if oldSpec == nil {
		oldSpec = &spec.Spec{}
	}
	p.Sites = diffNamed(oldSpec.Sites, newSpec.Sites, func(s spec.Site) string { return s.Name },
		func(a, b spec.Site) []string {
			return diffContent(oldTree, newTree, a.Source, b.Source, a.Artifact, b.Artifact, !reflect.DeepEqual(stripSite(a), stripSite(b)))
		})
	p.Workers = diffNamed(oldSpec.Workers, newSpec.Workers, func(w spec.Worker) string { return w.Name },
		func(a, b spec.Worker) []string {
			return diffContent(oldTree, newTree, a.Source, b.Source, a.Artifact, b.Artifact, !reflect.DeepEqual(stripWorker(a), stripWorker(b)))
		})
	newConf, err := n.web.render(newSpec)
	if err != nil {
		return nil, err
	}
	var oldConf []byte
	if cur != "" {
		if oldConf, err = n.web.render(oldSpec); err != nil {
			return nil, err
		}
	}
	p.NginxDiff = lineDiff(string(oldConf), string(newConf))
	return p, nil
}

func readSpec(dir string, fsys fs.FS) (*spec.Spec, error) {
	data, err := fs.ReadFile(fsys, spec.FileName)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", specPath(dir), err)
	}
	sp, err := spec.Parse(specPath(dir), data)
	if err != nil {
		return nil, err
	}
	return sp, spec.CheckTree(specPath(dir), sp, fsys)
}

func specPath(dir string) string {
	if dir == "" {
		return spec.FileName
	}
	return dir + "/" + spec.FileName
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

// diffContent says what changed between two versions of a site or bundle:
// its settings, and its files (compared by git blob id, without reading
// them) or its pinned artifact.
func diffContent(oldTree, newTree fs.FS, oldSrc, newSrc string, oldArt, newArt *spec.Artifact, settings bool) []string {
	var what []string
	if settings {
		what = append(what, "settings")
	}
	switch {
	case newArt != nil || oldArt != nil:
		if oldArt == nil || newArt == nil || oldArt.SHA256 != newArt.SHA256 {
			what = append(what, "artifact")
		}
	case oldTree == nil:
		what = append(what, "files (the live revision is no longer in the local repo to compare)")
	default:
		a, errA := fileIDs(oldTree, oldSrc)
		b, errB := fileIDs(newTree, newSrc)
		if errA != nil || errB != nil {
			what = append(what, "files (could not compare)")
			break
		}
		var added, removed, modified int
		for f, id := range b {
			if oid, ok := a[f]; !ok {
				added++
			} else if oid != id {
				modified++
			}
		}
		for f := range a {
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

// fileIDs maps each file under dir to its content id and mode.
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
		info, err := d.Info()
		if err != nil {
			return err
		}
		id := "link"
		if d.Type().IsRegular() {
			if id, err = ider.ContentID(name); err != nil {
				return err
			}
		} else if d.Type()&fs.ModeSymlink != 0 {
			t, err := fs.ReadLink(fsys, name)
			if err != nil {
				return err
			}
			id = "-> " + t
		}
		ids[strings.TrimPrefix(name, dir+"/")] = fmt.Sprintf("%s %o", id, info.Mode())
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
